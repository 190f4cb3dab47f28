//! `chargru generate`: one prompt, several samples, or an interactive session.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};

use super::{checkpoint_path, non_negative, top_p};
use crate::checkpoint::Checkpoint;
use crate::device::{select, DeviceChoice};
use crate::model::CharGru;
use crate::sample::{generate_from, prime, Sampler, SamplingConfig};
use crate::tokenizer::{CharTokenizer, TextPosition};
use crate::{input_error, Error, Result};

/// The most characters one `generate` may produce per sample.
pub const MAX_LENGTH: usize = 10_000_000;
/// The most samples one `generate` may draw side by side.
pub const MAX_SAMPLES: usize = 1024;

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub(super) struct GenerateArgs {
    /// Checkpoint written by `chargru train` [default: the shipped checkpoints/shakespeare/best.safetensors].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Text to start from; it is echoed, then continued. Empty: sample from the zero state.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Characters to generate after the prompt (at most 10,000,000).
    #[arg(long, default_value_t = 500, value_parser = length)]
    length: usize,
    /// Softmax temperature: lower is safer, higher is wilder; 0 always picks the likeliest character.
    #[arg(long, default_value_t = 0.8, value_parser = non_negative)]
    temperature: f64,
    /// Sample only among the K likeliest characters.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    top_k: Option<u32>,
    /// Sample only among the likeliest characters whose probabilities add up to P, in (0, 1].
    #[arg(long, value_parser = top_p)]
    top_p: Option<f64>,
    /// Seed of the sampler: equal seeds and arguments give equal text (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Independent continuations of the prompt, computed together as one batch (at most 1024).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_SAMPLES as i64))]
    num_samples: u32,
    /// Stop a sample right after this text appears in what it generated (may be repeated).
    #[arg(long)]
    stop: Vec<String>,
    /// What to do with prompt characters the model has never seen.
    #[arg(long, value_enum, default_value_t = Unknown::Error)]
    unknown: Unknown,
    /// Print only the generated text: no prompt echo, no statistics.
    #[arg(long)]
    quiet: bool,
    /// Read prompts from stdin, one per line, and continue each; an empty line or end of input stops.
    #[arg(long)]
    interactive: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

/// Prompt characters outside the vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Unknown {
    /// Refuse the prompt, naming the character and its position.
    Error,
    /// Drop them, with a warning on stderr.
    Skip,
}

fn length(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_LENGTH => Ok(n),
        Ok(n) => Err(format!(
            "{n} is more than the limit of {MAX_LENGTH} characters"
        )),
        Err(_) => Err(format!("{text:?} is not a whole number of characters")),
    }
}

pub(super) fn run(args: GenerateArgs) -> Result<()> {
    let device = select(args.device)?;
    let checkpoint = Checkpoint::load(&checkpoint_path(&args.checkpoint)?)?;
    let model = checkpoint.model(&device)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k.map(|k| k as usize),
        top_p: args.top_p,
    };
    let mut generator = Generator {
        model: &model,
        tokenizer: &checkpoint.tokenizer,
        sampler: Sampler::new(sampling, seed),
        args: &args,
        out: io::stdout().lock(),
    };
    let outcome = if args.interactive {
        generator.interactive()
    } else {
        generator.continue_prompt(&args.prompt, !args.quiet)
    };
    match outcome {
        Ok(stats) if !args.quiet && !args.interactive => {
            eprintln!("[{stats}, seed {seed}]");
            Ok(())
        }
        Ok(_) => Ok(()),
        // A reader that stopped reading (`chargru generate | head`) is a normal end.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e),
    }
}

struct Generator<'a> {
    model: &'a CharGru,
    tokenizer: &'a CharTokenizer,
    sampler: Sampler,
    args: &'a GenerateArgs,
    out: io::StdoutLock<'static>,
}

/// Timings of one prompt's continuation.
struct Stats {
    prompt_chars: usize,
    prime_seconds: f64,
    generated: usize,
    seconds: f64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "prompt of {} characters read in {:.3}s; {} characters generated in {:.2}s, {:.0} chars/s",
            self.prompt_chars,
            self.prime_seconds,
            self.generated,
            self.seconds,
            self.generated as f64 / self.seconds
        )
    }
}

impl Generator<'_> {
    /// Continues `prompt`, echoing it first when `echo`; one sample streams as it is drawn.
    fn continue_prompt(&mut self, prompt: &str, echo: bool) -> Result<Stats> {
        let ids = self.prompt_ids(prompt)?;
        let started = Instant::now();
        let (logits, state) = prime(self.model, &ids)?;
        let prime_seconds = started.elapsed().as_secs_f64();
        let samples = self.args.num_samples as usize;
        let mut texts = vec![String::new(); samples];
        let mut write_error = None;
        // Echo what the model reads, which differs from `prompt` when `--unknown skip` dropped characters.
        let prompt = self.tokenizer.decode(&ids)?;
        if samples == 1 && echo {
            self.write(&prompt)?;
        }
        let started = Instant::now();
        let produced = generate_from(
            self.model,
            &logits,
            &state,
            self.args.length,
            samples,
            &mut self.sampler,
            |s, id| {
                let c = self
                    .tokenizer
                    .char(id)
                    .unwrap_or(char::REPLACEMENT_CHARACTER);
                texts[s].push(c);
                if samples == 1 {
                    if let Err(e) = write_flushed(&mut self.out, c.encode_utf8(&mut [0; 4])) {
                        write_error = Some(e);
                        return false;
                    }
                }
                !self
                    .args
                    .stop
                    .iter()
                    .any(|stop| texts[s].ends_with(stop.as_str()))
            },
        )?;
        let seconds = started.elapsed().as_secs_f64();
        if let Some(e) = write_error {
            return Err(stdout_error(e));
        }
        if samples == 1 {
            self.write("\n")?;
        } else {
            for (s, text) in texts.iter().enumerate() {
                let shown_prompt = if echo { prompt.as_str() } else { "" };
                self.write(&format!(
                    "──── sample {} of {samples} ────\n{shown_prompt}{text}\n",
                    s + 1
                ))?;
            }
        }
        Ok(Stats {
            prompt_chars: ids.len(),
            prime_seconds,
            generated: produced.iter().sum(),
            seconds,
        })
    }

    /// Prompts from stdin, one per line, until an empty line or the end of input.
    fn interactive(&mut self) -> Result<Stats> {
        let stdin = io::stdin();
        let show_marker = stdin.is_terminal();
        let mut total = Stats {
            prompt_chars: 0,
            prime_seconds: 0.0,
            generated: 0,
            seconds: 0.0,
        };
        if show_marker {
            eprintln!("Type a prompt and press Enter; an empty line or Ctrl-D ends.");
        }
        let mut line = String::new();
        loop {
            if show_marker {
                eprint!("> ");
            }
            line.clear();
            let read = stdin
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::io("read from", std::path::Path::new("standard input"), e))?;
            let prompt = line.trim_end_matches(['\n', '\r']);
            if read == 0 || prompt.is_empty() {
                return Ok(total);
            }
            let stats = self.continue_prompt(prompt, false)?;
            if !self.args.quiet {
                eprintln!("[{stats}]");
            }
            total.generated += stats.generated;
        }
    }

    /// The prompt's ids, unknown characters refused or skipped as `--unknown` says.
    fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        if self.args.unknown == Unknown::Error {
            if let Err(unknown) = self.tokenizer.scan(prompt, TextPosition::default()) {
                input_error!(
                    "the prompt's {unknown} is not in the model's vocabulary; remove it, or pass --unknown skip to drop such characters"
                );
            }
            return self.tokenizer.encode(prompt);
        }
        let mut kept = String::with_capacity(prompt.len());
        let mut skipped = Vec::new();
        let mut position = TextPosition::default();
        for c in prompt.chars() {
            if self.tokenizer.id(c).is_some() {
                kept.push(c);
            } else {
                skipped.push(format!(
                    "{c:?} (line {}, column {})",
                    position.line, position.column
                ));
            }
            position.advance(c);
        }
        if !skipped.is_empty() {
            eprintln!(
                "warning: skipped {} prompt character(s) not in the model's vocabulary: {}",
                skipped.len(),
                skipped.join(", ")
            );
        }
        self.tokenizer.encode(&kept)
    }

    fn write(&mut self, text: &str) -> Result<()> {
        write_flushed(&mut self.out, text).map_err(stdout_error)
    }
}

fn write_flushed(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn stdout_error(e: io::Error) -> Error {
    Error::io("write to", std::path::Path::new("standard output"), e)
}
