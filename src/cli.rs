//! The `chargru` command line: argument parsing and the four commands' output.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::checkpoint::Checkpoint;
use crate::data::read_text;
use crate::device::{select, DeviceChoice};
use crate::eval::sequence_loss;
use crate::sample::{generate, Sampler, SamplingConfig};
use crate::train::{train, Progress, TrainConfig};
use crate::{input_error, Error, Result};

/// The most characters one `generate` may produce.
pub const MAX_GENERATE_LENGTH: usize = 10_000_000;

/// chargru: train a character-level GRU language model on a text and generate text with it.
#[derive(Parser, Debug)]
#[command(name = "chargru", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a corpus and write checkpoints (runs on corpus/tinyshakespeare.txt with no arguments).
    Train(TrainArgs),
    /// Generate text from a checkpoint, streaming it to stdout.
    Generate(GenerateArgs),
    /// The loss of a checkpoint on a text read as one sequence (nats per character).
    Eval(EvalArgs),
    /// Show a checkpoint's configuration, parameters, vocabulary and training record.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// UTF-8 text file to learn from; the last 10% of its characters are held out for validation.
    #[arg(long, default_value = "corpus/tinyshakespeare.txt")]
    corpus: PathBuf,
    /// Directory for best.safetensors (lowest validation loss) and latest.safetensors.
    #[arg(long, default_value = "checkpoints/tinyshakespeare")]
    out: PathBuf,
    /// Replace the checkpoints of an earlier run in --out.
    #[arg(long)]
    overwrite: bool,
    /// Optimizer steps to take.
    #[arg(long, default_value_t = TrainConfig::default().steps)]
    steps: usize,
    /// Stop after this much training time, e.g. 90s, 30m, 1h30m (checkpoints are written).
    #[arg(long, value_parser = parse_duration)]
    time: Option<Duration>,
    /// Units in each GRU layer (H).
    #[arg(long, default_value_t = TrainConfig::default().hidden)]
    hidden: usize,
    /// Stacked GRU layers (L).
    #[arg(long, default_value_t = TrainConfig::default().layers)]
    layers: usize,
    /// Size of a character's embedding vector (E).
    #[arg(long, default_value_t = TrainConfig::default().embed)]
    embed: usize,
    /// Characters per training window (T), the span gradients flow back through.
    #[arg(long, default_value_t = TrainConfig::default().seq_len)]
    seq_len: usize,
    /// Windows per step (N).
    #[arg(long, default_value_t = TrainConfig::default().batch)]
    batch: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr, value_parser = positive, allow_negative_numbers = true)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = TrainConfig::default().weight_decay, value_parser = non_negative, allow_negative_numbers = true)]
    weight_decay: f64,
    /// Dropout probability between layers and before the head, in [0, 1).
    #[arg(long, default_value_t = TrainConfig::default().dropout, value_parser = probability, allow_negative_numbers = true)]
    dropout: f64,
    /// Scale gradients down to this global L2 norm when they exceed it.
    #[arg(long, default_value_t = TrainConfig::default().grad_clip, value_parser = positive, allow_negative_numbers = true)]
    grad_clip: f64,
    /// Measure the validation loss and write checkpoints every N steps.
    #[arg(long, default_value_t = TrainConfig::default().eval_every)]
    eval_every: usize,
    /// Print the training loss every N steps.
    #[arg(long, default_value_t = TrainConfig::default().log_every)]
    log_every: usize,
    /// Seed for the initial weights, the batches and dropout: equal seeds give equal runs.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Checkpoint written by `chargru train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to start from; it is echoed, then continued. Empty: sample from the zero state.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Characters to generate after the prompt.
    #[arg(long, default_value_t = 500, value_parser = generate_length)]
    length: usize,
    /// Softmax temperature: lower is safer, higher is wilder; 0 always picks the likeliest character.
    #[arg(long, default_value_t = 0.8, value_parser = non_negative, allow_negative_numbers = true)]
    temperature: f64,
    /// Sample only among the K likeliest characters.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    top_k: Option<u32>,
    /// Sample only among the likeliest characters whose probabilities add up to P, in (0, 1].
    #[arg(long, value_parser = top_p, allow_negative_numbers = true)]
    top_p: Option<f64>,
    /// Seed of the sampler: equal seeds and arguments give equal text (random when absent).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Checkpoint written by `chargru train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// UTF-8 text file, read as one sequence from the zero state.
    #[arg(long)]
    text: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct InfoArgs {
    /// Checkpoint written by `chargru train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses the process arguments, runs the command and reports any error as one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help and --version
        Err(e) => {
            eprintln!("{}", one_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// clap's message without its usage block: the error line and any tip, joined.
fn one_line(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("error:") || line.starts_with("tip:"))
        .collect();
    format!("{}; see --help", kept.join("; "))
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Train(args) => run_train(args),
        Command::Generate(args) => run_generate(args),
        Command::Eval(args) => run_eval(args),
        Command::Info(args) => run_info(args),
    }
}

fn run_train(args: TrainArgs) -> Result<()> {
    let config = TrainConfig {
        corpus: args.corpus,
        out: args.out,
        overwrite: args.overwrite,
        steps: args.steps,
        time: args.time,
        embed: args.embed,
        hidden: args.hidden,
        layers: args.layers,
        seq_len: args.seq_len,
        batch: args.batch,
        lr: args.lr,
        weight_decay: args.weight_decay,
        dropout: args.dropout,
        grad_clip: args.grad_clip,
        eval_every: args.eval_every,
        log_every: args.log_every,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let device = select(args.device)?;
    let summary = train(&config, &device, |progress| {
        print_progress(&config, progress)
    })?;
    println!(
        "done: best validation loss {:.4} in {}; latest in {}",
        summary.best_val_loss,
        summary.best_path.display(),
        summary.latest_path.display()
    );
    println!(
        "try: cargo run --release -- generate --checkpoint {} --prompt \"ROMEO:\"",
        summary.best_path.display()
    );
    Ok(())
}

fn print_progress(config: &TrainConfig, progress: &Progress) {
    match *progress {
        Progress::Started {
            chars,
            vocab_size,
            train_chars,
            val_chars,
            parameters,
        } => println!(
            "corpus {}: {chars} characters, {vocab_size} distinct; {train_chars} for training, {val_chars} for validation\nmodel: embedding {}, {} GRU layer(s) of {}, {parameters} parameters; {} steps of {}×{} characters",
            config.corpus.display(),
            config.embed,
            config.layers,
            config.hidden,
            config.steps,
            config.batch,
            config.seq_len
        ),
        Progress::Step {
            step,
            steps,
            train_loss,
            grad_norm,
            tokens_per_second,
        } => println!(
            "step {step:>6}/{steps} | train loss {train_loss:.4} | grad norm {grad_norm:6.3} | {tokens_per_second:>7.0} chars/s"
        ),
        Progress::Eval {
            step,
            val_loss,
            best,
            seconds,
        } => println!(
            "step {step:>6}/{} | val loss {val_loss:.4}{} | measured in {seconds:.1}s",
            config.steps,
            if best { " (best so far, saved)" } else { "" }
        ),
    }
}

fn run_generate(args: GenerateArgs) -> Result<()> {
    let device = select(args.device)?;
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let prompt = checkpoint
        .tokenizer
        .encode(&args.prompt)
        .map_err(|e| Error::Input(format!("--prompt: {e}")))?;
    let model = checkpoint.model(&device)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut sampler = Sampler::new(
        SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k.map(|k| k as usize),
            top_p: args.top_p,
        },
        seed,
    );
    let mut out = io::stdout().lock();
    let mut write = |text: &str| -> io::Result<()> {
        out.write_all(text.as_bytes())?;
        out.flush()
    };
    if let Err(e) = write(&args.prompt) {
        return stdout_closed(e);
    }
    let started = Instant::now();
    let mut write_error = None;
    let produced = generate(&model, &prompt, args.length, &mut sampler, |id| {
        let c = checkpoint
            .tokenizer
            .char(id)
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        match write(c.encode_utf8(&mut [0; 4])) {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = write_error.or_else(|| write("\n").err()) {
        return stdout_closed(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[{produced} characters in {seconds:.2}s, {:.0} chars/s, seed {seed}]",
        produced as f64 / seconds
    );
    Ok(())
}

/// A reader that stopped reading (`chargru generate | head`) is a normal end; other write errors are not.
fn stdout_closed(e: io::Error) -> Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Error::io("write to", Path::new("standard output"), e))
    }
}

fn run_eval(args: EvalArgs) -> Result<()> {
    let device = select(args.device)?;
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let text = read_text(&args.text, "text file")?;
    let ids = checkpoint
        .tokenizer
        .encode(&text)
        .map_err(|e| Error::Input(format!("{}: {e}", args.text.display())))?;
    if ids.len() < 2 {
        input_error!(
            "{} has {} character(s); eval needs at least 2 (one to read, one to predict)",
            args.text.display(),
            ids.len()
        );
    }
    let model = checkpoint.model(&device)?;
    let loss = sequence_loss(&model, &ids)?.mean();
    let bpc = loss / std::f64::consts::LN_2;
    let perplexity = loss.exp();
    if args.json {
        println!(
            "{}",
            json!({"chars": ids.len(), "loss": loss, "bpc": bpc, "perplexity": perplexity})
        );
    } else {
        println!("chars:      {}", ids.len());
        println!("loss:       {loss:.4} nats/char");
        println!("bpc:        {bpc:.4} bits/char");
        println!("perplexity: {perplexity:.4}");
    }
    Ok(())
}

fn run_info(args: InfoArgs) -> Result<()> {
    let checkpoint = Checkpoint::load(&args.checkpoint)?;
    let config = &checkpoint.config;
    let tensors: Vec<(String, Vec<usize>, usize)> = config
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let count = shape.iter().product();
            (name, shape, count)
        })
        .collect();
    let vocabulary: String = checkpoint.tokenizer.chars().iter().collect();
    if args.json {
        let tensor_json: Vec<_> = tensors
            .iter()
            .map(|(name, shape, count)| json!({"name": name, "shape": shape, "parameters": count}))
            .collect();
        println!(
            "{}",
            json!({
                "config": config,
                "parameters": config.parameter_count(),
                "tensors": tensor_json,
                "vocab_size": config.vocab_size,
                "vocabulary": vocabulary,
                "training": checkpoint.training,
            })
        );
        return Ok(());
    }
    println!("checkpoint: {}", args.checkpoint.display());
    println!(
        "model:      embedding {}, {} GRU layer(s) of {} units, vocabulary {}, dropout {}",
        config.embed_dim, config.num_layers, config.hidden_size, config.vocab_size, config.dropout
    );
    println!("parameters: {}", config.parameter_count());
    for (name, shape, count) in &tensors {
        println!("  {name:<20} {:<14} {count:>10}", format!("{shape:?}"));
    }
    println!("vocabulary: {vocabulary:?}");
    let t = &checkpoint.training;
    let loss = |l: Option<f64>| l.map_or_else(|| "not measured".to_string(), |l| format!("{l:.4}"));
    println!(
        "training:   step {}, {} characters seen, train loss {}, validation loss {}",
        t.step,
        t.tokens_seen,
        loss(t.train_loss),
        loss(t.val_loss)
    );
    println!("corpus:     {} (sha256 {})", t.corpus, t.corpus_sha256);
    Ok(())
}

/// A duration such as `90s`, `30m`, `1h30m` or `2h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; write it like 90s, 30m, 1h30m or 2h");
    let mut seconds = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        seconds = value
            .checked_mul(unit)
            .and_then(|s| seconds.checked_add(s))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        seconds = seconds
            .checked_add(number.parse::<u64>().map_err(|_| bad())?)
            .ok_or_else(bad)?;
    }
    if seconds == 0 {
        return Err(format!(
            "{text:?} is no time at all; give a positive duration such as 30m"
        ));
    }
    Ok(Duration::from_secs(seconds))
}

fn number(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(format!("{text:?} is not a finite number")),
    }
}

fn positive(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be greater than 0"))
    }
}

fn non_negative(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be 0 or more"))
    }
}

fn probability(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if (0.0..1.0).contains(&x) {
        Ok(x)
    } else {
        Err(format!("{x} must be at least 0 and below 1"))
    }
}

fn top_p(text: &str) -> std::result::Result<f64, String> {
    let x = number(text)?;
    if x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(format!("{x} must be above 0 and at most 1"))
    }
}

fn generate_length(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_GENERATE_LENGTH => Ok(n),
        Ok(n) => Err(format!(
            "{n} is more than the limit of {MAX_GENERATE_LENGTH} characters"
        )),
        Err(_) => Err(format!("{text:?} is not a whole number of characters")),
    }
}
