//! Reading a corpus: UTF-8 validation, its vocabulary, the train/validation split and batches.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::tokenizer::CharTokenizer;
use crate::{input_error, Error, Result};

/// The contents of a UTF-8 text file; `what` names the file's role in error messages ("corpus").
pub fn read_text(path: &Path, what: &str) -> Result<String> {
    let bytes = read_bytes(path, what)?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[offset];
        Error::Input(format!(
            "{what} {} is not valid UTF-8: byte 0x{byte:02X} at byte offset {offset} does not start a valid character; convert the file to UTF-8 (for example with iconv)",
            path.display()
        ))
    })
}

fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>> {
    if path.is_dir() {
        input_error!(
            "{what} {} is a directory; pass the path of a UTF-8 text file",
            path.display()
        );
    }
    fs::read(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Error::Input(format!(
            "{what} {} does not exist; pass the path of a UTF-8 text file",
            path.display()
        )),
        _ => Error::io("read", path, e),
    })
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
    /// Reads a corpus file; the last 10% of its characters (as nanoGPT splits tiny
    /// shakespeare: the first ⌊0.9·N⌋ train) become the validation split.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_text(path, "corpus")?;
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
        let ids = tokenizer.encode(&text)?;
        let split = ids.len() * 9 / 10;
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

/// A batch of `N` windows: inputs and the targets one character later, each `N·T` ids row-major.
pub struct Batch {
    /// Input ids, `[N, T]` flattened.
    pub inputs: Vec<u32>,
    /// Target ids (each input's next character), `[N, T]` flattened.
    pub targets: Vec<u32>,
}

/// `n` windows of `t + 1` characters at uniformly random offsets of `ids` (nanoGPT's sampling).
pub fn random_batch(ids: &[u32], n: usize, t: usize, rng: &mut StdRng) -> Batch {
    let mut inputs = Vec::with_capacity(n * t);
    let mut targets = Vec::with_capacity(n * t);
    for _ in 0..n {
        let start = rng.random_range(0..=ids.len() - t - 1);
        inputs.extend_from_slice(&ids[start..start + t]);
        targets.extend_from_slice(&ids[start + 1..start + t + 1]);
    }
    Batch { inputs, targets }
}
