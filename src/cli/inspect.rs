//! `chargru eval` and `chargru info`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;

use super::checkpoint_path;
use crate::checkpoint::Checkpoint;
use crate::data::{read_text, validation_text, TextReader};
use crate::device::{select, DeviceChoice};
use crate::eval::SequenceScorer;
use crate::tokenizer::TextPosition;
use crate::{input_error, Error, Result};

#[derive(Args, Debug)]
pub(super) struct EvalArgs {
    /// Checkpoint written by `chargru train` [default: the shipped checkpoints/shakespeare/best.safetensors].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// UTF-8 text file, read as one sequence from the zero state (any size: it is streamed).
    #[arg(long, required_unless_present = "split", conflicts_with = "split")]
    text: Option<PathBuf>,
    /// Evaluate on a part of --corpus split as `train` splits it: `val` is its last 10%.
    #[arg(long, value_enum)]
    split: Option<Split>,
    /// The corpus whose --split to evaluate on.
    #[arg(long, default_value = "corpus/tinyshakespeare.txt", requires = "split")]
    corpus: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

/// A part of a corpus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Split {
    /// The last 10% of its characters, which `train` holds out.
    Val,
}

pub(super) fn run_eval(args: EvalArgs) -> Result<()> {
    let device = select(args.device)?;
    let checkpoint = Checkpoint::load(&checkpoint_path(&args.checkpoint)?)?;
    let model = checkpoint.model(&device)?;
    let tokenizer = &checkpoint.tokenizer;
    let mut scorer = SequenceScorer::new(&model)?;
    let mut chars = 0;
    let source = match &args.text {
        Some(path) => {
            let mut reader = TextReader::open(path, "text file")?;
            let mut position = TextPosition::default();
            while let Some(piece) = reader.next_piece()? {
                let (ids, end) = tokenizer
                    .encode_from(&piece, position)
                    .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
                scorer.feed(&ids)?;
                chars += ids.len();
                position = end;
            }
            path.display().to_string()
        }
        None => {
            let text = read_text(&args.corpus, "corpus")?;
            let ids = tokenizer.encode(validation_text(&text)).map_err(|e| {
                Error::Input(format!(
                    "the validation part of {}: {e}",
                    args.corpus.display()
                ))
            })?;
            scorer.feed(&ids)?;
            chars = ids.len();
            format!("the validation part of {}", args.corpus.display())
        }
    };
    if chars < 2 {
        input_error!("{source} has {chars} character(s); eval needs at least 2 (one to read, one to predict)");
    }
    let loss = scorer.total().mean();
    let bpc = loss / std::f64::consts::LN_2;
    let perplexity = loss.exp();
    if args.json {
        println!(
            "{}",
            json!({"chars": chars, "loss": loss, "bpc": bpc, "perplexity": perplexity})
        );
    } else {
        println!("text:       {source}");
        println!("chars:      {chars}");
        println!("loss:       {loss:.4} nats/char");
        println!("bpc:        {bpc:.4} bits/char");
        println!("perplexity: {perplexity:.4}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub(super) struct InfoArgs {
    /// Checkpoint written by `chargru train` [default: the shipped checkpoints/shakespeare/best.safetensors].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn run_info(args: InfoArgs) -> Result<()> {
    let path = checkpoint_path(&args.checkpoint)?;
    let checkpoint = Checkpoint::load(&path)?;
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
    println!("checkpoint: {}", path.display());
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
