//! A run directory: checkpoints, the run's configuration, its metrics, the loss curve and
//! the state an exact resume needs.
//!
//! ```text
//! <out>/best.safetensors     lowest validation loss so far (SPEC checkpoint)
//! <out>/latest.safetensors   the last save (SPEC checkpoint)
//! <out>/resume.safetensors   weights, AdamW moments, carried hidden state, counters
//! <out>/config.json          the full training configuration
//! <out>/metrics.jsonl        one JSON object per evaluation
//! <out>/loss.svg             train and validation loss against characters seen
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{write_atomically, write_safetensors};
use crate::plot::loss_curve_svg;
use crate::schedule::Schedule;
use crate::train::TrainConfig;
use crate::{input_error, Error, Result};

/// One line of `metrics.jsonl`: an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Optimizer steps taken.
    pub step: usize,
    /// Passes over the training text.
    pub epoch: f64,
    /// Training characters seen.
    pub tokens: u64,
    /// Mean training loss since the previous evaluation, nats per character.
    pub train_loss: Option<f64>,
    /// Validation loss, nats per character (`null` when the save was not an evaluation).
    pub val_loss: Option<f64>,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Global gradient norm of the last step, before clipping.
    pub grad_norm: f64,
    /// Seconds of training so far.
    pub elapsed_seconds: f64,
}

/// The counters an exact resume needs besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// Optimizer steps taken.
    pub step: usize,
    /// AdamW's step count (its bias correction).
    pub optimizer_steps: usize,
    /// The lowest validation loss so far.
    pub best_val_loss: Option<f64>,
    /// Seconds of training so far.
    pub elapsed_seconds: f64,
    /// Sum and count of training losses since the last evaluation.
    pub loss_since_eval: (f64, usize),
    /// The learning-rate schedule, fixed when the run started.
    pub schedule: Schedule,
    /// SHA-256 of the corpus the run trains on.
    pub corpus_sha256: String,
}

/// Everything a run needs to continue exactly.
pub struct ResumeState {
    /// Counters.
    pub record: ResumeRecord,
    /// Weights by SPEC name.
    pub params: HashMap<String, Tensor>,
    /// AdamW's (first, second) moments by parameter name.
    pub moments: HashMap<String, (Tensor, Tensor)>,
    /// The hidden state carried between windows (stateful batching), one `[N, H]` per layer.
    pub hidden: Vec<Tensor>,
}

const RESUME_KEY: &str = "chargru.resume";

/// Holds a run directory's `train.lock`; removes it when dropped.
pub struct RunLock {
    path: PathBuf,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `pid` is a live chargru process (Linux; elsewhere any lock is taken as live).
fn process_is_chargru(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return true;
    }
    fs::read_to_string(proc.join(pid.to_string()).join("comm"))
        .is_ok_and(|name| name.trim() == "chargru")
}

/// The files of one training run.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run kept in `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint with the lowest validation loss.
    pub fn best(&self) -> PathBuf {
        self.path.join("best.safetensors")
    }

    /// The last checkpoint written.
    pub fn latest(&self) -> PathBuf {
        self.path.join("latest.safetensors")
    }

    /// The state for `--resume`.
    pub fn resume_state(&self) -> PathBuf {
        self.path.join("resume.safetensors")
    }

    /// The run's configuration.
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// One JSON object per evaluation.
    pub fn metrics(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    /// The loss-curve picture.
    pub fn plot(&self) -> PathBuf {
        self.path.join("loss.svg")
    }

    /// Claims the directory for this process until the returned guard is dropped; refused
    /// while another live chargru process holds it. A lock left by a process that died
    /// (killed, or quit by a second Ctrl-C) is taken over.
    pub fn lock(&self) -> Result<RunLock> {
        let path = self.path.join("train.lock");
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    writeln!(file, "{}", std::process::id())
                        .map_err(|e| Error::io("write", &path, e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    if let Some(pid) = holder.filter(|&pid| process_is_chargru(pid)) {
                        input_error!(
                            "{} is in use by another `chargru train` (process {pid}); wait for it to finish or stop it, or train into another --out",
                            self.path.display()
                        );
                    }
                    fs::remove_file(&path)
                        .map_err(|e| Error::io("remove the stale lock", &path, e))?;
                }
                Err(e) => return Err(Error::io("create", &path, e)),
            }
        }
        input_error!(
            "cannot take the lock {}; remove it if no chargru is training there",
            path.display()
        )
    }

    fn run_files(&self) -> [PathBuf; 6] {
        [
            self.best(),
            self.latest(),
            self.resume_state(),
            self.config(),
            self.metrics(),
            self.plot(),
        ]
    }

    /// Creates the directory if needed and checks that files can be written in it.
    pub fn prepare(&self) -> Result<()> {
        if self.path.exists() && !self.path.is_dir() {
            input_error!("--out {} is a file; pass a directory", self.path.display());
        }
        fs::create_dir_all(&self.path).map_err(|e| Error::io("create directory", &self.path, e))?;
        let probe = self
            .path
            .join(format!(".write-test.{}", std::process::id()));
        fs::write(&probe, b"").map_err(|e| Error::io("write in", &self.path, e))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    /// Makes the (prepared and locked) directory ready for a new run: refuses to replace an
    /// earlier run's files unless `overwrite`, in which case they are removed.
    pub fn start_new(&self, overwrite: bool) -> Result<()> {
        let existing: Vec<PathBuf> = self
            .run_files()
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        if !existing.is_empty() && !overwrite {
            input_error!(
                "{} already holds a run ({}); continue it with --resume {}, choose another --out, or pass --overwrite to replace it",
                self.path.display(),
                existing[0].display(),
                self.path.display()
            );
        }
        for file in existing {
            fs::remove_file(&file).map_err(|e| Error::io("remove", &file, e))?;
        }
        Ok(())
    }

    /// Writes `config.json`.
    pub fn write_config(&self, config: &TrainConfig) -> Result<()> {
        let json = serde_json::to_string_pretty(config)
            .expect("the training configuration always serializes");
        write_atomically(&self.config(), json.as_bytes())
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<TrainConfig> {
        let path = self.config();
        let json = fs::read_to_string(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Input(format!(
                "{} is not a chargru run directory (it has no config.json); pass the --out directory of an earlier `chargru train`",
                self.path.display()
            )),
            _ => Error::io("read", &path, e),
        })?;
        serde_json::from_str(&json).map_err(|e| {
            Error::Input(format!(
                "{} is malformed ({e}); the run cannot be resumed",
                path.display()
            ))
        })
    }

    /// Appends one evaluation to `metrics.jsonl` and redraws `loss.svg`.
    pub fn record_metrics(&self, row: &MetricsRow, title: &str) -> Result<()> {
        let mut rows = self.read_metrics()?;
        rows.push(row.clone());
        self.write_metrics(&rows)?;
        let svg = loss_curve_svg(&rows, title)
            .map_err(|e| Error::Input(format!("cannot draw {}: {e}", self.plot().display())))?;
        write_atomically(&self.plot(), svg.as_bytes())
    }

    /// Every evaluation recorded so far.
    pub fn read_metrics(&self) -> Result<Vec<MetricsRow>> {
        let path = self.metrics();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).map_err(|e| {
                    Error::Input(format!("{} has a malformed line ({e})", path.display()))
                })
            })
            .collect()
    }

    /// Drops evaluations after `step`: on resume, those of the lost part of the run.
    pub fn keep_metrics_through(&self, step: usize) -> Result<()> {
        let rows: Vec<MetricsRow> = self
            .read_metrics()?
            .into_iter()
            .filter(|r| r.step <= step)
            .collect();
        self.write_metrics(&rows)
    }

    fn write_metrics(&self, rows: &[MetricsRow]) -> Result<()> {
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row).expect("a metrics row always serializes"));
            text.push('\n');
        }
        write_atomically(&self.metrics(), text.as_bytes())
    }

    /// Writes `resume.safetensors`.
    pub fn save_resume(&self, state: &ResumeState) -> Result<()> {
        let params = state
            .params
            .iter()
            .map(|(name, t)| (format!("param/{name}"), t));
        let moments = state.moments.iter().flat_map(|(name, (m, v))| {
            [(format!("adam_m/{name}"), m), (format!("adam_v/{name}"), v)]
        });
        let hidden = state
            .hidden
            .iter()
            .enumerate()
            .map(|(l, h)| (format!("hidden/{l}"), h));
        let record =
            serde_json::to_string(&state.record).expect("the resume record always serializes");
        let metadata = HashMap::from([(RESUME_KEY.to_string(), record)]);
        write_safetensors(
            &self.resume_state(),
            params.chain(moments).chain(hidden),
            metadata,
            DType::F32,
        )
    }

    /// Reads `resume.safetensors`.
    pub fn load_resume(&self) -> Result<ResumeState> {
        let path = self.resume_state();
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::Input(format!(
                "{} has no resume.safetensors, so there is nothing to resume; start a new run with --overwrite",
                self.path.display()
            )),
            _ => Error::io("read", &path, e),
        })?;
        let broken = |why: String| {
            Error::Input(format!(
                "{} is unusable ({why}); the run cannot be resumed",
                path.display()
            ))
        };
        let file = SafeTensors::deserialize(&bytes).map_err(|e| broken(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| broken(e.to_string()))?;
        let record = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(RESUME_KEY))
            .ok_or_else(|| broken(format!("no {RESUME_KEY} metadata")))?;
        let record: ResumeRecord =
            serde_json::from_str(record).map_err(|e| broken(e.to_string()))?;
        let mut state = ResumeState {
            record,
            params: HashMap::new(),
            moments: HashMap::new(),
            hidden: Vec::new(),
        };
        let mut first = HashMap::new();
        let mut second = HashMap::new();
        let mut hidden = Vec::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(broken(format!("tensor {name} is not F32")));
            }
            let tensor =
                Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), &Device::Cpu)?;
            match name.split_once('/') {
                Some(("param", n)) => drop(state.params.insert(n.to_string(), tensor)),
                Some(("adam_m", n)) => drop(first.insert(n.to_string(), tensor)),
                Some(("adam_v", n)) => drop(second.insert(n.to_string(), tensor)),
                Some(("hidden", l)) => hidden.push((
                    l.parse::<usize>()
                        .map_err(|_| broken(format!("tensor {name}")))?,
                    tensor,
                )),
                _ => return Err(broken(format!("unexpected tensor {name}"))),
            }
        }
        for (name, m) in first {
            let v = second
                .remove(&name)
                .ok_or_else(|| broken(format!("no second moment for {name}")))?;
            state.moments.insert(name, (m, v));
        }
        hidden.sort_by_key(|(l, _)| *l);
        state.hidden = hidden.into_iter().map(|(_, h)| h).collect();
        Ok(state)
    }
}
