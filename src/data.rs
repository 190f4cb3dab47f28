//! Reading a corpus: UTF-8 validation, its vocabulary, the train/validation split and batches.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::seeds::{step_rng, Purpose};

use crate::tokenizer::CharTokenizer;
use crate::{input_error, Error, Result};

/// The contents of a UTF-8 text file; `what` names the file's role in error messages ("corpus").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let mut reader = TextReader::open(path, what)?;
    let mut text = String::new();
    while let Some(piece) = reader.next_piece()? {
        text.push_str(&piece);
    }
    Ok(text)
}

/// Reads a UTF-8 text file in pieces of about 1 MiB, checking the encoding as it goes, so
/// files far larger than memory can be processed.
pub struct TextReader {
    file: fs::File,
    path: PathBuf,
    what: String,
    /// Bytes read but not yet returned: at most an incomplete character at a block's end.
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    offset: u64,
}

impl TextReader {
    const BLOCK: usize = 1 << 20;

    /// Opens `path`; `what` names its role in error messages ("corpus", "text file").
    pub fn open(path: &Path, what: &str) -> Result<Self> {
        if path.is_dir() {
            input_error!(
                "{what} {} is a directory; pass the path of a UTF-8 text file",
                path.display()
            );
        }
        let file = fs::File::open(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Input(format!(
                "{what} {} does not exist; pass the path of a UTF-8 text file",
                path.display()
            )),
            _ => Error::io("read", path, e),
        })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            what: what.to_string(),
            pending: Vec::new(),
            offset: 0,
        })
    }

    /// The next piece of text, or `None` at the end of the file.
    pub fn next_piece(&mut self) -> Result<Option<String>> {
        let kept = self.pending.len();
        self.pending.resize(kept + Self::BLOCK, 0);
        let read = read_full(&mut self.file, &mut self.pending[kept..])
            .map_err(|e| Error::io("read", &self.path, e))?;
        self.pending.truncate(kept + read);
        let at_end = read == 0;
        if self.pending.is_empty() {
            return Ok(None);
        }
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // A character cut by the block boundary: keep its first bytes for the next piece.
            Err(e) if e.error_len().is_none() && !at_end => e.valid_up_to(),
            Err(e) => {
                let offset = self.offset + e.valid_up_to() as u64;
                let byte = self.pending[e.valid_up_to()];
                let problem = match e.error_len() {
                    Some(_) => format!("byte 0x{byte:02X} at byte offset {offset} does not start a valid character"),
                    None => format!("the file ends inside a character that starts at byte offset {offset}"),
                };
                input_error!(
                    "{} {} is not valid UTF-8: {problem}; convert the file to UTF-8 (for example with iconv)",
                    self.what,
                    self.path.display()
                );
            }
        };
        let rest = self.pending.split_off(valid);
        let piece = String::from_utf8(std::mem::replace(&mut self.pending, rest))
            .expect("the prefix was just validated as UTF-8");
        self.offset += valid as u64;
        Ok(Some(piece))
    }
}

/// Fills `buf` as far as the file allows; returns the bytes read (0 only at the end).
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The number of characters of a text of `chars` characters that are for training: the
/// first ⌊0.9·N⌋, as nanoGPT splits tiny shakespeare; the rest is validation.
pub fn train_chars(chars: usize) -> usize {
    chars * 9 / 10
}

/// The validation part of `text`: its last 10% of characters.
pub fn validation_text(text: &str) -> &str {
    let skip = train_chars(text.chars().count());
    let start = text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i);
    &text[start..]
}

/// A tokenized corpus with its train/validation split.
pub struct Corpus {
    /// Where it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Its character vocabulary.
    pub tokenizer: CharTokenizer,
    /// The whole text as token ids.
    pub ids: Vec<u32>,
    /// Index of the first validation character.
    pub split: usize,
}

impl Corpus {
    /// Reads a corpus: a UTF-8 file, or a directory whose files (all of them, in its
    /// subdirectories too, hidden ones aside) are read in sorted path order and concatenated.
    /// Its last 10% of characters (see [`train_chars`]) are the validation split.
    pub fn load(path: &Path) -> Result<Self> {
        let files = if path.is_dir() {
            let files = corpus_files(path)?;
            if files.is_empty() {
                input_error!(
                    "corpus directory {} holds no files; put UTF-8 text files in it or pass a file",
                    path.display()
                );
            }
            files
        } else {
            vec![path.to_path_buf()]
        };
        check_memory(path, &files)?;
        let mut text = String::new();
        for file in &files {
            let piece = read_text(
                file,
                if path.is_dir() {
                    "corpus file"
                } else {
                    "corpus"
                },
            )?;
            if let Some(offset) = piece.find('\0') {
                input_error!(
                    "corpus {} has a NUL byte at byte offset {offset}, so it looks like a binary file; pass text files only",
                    file.display()
                );
            }
            text.push_str(&piece);
        }
        let sha256 = format!("{:x}", Sha256::digest(text.as_bytes()));
        let tokenizer = CharTokenizer::from_text(&text)?;
        match tokenizer.vocab_size() {
            0 => input_error!(
                "corpus {} is empty; pass a text file with at least a few thousand characters",
                path.display()
            ),
            1 => input_error!(
                "corpus {} has only one distinct character, so there is nothing to learn; use a real text",
                path.display()
            ),
            _ => {}
        }
        // Encoding piece by piece keeps the tokenizer's per-token bookkeeping small.
        let mut ids = Vec::with_capacity(text.len());
        let mut rest = text.as_str();
        while !rest.is_empty() {
            let mut cut = rest.len().min(1 << 20);
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            ids.extend(tokenizer.encode(&rest[..cut])?);
            rest = &rest[cut..];
        }
        let split = train_chars(ids.len());
        Ok(Self {
            path: path.to_path_buf(),
            sha256,
            tokenizer,
            ids,
            split,
        })
    }

    /// The file name, as recorded in checkpoints.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The training part: the first 90%.
    pub fn train(&self) -> &[u32] {
        &self.ids[..self.split]
    }

    /// The validation part: the last 10%.
    pub fn val(&self) -> &[u32] {
        &self.ids[self.split..]
    }
}

/// Refuses a corpus whose text and token ids (about 5 bytes per byte of text) would not
/// fit in the memory the system has available, before trying to read it.
fn check_memory(path: &Path, files: &[PathBuf]) -> Result<()> {
    // A file that cannot be examined counts as empty here: reading it reports why.
    let bytes: u64 = files
        .iter()
        .map(|file| fs::metadata(file).map_or(0, |m| m.len()))
        .sum();
    let needed = bytes.saturating_mul(5);
    if let Some(available) = available_memory() {
        if needed > available {
            input_error!(
                "corpus {} has {:.1} GB of text, and training on it needs about {:.1} GB of memory but only {:.1} GB is available; train on a part of it",
                path.display(),
                bytes as f64 / 1e9,
                needed as f64 / 1e9,
                available as f64 / 1e9
            );
        }
    }
    Ok(())
}

/// The memory the system can give this process now, in bytes, where the platform tells.
fn available_memory() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The files of a corpus directory, recursively, hidden names skipped, in sorted path order.
fn corpus_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("list", &dir, e))?.path();
            let hidden = path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A batch of `N` windows: inputs and the targets one character later, each `N·T` ids row-major.
pub struct Batch {
    /// Input ids, `[N, T]` flattened.
    pub inputs: Vec<u32>,
    /// Target ids (each input's next character), `[N, T]` flattened.
    pub targets: Vec<u32>,
}

/// How training windows are cut from the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Batching {
    /// Truncated back-propagation through time over N streams: row i of every batch reads
    /// the next window of the i-th contiguous N-th of the text, and the hidden state is
    /// carried (detached) from one window to the next, as char-rnn and torch-rnn did.
    Stateful,
    /// Windows at independent random offsets, each from the zero state, as nanoGPT does.
    Random,
}

/// The batch of every step, as a pure function of the step, so a resumed run reads exactly
/// what the uninterrupted run would have read.
#[derive(Clone, Debug)]
pub struct Batcher {
    kind: Batching,
    n: usize,
    t: usize,
    seed: u64,
    /// Characters per stream (stateful) or in the whole training text (random).
    stream_len: usize,
}

impl Batcher {
    /// A batcher of `n` windows of `t` characters over `train_len` characters; a text too
    /// short for the settings is an error saying what would fit.
    pub fn new(kind: Batching, train_len: usize, n: usize, t: usize, seed: u64) -> Result<Self> {
        let stream_len = match kind {
            Batching::Stateful => train_len / n,
            Batching::Random => train_len,
        };
        if stream_len < t + 1 {
            let mut fits = Vec::new();
            if kind == Batching::Stateful {
                if stream_len >= 2 {
                    fits.push(format!("--seq-len {} or less", stream_len - 1));
                }
                if train_len / (t + 1) >= 1 {
                    fits.push(format!("--batch {} or less", train_len / (t + 1)));
                }
                if fits.is_empty() && train_len >= 2 {
                    fits.push(format!(
                        "--batch 1 with --seq-len {} or less",
                        train_len - 1
                    ));
                }
                if train_len > t {
                    fits.push("--batching random".to_string());
                }
            } else if train_len >= 2 {
                fits.push(format!("--seq-len {} or less", train_len - 1));
            }
            fits.push("a longer corpus".to_string());
            let rows = match kind {
                Batching::Stateful => format!(" (stateful batching gives each of the --batch {n} rows its own {stream_len}-character stream)"),
                Batching::Random => String::new(),
            };
            input_error!(
                "its training part (the first 90%) has {train_len} characters, too few for windows of --seq-len {t} plus 1{rows}; use {}",
                fits.join(", or ")
            );
        }
        Ok(Self {
            kind,
            n,
            t,
            seed,
            stream_len,
        })
    }

    /// Steps in one pass over the training text.
    pub fn steps_per_epoch(&self) -> usize {
        match self.kind {
            Batching::Stateful => (self.stream_len - 1) / self.t,
            Batching::Random => self.stream_len.div_ceil(self.n * self.t),
        }
    }

    /// Whether step `step` (from 1) starts a pass, so a carried hidden state must restart from zeros.
    pub fn starts_epoch(&self, step: usize) -> bool {
        (step - 1).is_multiple_of(self.steps_per_epoch())
    }

    /// Passes over the training text completed after `step` steps.
    pub fn epochs(&self, step: usize) -> f64 {
        step as f64 / self.steps_per_epoch() as f64
    }

    /// The windows of step `step` (from 1) of `ids`, the training text.
    pub fn batch(&self, ids: &[u32], step: usize) -> Batch {
        let (n, t) = (self.n, self.t);
        let mut starts = Vec::with_capacity(n);
        match self.kind {
            Batching::Stateful => {
                let window = (step - 1) % self.steps_per_epoch();
                starts.extend((0..n).map(|row| row * self.stream_len + window * t));
            }
            Batching::Random => {
                let mut rng = step_rng(self.seed, Purpose::Batch, step);
                starts.extend((0..n).map(|_| rng.random_range(0..=ids.len() - t - 1)));
            }
        }
        let mut inputs = Vec::with_capacity(n * t);
        let mut targets = Vec::with_capacity(n * t);
        for start in starts {
            inputs.extend_from_slice(&ids[start..start + t]);
            targets.extend_from_slice(&ids[start + 1..start + t + 1]);
        }
        Batch { inputs, targets }
    }
}
