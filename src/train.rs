//! The training loop: random windows of the corpus, AdamW, gradient clipping, periodic
//! validation, and checkpoints (the best by validation loss and the latest).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::checkpoint::{Checkpoint, TrainingRecord};
use crate::data::{random_batch, Corpus};
use crate::eval::streams_loss;
use crate::model::{cross_entropy, CharGru, Dropout, ModelConfig, DTYPE};
use crate::optim::{clip_scale, grad_norm, AdamW, AdamWConfig};
use crate::params::ParamStore;
use crate::{input_error, Error, Result};

/// Everything a training run needs to know, in one plain struct.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The UTF-8 text to learn.
    pub corpus: PathBuf,
    /// Directory for `best.safetensors` and `latest.safetensors`.
    pub out: PathBuf,
    /// Replace checkpoints already in `out` instead of refusing to start.
    pub overwrite: bool,
    /// Optimizer steps to take.
    pub steps: usize,
    /// Stop at the first step boundary after this much training time.
    pub time: Option<Duration>,
    /// E: embedding size.
    pub embed: usize,
    /// H: GRU units per layer.
    pub hidden: usize,
    /// L: GRU layers.
    pub layers: usize,
    /// T: characters per training window.
    pub seq_len: usize,
    /// N: windows per step.
    pub batch: usize,
    /// AdamW's learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Dropout between layers and before the head.
    pub dropout: f64,
    /// Gradients whose global norm exceeds this are scaled down to it.
    pub grad_clip: f64,
    /// Measure the validation loss (and write checkpoints) every this many steps.
    pub eval_every: usize,
    /// Report the training loss every this many steps.
    pub log_every: usize,
    /// Streams the validation text is cut into and read side by side.
    pub val_streams: usize,
    /// Fixes the initial weights, the batches and the dropout masks.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            corpus: PathBuf::from("corpus/tinyshakespeare.txt"),
            out: PathBuf::from("checkpoints/tinyshakespeare"),
            overwrite: false,
            steps: 3000,
            time: None,
            embed: 64,
            hidden: 256,
            layers: 2,
            seq_len: 64,
            batch: 32,
            lr: 2e-3,
            weight_decay: 0.01,
            dropout: 0.1,
            grad_clip: 1.0,
            eval_every: 250,
            log_every: 25,
            val_streams: 64,
            seed: 1337,
        }
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Progress {
    /// The corpus is read and the model built; training starts.
    Started {
        /// Characters in the corpus.
        chars: usize,
        /// Distinct characters, V.
        vocab_size: usize,
        /// Characters in the training part.
        train_chars: usize,
        /// Characters in the validation part.
        val_chars: usize,
        /// Trainable numbers in the model.
        parameters: usize,
    },
    /// Training loss since the previous report.
    Step {
        /// Steps done.
        step: usize,
        /// Steps planned.
        steps: usize,
        /// Mean training loss over the steps since the last report, nats per character.
        train_loss: f64,
        /// Global gradient norm of the last step, before clipping.
        grad_norm: f64,
        /// Training characters per second since the last report.
        tokens_per_second: f64,
    },
    /// A validation measurement, after which checkpoints were written.
    Eval {
        /// Steps done.
        step: usize,
        /// Validation loss, nats per character.
        val_loss: f64,
        /// Whether it is the best so far (and so was saved as `best.safetensors`).
        best: bool,
        /// Seconds spent measuring it.
        seconds: f64,
    },
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The record stored with the latest checkpoint.
    pub latest: TrainingRecord,
    /// The lowest validation loss measured.
    pub best_val_loss: f64,
    /// Where the best checkpoint is.
    pub best_path: PathBuf,
    /// Where the latest checkpoint is.
    pub latest_path: PathBuf,
}

/// Trains a model as `config` says on `device`, reporting through `report`.
pub fn train(
    config: &TrainConfig,
    device: &Device,
    mut report: impl FnMut(&Progress),
) -> Result<TrainSummary> {
    check_config(config)?;
    let corpus = Corpus::load(&config.corpus)?;
    check_corpus_fits(config, &corpus)?;
    let best_path = config.out.join("best.safetensors");
    let latest_path = config.out.join("latest.safetensors");
    prepare_out_dir(config, &[&best_path, &latest_path])?;

    let model_config = ModelConfig {
        vocab_size: corpus.tokenizer.vocab_size(),
        embed_dim: config.embed,
        hidden_size: config.hidden,
        num_layers: config.layers,
        dropout: config.dropout,
    };
    report(&Progress::Started {
        chars: corpus.ids.len(),
        vocab_size: model_config.vocab_size,
        train_chars: corpus.train().len(),
        val_chars: corpus.val().len(),
        parameters: model_config.parameter_count(),
    });
    let params = ParamStore::new(config.seed);
    let model = CharGru::new(&model_config, params.var_builder(DTYPE, device))?;
    let optimizer_config = AdamWConfig {
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    };
    let mut optimizer = AdamW::new(params.vars(), optimizer_config)?;
    // Independent streams for batches and dropout, both fixed by the one seed.
    let mut batch_rng = StdRng::seed_from_u64(config.seed.wrapping_add(1));
    let mut dropout = Dropout::new(config.dropout, config.seed.wrapping_add(2));

    let (n, t) = (config.batch, config.seq_len);
    let started = Instant::now();
    let mut window = LossWindow::default();
    let mut since_eval = LossWindow::default();
    let mut best_val_loss = f64::INFINITY;
    let mut latest = TrainingRecord::default();
    for step in 1..=config.steps {
        let batch = random_batch(corpus.train(), n, t, &mut batch_rng);
        let inputs = Tensor::from_vec(batch.inputs, (n, t), device)?; // [N, T]
        let targets = Tensor::from_vec(batch.targets, (n, t), device)?; // [N, T]
        let (logits, _) = model.forward(&inputs, None, Some(&mut dropout))?; // [N, T, V]
        let loss = cross_entropy(&logits, &targets)?;
        let grads = loss.backward()?;
        let norm = grad_norm(&grads, optimizer.params())?;
        let loss = loss.to_scalar::<f32>()? as f64;
        if !loss.is_finite() || !norm.is_finite() {
            input_error!(
                "training diverged at step {step}: the loss or gradient norm became {}; the last checkpoint in {} is intact, restart with a lower --lr (now {})",
                if loss.is_finite() { norm } else { loss },
                config.out.display(),
                config.lr
            );
        }
        optimizer.step(&grads, config.lr, clip_scale(norm, config.grad_clip))?;
        window.add(loss);
        since_eval.add(loss);

        let out_of_time = config
            .time
            .is_some_and(|budget| started.elapsed() >= budget);
        let last = step == config.steps || out_of_time;
        if step % config.log_every == 0 || last {
            report(&Progress::Step {
                step,
                steps: config.steps,
                train_loss: window.mean(),
                grad_norm: norm,
                tokens_per_second: (window.count * n * t) as f64
                    / window.started.elapsed().as_secs_f64(),
            });
            window = LossWindow::default();
        }
        if step % config.eval_every == 0 || last {
            let eval_started = Instant::now();
            let val_loss = streams_loss(&model, corpus.val(), config.val_streams)?.mean();
            latest = TrainingRecord {
                step: step as u64,
                tokens_seen: (step * n * t) as u64,
                train_loss: Some(since_eval.mean()),
                val_loss: Some(val_loss),
                corpus: corpus.name(),
                corpus_sha256: corpus.sha256.clone(),
                seed: Some(config.seed),
                elapsed_seconds: Some(started.elapsed().as_secs_f64()),
            };
            let checkpoint = Checkpoint {
                config: model_config.clone(),
                tokenizer: corpus.tokenizer.clone(),
                training: latest.clone(),
                tensors: params
                    .vars()
                    .into_iter()
                    .map(|(name, var)| (name, var.as_tensor().clone()))
                    .collect(),
            };
            checkpoint.save(&latest_path)?;
            let best = val_loss < best_val_loss;
            if best {
                best_val_loss = val_loss;
                checkpoint.save(&best_path)?;
            }
            report(&Progress::Eval {
                step,
                val_loss,
                best,
                seconds: eval_started.elapsed().as_secs_f64(),
            });
            since_eval = LossWindow::default();
            // Keep validation time out of the next chars/s report.
            window.started += eval_started.elapsed();
        }
        if last {
            break;
        }
    }
    Ok(TrainSummary {
        latest,
        best_val_loss,
        best_path,
        latest_path,
    })
}

/// A running mean of training losses, with the time it started.
struct LossWindow {
    sum: f64,
    count: usize,
    started: Instant,
}

impl Default for LossWindow {
    fn default() -> Self {
        Self {
            sum: 0.0,
            count: 0,
            started: Instant::now(),
        }
    }
}

impl LossWindow {
    fn add(&mut self, loss: f64) {
        self.sum += loss;
        self.count += 1;
    }

    fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

fn check_config(config: &TrainConfig) -> Result<()> {
    let sizes = [
        ("--steps", config.steps),
        ("--embed", config.embed),
        ("--hidden", config.hidden),
        ("--layers", config.layers),
        ("--seq-len", config.seq_len),
        ("--batch", config.batch),
        ("--eval-every", config.eval_every),
        ("--log-every", config.log_every),
        ("--val-streams", config.val_streams),
    ];
    for (flag, value) in sizes {
        if value == 0 {
            input_error!("{flag} must be at least 1");
        }
    }
    if !(config.lr.is_finite() && config.lr > 0.0) {
        input_error!("--lr must be a positive number, got {}", config.lr);
    }
    if !(0.0..1.0).contains(&config.dropout) {
        input_error!("--dropout must be in [0, 1), got {}", config.dropout);
    }
    if !(config.weight_decay.is_finite() && config.weight_decay >= 0.0) {
        input_error!(
            "--weight-decay must be 0 or more, got {}",
            config.weight_decay
        );
    }
    if !(config.grad_clip.is_finite() && config.grad_clip > 0.0) {
        input_error!(
            "--grad-clip must be a positive number, got {}",
            config.grad_clip
        );
    }
    Ok(())
}

fn check_corpus_fits(config: &TrainConfig, corpus: &Corpus) -> Result<()> {
    let train = corpus.train().len();
    if train < config.seq_len + 1 {
        input_error!(
            "corpus {} has {} characters, so its training part (the first 90%) has {train}, fewer than one window of --seq-len {} plus 1; use --seq-len {} or less, or a longer corpus",
            corpus.path.display(),
            corpus.ids.len(),
            config.seq_len,
            train.saturating_sub(1).max(1)
        );
    }
    if corpus.val().len() < 2 {
        input_error!(
            "corpus {} is too short to hold out a validation part (the last 10% must be at least 2 characters); use a longer corpus",
            corpus.path.display()
        );
    }
    Ok(())
}

/// Creates `out` if needed; refuses to replace checkpoints of an earlier run unless asked to.
fn prepare_out_dir(config: &TrainConfig, checkpoints: &[&Path]) -> Result<()> {
    let out = &config.out;
    if out.exists() && !out.is_dir() {
        input_error!("--out {} is a file; pass a directory", out.display());
    }
    if !config.overwrite {
        if let Some(existing) = checkpoints.iter().find(|p| p.exists()) {
            input_error!(
                "{} already holds a checkpoint ({}); choose another --out, or pass --overwrite to replace it",
                out.display(),
                existing.display()
            );
        }
    }
    fs::create_dir_all(out).map_err(|e| Error::io("create directory", out, e))?;
    let probe = out.join(format!(".write-test.{}", std::process::id()));
    fs::write(&probe, b"").map_err(|e| Error::io("write in", out, e))?;
    let _ = fs::remove_file(&probe);
    Ok(())
}
