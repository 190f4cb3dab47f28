//! The training loop: batches (stateful streams or random windows), AdamW with a
//! warm-up + cosine schedule, gradient clipping, periodic validation, checkpoints, and
//! everything an exact resume needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, StorageDtype, TrainingRecord};
use crate::data::{Batcher, Batching, Corpus};
use crate::eval::streams_loss;
use crate::model::{cross_entropy, CharGru, Dropout, ModelConfig, State, DTYPE};
use crate::optim::{clip_scale, grad_norm, AdamW, AdamWConfig};
use crate::params::ParamStore;
use crate::run::{MetricsRow, ResumeRecord, ResumeState, RunDir};
use crate::schedule::{Schedule, ScheduleKind};
use crate::seeds::{step_rng, Purpose};
use crate::{input_error, Error, Result};

/// Everything a training run needs to know, in one plain struct (saved as the run's `config.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The UTF-8 text to learn: a file, or a directory of files.
    pub corpus: std::path::PathBuf,
    /// The run directory (see [`RunDir`]).
    pub out: std::path::PathBuf,
    /// Continue the run in `out` instead of starting one.
    #[serde(skip)]
    pub resume: bool,
    /// Replace a run already in `out` instead of refusing to start.
    #[serde(skip)]
    pub overwrite: bool,
    /// Optimizer steps to reach (with `resume`, the total including earlier steps).
    pub steps: usize,
    /// Passes over the training text to make instead of `steps`.
    pub epochs: Option<f64>,
    /// Stop at the first step boundary after this much training time in this session.
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
    /// How windows are cut from the text.
    pub batching: Batching,
    /// Peak learning rate.
    pub lr: f64,
    /// The learning rate the cosine decays to (default: a tenth of `lr`).
    pub min_lr: Option<f64>,
    /// Steps of linear warm-up (default: 100, or a tenth of the run if shorter).
    pub warmup: Option<usize>,
    /// Cosine decay or a constant rate after warm-up.
    pub schedule: ScheduleKind,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Dropout between layers and before the head.
    pub dropout: f64,
    /// Gradients whose global norm exceeds this are scaled down to it.
    pub grad_clip: f64,
    /// Measure the validation loss (and write checkpoints) every this many steps.
    pub eval_every: usize,
    /// Streams the validation text is cut into and read side by side.
    pub val_streams: usize,
    /// Fixes the initial weights, the batches and the dropout masks.
    pub seed: u64,
    /// The float type `best` and `latest` store their weights in (the resume state keeps f32).
    #[serde(default)]
    pub dtype: StorageDtype,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            corpus: "corpus/tinyshakespeare.txt".into(),
            out: "checkpoints/tinyshakespeare".into(),
            resume: false,
            overwrite: false,
            steps: 3000,
            epochs: None,
            time: None,
            embed: 64,
            hidden: 256,
            layers: 2,
            seq_len: 64,
            batch: 32,
            batching: Batching::Stateful,
            lr: 2e-3,
            min_lr: None,
            warmup: None,
            schedule: ScheduleKind::Cosine,
            weight_decay: 0.01,
            dropout: 0.1,
            grad_clip: 1.0,
            eval_every: 250,
            val_streams: 64,
            seed: 1337,
            dtype: StorageDtype::F32,
        }
    }
}

impl TrainConfig {
    /// The learning-rate schedule of a run of `total_steps` steps within the `--time` budget.
    pub fn schedule_for(&self, total_steps: usize) -> Schedule {
        Schedule {
            kind: self.schedule,
            peak: self.lr,
            floor: self.min_lr.unwrap_or(self.lr / 10.0),
            warmup_steps: self.warmup.unwrap_or((total_steps / 10).min(100)),
            decay_steps: total_steps,
            decay_seconds: self.time.map(|budget| budget.as_secs_f64()),
        }
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Progress {
    /// The corpus is read and the model built; training starts (or resumes).
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
        /// Steps already taken (non-zero when resuming).
        start_step: usize,
        /// Steps the run will reach.
        total_steps: usize,
        /// Steps per pass over the training text.
        steps_per_epoch: usize,
        /// This session's time budget: `--time`, or what a resumed run's clock has left.
        time_budget: Option<Duration>,
    },
    /// One optimizer step was taken.
    Step {
        /// Steps done.
        step: usize,
        /// Passes over the training text so far.
        epoch: f64,
        /// This step's training loss, nats per character.
        loss: f64,
        /// Global gradient norm, before clipping.
        grad_norm: f64,
        /// The learning rate used.
        lr: f64,
        /// Training characters per second in this session, validation excluded.
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

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It reached its step count.
    Finished,
    /// Its `--time` budget ran out.
    OutOfTime,
    /// It was asked to stop (Ctrl-C).
    Interrupted,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Why it stopped.
    pub stopped: Stopped,
    /// Steps taken in all.
    pub step: usize,
    /// The lowest validation loss measured (infinite if none was).
    pub best_val_loss: f64,
    /// The run's files.
    pub run: std::path::PathBuf,
}

/// Trains as `config` says on `device`, reporting through `report`; setting `stop` makes
/// the run save and return after the current step.
pub fn train(
    config: &TrainConfig,
    device: &Device,
    stop: &AtomicBool,
    mut report: impl FnMut(&Progress),
) -> Result<TrainSummary> {
    check_config(config)?;
    let corpus = Corpus::load(&config.corpus)?;
    if corpus.val().len() < 2 {
        input_error!(
            "corpus {} is too short to hold out a validation part (its last 10% must be at least 2 characters); use a longer corpus",
            corpus.path.display()
        );
    }
    let (n, t) = (config.batch, config.seq_len);
    let batcher = Batcher::new(config.batching, corpus.train().len(), n, t, config.seed)
        .map_err(|e| Error::Input(format!("corpus {}: {e}", corpus.path.display())))?;
    let total_steps = match config.epochs {
        Some(epochs) => (epochs * batcher.steps_per_epoch() as f64).ceil().max(1.0) as usize,
        None => config.steps,
    };
    let model_config = ModelConfig {
        vocab_size: corpus.tokenizer.vocab_size(),
        embed_dim: config.embed,
        hidden_size: config.hidden,
        num_layers: config.layers,
        dropout: config.dropout,
    };
    let run = RunDir::new(&config.out);
    run.prepare()?;
    let _lock = run.lock()?;
    let resumed = if config.resume {
        Some(load_resume(&run, &corpus, &model_config, total_steps)?)
    } else {
        run.start_new(config.overwrite)?;
        run.write_config(config)?;
        None
    };
    let mut record = match &resumed {
        Some(state) => state.record.clone(),
        None => ResumeRecord {
            step: 0,
            optimizer_steps: 0,
            best_val_loss: None,
            elapsed_seconds: 0.0,
            loss_since_eval: (0.0, 0),
            schedule: config.schedule_for(total_steps),
            corpus_sha256: corpus.sha256.clone(),
        },
    };
    let start_step = record.step;
    let elapsed_before = record.elapsed_seconds;
    // A resumed run whose cosine follows a clock keeps to that clock unless --time is given.
    let time_budget = match (config.time, record.schedule.decay_seconds) {
        (Some(time), _) => Some(time),
        (None, Some(horizon)) if horizon <= elapsed_before => input_error!(
            "the run in {} has used its whole time budget ({:.0} s); give --time to train it on at its final learning rate",
            config.out.display(),
            horizon
        ),
        (None, Some(horizon)) => Some(Duration::from_secs_f64(horizon - elapsed_before)),
        (None, None) => None,
    };

    let params = match &resumed {
        Some(state) => ParamStore::from_tensors(state.params.clone())?,
        None => ParamStore::new(config.seed),
    };
    let model = CharGru::new(&model_config, params.var_builder(DTYPE, device))?;
    let optimizer_config = AdamWConfig {
        weight_decay: config.weight_decay,
        ..AdamWConfig::default()
    };
    let mut optimizer = AdamW::new(params.vars(), optimizer_config)?;
    let stateful = config.batching == Batching::Stateful;
    let mut hidden: State = model.zero_state(n)?;
    if let Some(mut state) = resumed {
        optimizer.restore(record.optimizer_steps, |name| state.moments.remove(name))?;
        if stateful {
            if state.hidden.len() != hidden.len() {
                input_error!(
                    "{} holds no carried hidden state for this model; the run cannot be resumed",
                    run.resume_state().display()
                );
            }
            hidden = state
                .hidden
                .iter()
                .map(|h| h.to_device(device))
                .collect::<candle_core::Result<_>>()?;
        }
        run.keep_metrics_through(start_step)?;
    }

    report(&Progress::Started {
        chars: corpus.ids.len(),
        vocab_size: model_config.vocab_size,
        train_chars: corpus.train().len(),
        val_chars: corpus.val().len(),
        parameters: model_config.parameter_count(),
        start_step,
        total_steps,
        steps_per_epoch: batcher.steps_per_epoch(),
        time_budget,
    });

    let session = Instant::now();
    let mut eval_seconds = 0.0;
    let mut last_good_loss = None;
    let mut stopped = Stopped::Finished;
    let mut step = start_step;
    while step < total_steps {
        step += 1;
        if stateful && batcher.starts_epoch(step) {
            hidden = model.zero_state(n)?;
        }
        let batch = batcher.batch(corpus.train(), step);
        let inputs = Tensor::from_vec(batch.inputs, (n, t), device)?; // [N, T]
        let targets = Tensor::from_vec(batch.targets, (n, t), device)?; // [N, T]
        let mut dropout = Dropout::new(
            config.dropout,
            step_rng(config.seed, Purpose::Dropout, step),
        );
        let initial = stateful.then_some(hidden.as_slice());
        let (logits, last_state) = model.forward(&inputs, initial, Some(&mut dropout))?; // [N, T, V]
        let loss = cross_entropy(&logits, &targets)?;
        let grads = loss.backward()?;
        let norm = grad_norm(&grads, optimizer.params())?;
        let loss = loss.to_scalar::<f32>()? as f64;
        if !loss.is_finite() || !norm.is_finite() {
            let (what, value) = if loss.is_finite() {
                ("gradient norm", norm)
            } else {
                ("loss", loss)
            };
            return Err(diverged(
                config,
                step,
                &format!("the {what} became {value}"),
                last_good_loss,
            ));
        }
        last_good_loss = Some(loss);
        let lr = record
            .schedule
            .lr(step, elapsed_before + session.elapsed().as_secs_f64());
        optimizer.step(&grads, lr, clip_scale(norm, config.grad_clip))?;
        if stateful {
            hidden = last_state.iter().map(Tensor::detach).collect();
        }
        record.step = step;
        record.optimizer_steps = optimizer.steps_taken();
        record.loss_since_eval.0 += loss;
        record.loss_since_eval.1 += 1;

        let session_seconds = session.elapsed().as_secs_f64();
        let training_seconds = (session_seconds - eval_seconds).max(1e-9);
        report(&Progress::Step {
            step,
            epoch: batcher.epochs(step),
            loss,
            grad_norm: norm,
            lr,
            tokens_per_second: ((step - start_step) * n * t) as f64 / training_seconds,
        });

        if time_budget.is_some_and(|budget| session.elapsed() >= budget) {
            stopped = Stopped::OutOfTime;
        } else if stop.load(Ordering::SeqCst) {
            stopped = Stopped::Interrupted;
        }
        let finishing = step == total_steps || stopped == Stopped::OutOfTime;
        let evaluate = step % config.eval_every == 0 || finishing;
        if !evaluate && stopped != Stopped::Interrupted {
            continue;
        }
        let started = Instant::now();
        let val_loss = match evaluate {
            true => Some(streams_loss(&model, corpus.val(), config.val_streams)?.mean()),
            false => None,
        };
        let measured_in = started.elapsed().as_secs_f64();
        eval_seconds += measured_in;
        if val_loss.is_some_and(|v| !v.is_finite()) || !all_finite(&params)? {
            return Err(diverged(
                config,
                step,
                "the weights became infinite or NaN",
                last_good_loss,
            ));
        }
        record.elapsed_seconds = elapsed_before + session.elapsed().as_secs_f64();
        let checkpoint = Checkpoint {
            config: model_config.clone(),
            tokenizer: corpus.tokenizer.clone(),
            training: TrainingRecord {
                step: step as u64,
                tokens_seen: (step * n * t) as u64,
                train_loss: Some(record.loss_since_eval.0 / record.loss_since_eval.1.max(1) as f64),
                val_loss,
                corpus: corpus.name(),
                corpus_sha256: corpus.sha256.clone(),
                seed: Some(config.seed),
                elapsed_seconds: Some(record.elapsed_seconds),
                schedule: Some(record.schedule.clone()),
            },
            tensors: params
                .vars()
                .into_iter()
                .map(|(name, var)| (name, var.as_tensor().clone()))
                .collect(),
        };
        checkpoint.save_as(&run.latest(), config.dtype)?;
        let best = val_loss.is_some_and(|v| record.best_val_loss.is_none_or(|b| v < b));
        if best {
            record.best_val_loss = val_loss;
            checkpoint.save_as(&run.best(), config.dtype)?;
        }
        let train_loss = checkpoint.training.train_loss;
        if evaluate {
            record.loss_since_eval = (0.0, 0);
        }
        run.save_resume(&ResumeState {
            record: record.clone(),
            params: checkpoint.tensors,
            moments: optimizer
                .moments()
                .map(|(name, m, v)| (name.to_string(), (m.clone(), v.clone())))
                .collect(),
            hidden: if stateful { hidden.clone() } else { Vec::new() },
        })?;
        if let Some(val_loss) = val_loss {
            let row = MetricsRow {
                step,
                epoch: batcher.epochs(step),
                tokens: (step * n * t) as u64,
                train_loss,
                val_loss: Some(val_loss),
                lr,
                grad_norm: norm,
                elapsed_seconds: record.elapsed_seconds,
            };
            run.record_metrics(&row, &format!("chargru on {}", corpus.name()))?;
            report(&Progress::Eval {
                step,
                val_loss,
                best,
                seconds: measured_in,
            });
        }
        if stopped != Stopped::Finished {
            break;
        }
    }
    Ok(TrainSummary {
        stopped,
        step,
        best_val_loss: record.best_val_loss.unwrap_or(f64::INFINITY),
        run: run.path().to_path_buf(),
    })
}

/// The error that stops a diverged run: where, what, and what to do.
fn diverged(config: &TrainConfig, step: usize, what: &str, last_good_loss: Option<f64>) -> Error {
    let last_good = last_good_loss.map_or_else(|| "none yet".to_string(), |l| format!("{l:.4}"));
    Error::Input(format!(
        "training diverged at step {step}: {what} (last good loss {last_good}); the checkpoints in {} are from before it and intact; start again with a lower --lr than {}",
        config.out.display(),
        config.lr
    ))
}

/// Whether every parameter is finite, checked before a save so no checkpoint holds a diverged model.
fn all_finite(params: &ParamStore) -> Result<bool> {
    for (_, var) in params.vars() {
        let values = var
            .as_tensor()
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The saved state of the run in `run`, checked against this corpus and model.
fn load_resume(
    run: &RunDir,
    corpus: &Corpus,
    model_config: &ModelConfig,
    total_steps: usize,
) -> Result<ResumeState> {
    let state = run.load_resume()?;
    if state.record.corpus_sha256 != corpus.sha256 {
        let latest = Checkpoint::load(&run.latest());
        let same_vocabulary = latest.is_ok_and(|c| c.tokenizer.chars() == corpus.tokenizer.chars());
        input_error!(
            "corpus {} is not the text the run in {} was trained on ({}); resume with the original corpus, or start a new run",
            corpus.path.display(),
            run.path().display(),
            if same_vocabulary { "its contents changed" } else { "its character vocabulary differs" }
        );
    }
    for (name, shape) in model_config.tensor_shapes() {
        match state.params.get(&name) {
            Some(t) if t.dims() == shape.as_slice() => {}
            found => input_error!(
                "the run in {} has {name} of shape {:?}, but this model needs {shape:?}; a resumed run keeps its model shape",
                run.path().display(),
                found.map(|t| t.dims().to_vec())
            ),
        }
    }
    if state.record.step >= total_steps {
        input_error!(
            "the run in {} has already taken {} steps; pass a larger --steps (the total to reach) to continue it",
            run.path().display(),
            state.record.step
        );
    }
    Ok(state)
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
        ("--val-streams", config.val_streams),
    ];
    for (flag, value) in sizes {
        if value == 0 {
            input_error!("{flag} must be at least 1");
        }
    }
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(config.lr) {
        input_error!("--lr must be a positive number, got {}", config.lr);
    }
    if let Some(min_lr) = config
        .min_lr
        .filter(|&m| !(m.is_finite() && m >= 0.0 && m <= config.lr))
    {
        input_error!(
            "--min-lr must be between 0 and --lr ({}), got {min_lr}",
            config.lr
        );
    }
    if let Some(epochs) = config.epochs.filter(|&e| !positive(e)) {
        input_error!("--epochs must be a positive number, got {epochs}");
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
    if !positive(config.grad_clip) {
        input_error!(
            "--grad-clip must be a positive number, got {}",
            config.grad_clip
        );
    }
    Ok(())
}
