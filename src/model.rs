//! SPEC's character language model: embedding → L stacked GRU layers → linear head.
//!
//! Shapes: N batch, T time, E embedding size, H hidden units, V vocabulary size.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::gru::Gru;

/// The shape of a model: what a checkpoint's `chargru.config` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// V: characters in the vocabulary.
    pub vocab_size: usize,
    /// E: size of a character's embedding vector.
    pub embed_dim: usize,
    /// H: units in each GRU layer.
    pub hidden_size: usize,
    /// L: stacked GRU layers.
    pub num_layers: usize,
    /// Probability of zeroing an activation between layers and before the head, when training.
    pub dropout: f64,
}

impl ModelConfig {
    /// The checkpoint's tensors as (name, shape), in SPEC's order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        (0..self.tensor_count())
            .map(|k| self.tensor_shape(k))
            .collect()
    }

    /// How many tensors the model has: 3 per layer, the embedding and the head's two.
    pub fn tensor_count(&self) -> usize {
        3 * self.num_layers + 3
    }

    /// The `k`-th tensor in SPEC's order, as (name, shape).
    pub fn tensor_shape(&self, k: usize) -> (String, Vec<usize>) {
        let (v, e, h) = (self.vocab_size, self.embed_dim, self.hidden_size);
        let last = self.tensor_count() - 1;
        match k {
            0 => ("embedding.weight".to_string(), vec![v, e]),
            k if k == last - 1 => ("head.weight".to_string(), vec![v, h]),
            k if k == last => ("head.bias".to_string(), vec![v]),
            k => {
                let (l, part) = ((k - 1) / 3, (k - 1) % 3);
                let input = if l == 0 { e } else { h };
                match part {
                    0 => (format!("gru.{l}.weight_x"), vec![3 * h, input]),
                    1 => (format!("gru.{l}.weight_h"), vec![3 * h, h]),
                    _ => (format!("gru.{l}.bias"), vec![3 * h]),
                }
            }
        }
    }

    /// Whether the model has a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        match name {
            "embedding.weight" | "head.weight" | "head.bias" => true,
            _ => name
                .strip_prefix("gru.")
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(l, part)| {
                    matches!(part, "weight_x" | "weight_h" | "bias")
                        && l.parse::<usize>()
                            .is_ok_and(|n| n < self.num_layers && n.to_string() == l)
                }),
        }
    }

    /// Number of trainable numbers in the model.
    pub fn parameter_count(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }
}

/// One hidden state per layer, each `[N, H]`.
pub type State = Vec<Tensor>;

/// The character-level GRU language model.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use chargru::{params::ParamStore, CharGru, ModelConfig};
///
/// let config = ModelConfig { vocab_size: 10, embed_dim: 4, hidden_size: 8, num_layers: 2, dropout: 0.0 };
/// let model = CharGru::new(&config, ParamStore::new(42).var_builder(DType::F32, &Device::Cpu))?;
/// let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu)?; // [N=2, T=3]
/// let (logits, state) = model.forward(&ids, None, None)?;
/// assert_eq!(logits.dims(), &[2, 3, 10]); // [N, T, V]
/// // Carry on one character at a time from where the sequences ended.
/// let (next, _) = model.step(&Tensor::new(&[7u32, 8], &Device::Cpu)?, &state)?;
/// assert_eq!(next.dims(), &[2, 10]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub struct CharGru {
    config: ModelConfig,
    embedding: Embedding,
    layers: Vec<Gru>,
    head: Linear,
}

impl CharGru {
    /// Builds the model from `vb`, whose tensors are named as in SPEC's checkpoint table.
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let embedding =
            candle_nn::embedding(config.vocab_size, config.embed_dim, vb.pp("embedding"))?;
        let layers = (0..config.num_layers)
            .map(|l| {
                let input = if l == 0 {
                    config.embed_dim
                } else {
                    config.hidden_size
                };
                Gru::new(input, config.hidden_size, vb.pp("gru").pp(l))
            })
            .collect::<Result<Vec<_>>>()?;
        let head = candle_nn::linear(config.hidden_size, config.vocab_size, vb.pp("head"))?;
        Ok(Self {
            config: config.clone(),
            embedding,
            layers,
            head,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Makes every layer use the candle-autograd composition of the GRU instead of the
    /// CPU fast path (see [`Gru::set_autograd_only`]).
    pub fn set_autograd_only(&mut self, on: bool) {
        for layer in &mut self.layers {
            layer.set_autograd_only(on);
        }
    }

    /// The embedding matrix `[V, E]`.
    pub fn embedding_weight(&self) -> &Tensor {
        self.embedding.embeddings()
    }

    /// The head's `W_o` `[V, H]` and `b_o` `[V]`.
    pub fn head(&self) -> (&Tensor, Option<&Tensor>) {
        (self.head.weight(), self.head.bias())
    }

    /// The GRU layers, bottom first.
    pub fn layers(&self) -> &[Gru] {
        &self.layers
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.embedding.embeddings().device()
    }

    /// The all-zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> Result<State> {
        self.layers
            .iter()
            .map(|gru| gru.zero_state(batch))
            .collect()
    }

    /// Logits `[N, T, V]` for token ids `[N, T]` (u32), and the final state.
    ///
    /// `state` defaults to zeros. Pass `dropout` when training; `None` is inference.
    pub fn forward(
        &self,
        ids: &Tensor,
        state: Option<&[Tensor]>,
        mut dropout: Option<&mut Dropout>,
    ) -> Result<(Tensor, State)> {
        let mut xs = self.embedding.forward(ids)?; // [N, T, E]
        let mut final_state = Vec::with_capacity(self.layers.len());
        for (l, gru) in self.layers.iter().enumerate() {
            let (ys, h_last) = gru.forward(&xs, state.map(|s| &s[l]))?; // [N, T, H], [N, H]
            final_state.push(h_last);
            xs = match dropout.as_deref_mut() {
                Some(dropout) => dropout.apply(&ys)?,
                None => ys,
            };
        }
        Ok((self.head.forward(&xs)?, final_state)) // [N, T, V]
    }

    /// Feeds one token per sequence (`ids`: `[N]`, u32): logits `[N, V]` and the next state.
    pub fn step(&self, ids: &Tensor, state: &[Tensor]) -> Result<(Tensor, State)> {
        let mut x = self.embedding.forward(ids)?; // [N, E]
        let mut next = Vec::with_capacity(self.layers.len());
        for (gru, h) in self.layers.iter().zip(state) {
            x = gru.step(&x, h)?; // [N, H]
            next.push(x.clone());
        }
        Ok((self.head.forward(&x)?, next))
    }

    /// Logits `[N, V]` read from a state alone: what the model predicts before any input
    /// when `state` is the zero state.
    pub fn logits(&self, state: &[Tensor]) -> Result<Tensor> {
        match state.last() {
            Some(top) => self.head.forward(top),
            None => candle_core::bail!("the model has no layers"),
        }
    }
}

/// Mean cross-entropy, nats per character, of `logits` `[N, T, V]` against `targets` `[N, T]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let v = logits.dim(D::Minus1)?;
    candle_nn::loss::cross_entropy(&logits.reshape(((), v))?, &targets.flatten_all()?)
}

/// Inverted dropout drawing its masks from a given generator (candle's CPU random source
/// cannot be seeded, and a resumable run needs masks that depend only on the step).
pub struct Dropout {
    p: f64,
    rng: StdRng,
}

impl Dropout {
    /// Zeroes each activation with probability `p`, scaling the rest by 1/(1−p); masks come from `rng`.
    pub fn new(p: f64, rng: StdRng) -> Self {
        Self { p, rng }
    }

    /// `xs` with a fresh random mask applied.
    pub fn apply(&mut self, xs: &Tensor) -> Result<Tensor> {
        if self.p == 0.0 {
            return Ok(xs.clone());
        }
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if self.rng.random_bool(keep) {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
            .to_dtype(xs.dtype())?
            .to_device(xs.device())?;
        xs * mask
    }
}

/// A `[N, T]` u32 tensor of token ids from `rows` of equal length.
pub fn ids_tensor(rows: &[&[u32]], device: &Device) -> Result<Tensor> {
    let t = rows.first().map_or(0, |r| r.len());
    let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), t), device)
}

/// The dtype every model computation runs in.
pub const DTYPE: DType = DType::F32;
