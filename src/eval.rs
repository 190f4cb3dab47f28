//! SPEC's `eval`: the mean negative log-likelihood of a text read as one sequence.
//!
//! The text is processed in chunks, carrying the hidden state from one chunk to the next,
//! which computes exactly the one-sequence definition in bounded memory.

use candle_core::{DType, Result, Tensor, D};

use crate::model::{CharGru, State};

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

/// SPEC's `eval` over a text fed in pieces of any size: every character from the second
/// on is predicted from all earlier ones, starting from the zero state.
///
/// ```
/// # use candle_core::{DType, Device};
/// # use chargru::{params::ParamStore, CharGru, ModelConfig};
/// use chargru::eval::{sequence_loss, SequenceScorer};
/// # let config = ModelConfig { vocab_size: 3, embed_dim: 2, hidden_size: 4, num_layers: 1, dropout: 0.0 };
/// # let model = CharGru::new(&config, ParamStore::new(0).var_builder(DType::F32, &Device::Cpu))?;
/// let ids = [0, 1, 2, 1, 0, 2, 2];
/// let mut scorer = SequenceScorer::new(&model)?;
/// scorer.feed(&ids[..3])?;
/// scorer.feed(&ids[3..])?;
/// let whole = sequence_loss(&model, &ids)?;
/// assert_eq!(scorer.total().predictions, 6);
/// assert!((scorer.total().mean() - whole.mean()).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub struct SequenceScorer<'m> {
    model: &'m CharGru,
    state: State,
    last: Option<u32>,
    total: LossSum,
}

impl<'m> SequenceScorer<'m> {
    /// A scorer at the start of a text.
    pub fn new(model: &'m CharGru) -> Result<Self> {
        Ok(Self {
            model,
            state: model.zero_state(1)?,
            last: None,
            total: LossSum::default(),
        })
    }

    /// Reads the next piece of the text.
    pub fn feed(&mut self, ids: &[u32]) -> Result<()> {
        let mut sequence = Vec::with_capacity(ids.len() + 1);
        sequence.extend(self.last);
        sequence.extend_from_slice(ids);
        if sequence.len() < 2 {
            self.last = sequence.last().copied();
            return Ok(());
        }
        for start in (0..sequence.len() - 1).step_by(CHUNK) {
            let end = (start + CHUNK).min(sequence.len() - 1);
            let device = self.model.device();
            let inputs = Tensor::new(&sequence[start..end], device)?.unsqueeze(0)?; // [1, C]
            let targets = Tensor::new(&sequence[start + 1..end + 1], device)?.unsqueeze(0)?; // [1, C]
            let (nll, next) = score(self.model, &inputs, &targets, None, &self.state)?;
            self.total.nll += nll;
            self.total.predictions += end - start;
            self.state = next;
        }
        self.last = sequence.last().copied();
        Ok(())
    }

    /// The loss so far.
    pub fn total(&self) -> LossSum {
        self.total
    }
}

/// SPEC's `eval` over `ids` held in memory.
pub fn sequence_loss(model: &CharGru, ids: &[u32]) -> Result<LossSum> {
    let mut scorer = SequenceScorer::new(model)?;
    scorer.feed(ids)?;
    Ok(scorer.total())
}

/// The loss over `ids` cut into `streams` contiguous parts read side by side as one batch.
///
/// Each part starts from the zero state and begins where the previous part's predictions
/// end, so every character from the second on is predicted exactly once; only the first
/// characters of each part see a shorter history than [`sequence_loss`] gives them.
pub fn streams_loss(model: &CharGru, ids: &[u32], streams: usize) -> Result<LossSum> {
    let predictions = ids.len().saturating_sub(1);
    if predictions == 0 {
        return Ok(LossSum::default());
    }
    let per_stream = predictions.div_ceil(streams.clamp(1, predictions));
    let streams = predictions.div_ceil(per_stream);
    let device = model.device();
    let mut state = model.zero_state(streams)?;
    let mut nll = 0.0;
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
        let targets = Tensor::from_vec(targets, (streams, len), device)?; // [S, C]
        let mask = Tensor::from_vec(mask, (streams, len), device)?; // [S, C]
        let (chunk_nll, next) = score(model, &inputs, &targets, Some(&mask), &state)?;
        nll += chunk_nll;
        state = next;
    }
    Ok(LossSum { nll, predictions })
}

/// Σ −ln p(target) over a chunk (`inputs`, `targets`: `[S, C]`, positions weighted by
/// `mask` when given), and the state after it, detached so chunks do not chain graphs.
fn score(
    model: &CharGru,
    inputs: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
    state: &[Tensor],
) -> Result<(f64, State)> {
    let (logits, next) = model.forward(inputs, Some(state), None)?; // [S, C, V]
    let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?; // [S, C]
    let log_p = match mask {
        Some(mask) => (log_p * mask)?,
        None => log_p,
    };
    let nll = log_p
        .sum_all()?
        .neg()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok((nll, next.iter().map(Tensor::detach).collect()))
}
