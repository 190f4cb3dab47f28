//! SPEC's `eval`: the mean negative log-likelihood of a text read as one sequence.
//!
//! The text is processed in chunks, carrying the hidden state from one chunk to the next,
//! which computes exactly the one-sequence definition in bounded memory.

use candle_core::{DType, Result, Tensor, D};

use crate::model::CharGru;

/// Characters per chunk: large enough for big matrix products, small enough for little memory.
pub const CHUNK: usize = 512;

/// A sum of −ln p over some predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSum {
    /// Σ −ln p(c_{t+1} | c_1…c_t), nats.
    pub nll: f64,
    /// How many characters were predicted.
    pub predictions: usize,
}

impl LossSum {
    /// Nats per character.
    pub fn mean(&self) -> f64 {
        self.nll / self.predictions as f64
    }
}

/// SPEC's `eval` over `ids`: every character from the second on is predicted from all
/// earlier ones, starting from the zero state.
pub fn sequence_loss(model: &CharGru, ids: &[u32]) -> Result<LossSum> {
    streams_loss(model, ids, 1)
}

/// The loss over `ids` cut into `streams` contiguous parts read side by side as one batch.
///
/// Each part starts from the zero state and begins where the previous part's predictions
/// end, so every character from the second on is predicted exactly once; only the first
/// characters of each part see a shorter history than `sequence_loss` gives them.
/// With one stream this is `sequence_loss`.
pub fn streams_loss(model: &CharGru, ids: &[u32], streams: usize) -> Result<LossSum> {
    let predictions = ids.len().saturating_sub(1);
    if predictions == 0 {
        return Ok(LossSum::default());
    }
    let streams = streams.clamp(1, predictions);
    let per_stream = predictions.div_ceil(streams);
    let streams = predictions.div_ceil(per_stream);
    let device = model.device();
    let mut state = model.zero_state(streams)?;
    let mut total = LossSum::default();
    for start in (0..per_stream).step_by(CHUNK) {
        let len = CHUNK.min(per_stream - start);
        let mut inputs = Vec::with_capacity(streams * len);
        let mut targets = Vec::with_capacity(streams * len);
        let mut mask = Vec::with_capacity(streams * len);
        for s in 0..streams {
            for k in 0..len {
                // Stream s predicts characters s·per_stream + 1 ..= (s+1)·per_stream.
                let t = s * per_stream + start + k;
                let real = t < predictions;
                inputs.push(if real { ids[t] } else { 0 });
                targets.push(if real { ids[t + 1] } else { 0 });
                mask.push(if real { 1f32 } else { 0.0 });
            }
        }
        let inputs = Tensor::from_vec(inputs, (streams, len), device)?; // [S, C]
        let targets = Tensor::from_vec(targets, (streams, len, 1), device)?; // [S, C, 1]
        let mask = Tensor::from_vec(mask, (streams, len), device)?; // [S, C]
        let (logits, next) = model.forward(&inputs, Some(&state), None)?; // [S, C, V]
        let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?
            .gather(&targets, D::Minus1)?
            .squeeze(D::Minus1)?; // [S, C]
        let nll = (log_p * mask)?
            .sum_all()?
            .neg()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        total.nll += nll;
        state = next.iter().map(|h| h.detach()).collect();
    }
    total.predictions = predictions;
    Ok(total)
}
