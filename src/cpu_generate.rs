//! Generation's CPU fast path: the whole model advanced one character at a time on plain
//! vectors, with no tensor operations (each of which would allocate and may wake a thread
//! pool) between one character and the next.

use candle_core::{Result, Tensor};

use crate::cpu_gru::{forward, matmul, Sizes, View};
use crate::model::CharGru;

/// A model's weights copied out for stepping S sequences at once on the CPU.
pub struct CpuStepper {
    embedding: Vec<f32>, // [V, E]
    embed_dim: usize,
    layers: Vec<(Vec<f32>, usize, usize)>, // packed weight_x, weight_h, bias; I; H
    head_weight: Vec<f32>,                 // [V, H]
    head_bias: Vec<f32>,                   // [V]
    vocab: usize,
    state: Vec<Vec<f32>>, // per layer, [S, H]
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()
}

impl CpuStepper {
    /// A stepper for `model` starting from `state` (one `[S, H]` tensor per layer).
    pub fn new(model: &CharGru, state: &[Tensor]) -> Result<Self> {
        let layers = model
            .layers()
            .iter()
            .map(|gru| {
                let mut packed = values(gru.weight_x())?;
                packed.extend(values(gru.weight_h())?);
                packed.extend(values(gru.bias())?);
                Ok((packed, gru.input_size(), gru.hidden_size()))
            })
            .collect::<Result<_>>()?;
        let (head_weight, head_bias) = model.head();
        let config = model.config();
        Ok(Self {
            embedding: values(model.embedding_weight())?,
            embed_dim: config.embed_dim,
            layers,
            head_weight: values(head_weight)?,
            head_bias: match head_bias {
                Some(b) => values(b)?,
                None => vec![0.0; config.vocab_size],
            },
            vocab: config.vocab_size,
            state: state.iter().map(values).collect::<Result<_>>()?,
        })
    }

    /// Feeds one token per sequence; returns the next logits, `[S, V]` row-major.
    pub fn step(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let e = self.embed_dim;
        let mut x = Vec::with_capacity(ids.len() * e);
        for &id in ids {
            let row = id as usize * e;
            match self.embedding.get(row..row + e) {
                Some(v) => x.extend_from_slice(v),
                None => candle_core::bail!("token id {id} is outside the vocabulary"),
            }
        }
        for ((packed, i, h), state) in self.layers.iter().zip(&mut self.state) {
            let sizes = Sizes {
                n: ids.len(),
                t: 1,
                i: *i,
                h: *h,
            };
            let (next, _) = forward(&x, state, packed, sizes); // [S, 1, H]
            state.copy_from_slice(&next);
            x = next;
        }
        let h = x.len() / ids.len();
        let mut logits = vec![0f32; ids.len() * self.vocab];
        let head = View::rows(&self.head_weight, 0, self.vocab, h, h).t();
        matmul(
            &mut logits,
            0,
            self.vocab,
            View::rows(&x, 0, ids.len(), h, h),
            head,
            false,
        ); // [S, V]
        for row in logits.chunks_exact_mut(self.vocab) {
            for (l, b) in row.iter_mut().zip(&self.head_bias) {
                *l += b;
            }
        }
        Ok(logits)
    }
}
