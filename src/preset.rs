//! Named training recipes for the shipped corpus, chosen by the experiments in the README.

use std::time::Duration;

use crate::checkpoint::StorageDtype;
use crate::train::TrainConfig;

/// The model in the repository, trained by `--preset shakespeare`; commands use it when no
/// `--checkpoint` is given.
pub const SHIPPED_CHECKPOINT: &str = "checkpoints/shakespeare/best.safetensors";

/// A recipe `chargru train --preset NAME` starts from; flags given beside it still win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// The best validation loss reached in 15 minutes on 2 CPU cores.
    #[value(name = "shakespeare-15m")]
    Shakespeare15m,
    /// The shipped model in checkpoints/shakespeare: 60 minutes on 2 CPU cores.
    Shakespeare,
}

impl Preset {
    /// The training configuration this preset stands for.
    pub fn config(self) -> TrainConfig {
        let minutes = |m: u64| Some(Duration::from_secs(60 * m));
        // Both runs end by time: the step count is only an upper bound, and the cosine
        // follows the clock so the rate is annealed when the time is up.
        let timed = TrainConfig {
            steps: 1_000_000,
            embed: 128,
            seq_len: 100,
            batch: 64,
            ..TrainConfig::default()
        };
        match self {
            Self::Shakespeare15m => TrainConfig {
                out: "checkpoints/shakespeare-15m".into(),
                time: minutes(15),
                hidden: 512,
                layers: 2,
                lr: 3e-3,
                dropout: 0.2,
                ..timed
            },
            Self::Shakespeare => TrainConfig {
                out: "checkpoints/shakespeare".into(),
                time: minutes(60),
                hidden: 512,
                layers: 3,
                lr: 2e-3,
                dropout: 0.3,
                weight_decay: 0.1,
                dtype: StorageDtype::F16,
                ..timed
            },
        }
    }
}
