//! `chargru train`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{non_negative, parse_duration, positive, probability};
use crate::device::{select, DeviceChoice};
use crate::train::{train, Progress, TrainConfig};
use crate::Result;

#[derive(Args, Debug)]
pub(super) struct TrainArgs {
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

pub(super) fn run(args: TrainArgs) -> Result<()> {
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
