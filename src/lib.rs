//! chargru: a character-level GRU language model over candle tensors.
//!
//! The pieces, each in its own module: the [`Gru`] layer written from SPEC's equations,
//! the [`CharGru`] language model, the [`CharTokenizer`], [`Checkpoint`] files, the
//! training loop ([`train::train`]), evaluation ([`eval`]) and the [`Sampler`].

pub mod checkpoint;
pub mod cli;
pub mod cpu_generate;
pub mod cpu_gru;
pub mod data;
pub mod device;
mod error;
pub mod eval;
pub mod gru;
pub mod model;
pub mod optim;
pub mod params;
pub mod plot;
pub mod preset;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod seeds;
pub mod tokenizer;
pub mod train;

pub use checkpoint::{Checkpoint, TrainingRecord};
pub use error::{Error, Result};
pub use gru::Gru;
pub use model::{CharGru, ModelConfig};
pub use sample::{Sampler, SamplingConfig};
pub use tokenizer::CharTokenizer;
pub use train::TrainConfig;
