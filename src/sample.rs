//! Generation: priming the model with a prompt, then sampling one character at a time.

use candle_core::{IndexOp, Result as CandleResult, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::cpu_generate::CpuStepper;
use crate::eval::CHUNK;
use crate::model::{ids_tensor, CharGru, State};

/// How the next character is drawn from the model's logits.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 picks the most likely character (greedy).
    pub temperature: f64,
    /// Draw only among the k most likely characters.
    pub top_k: Option<usize>,
    /// Draw only among the most likely characters whose probabilities sum to at least p.
    pub top_p: Option<f64>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        }
    }
}

/// Draws token ids from logits with temperature, top-k and top-p, reproducibly from a seed.
///
/// ```
/// use chargru::{Sampler, SamplingConfig};
///
/// let greedy = SamplingConfig { temperature: 0.0, ..SamplingConfig::default() };
/// let mut sampler = Sampler::new(greedy, 42);
/// assert_eq!(sampler.sample(&[0.1, 2.0, -1.0]), 1);
/// ```
pub struct Sampler {
    config: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    /// A sampler drawing with `config` from a generator seeded with `seed`.
    pub fn new(config: SamplingConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The index of the chosen token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 {
                        (i, l)
                    } else {
                        best
                    }
                })
                .0 as u32
        };
        if self.config.temperature == 0.0 {
            return argmax();
        }
        let candidates = self.distribution(logits);
        let total: f64 = candidates.iter().map(|&(_, p)| p).sum();
        let mut u = self.rng.random::<f64>() * total;
        for &(id, p) in &candidates {
            if u < p {
                return id;
            }
            u -= p;
        }
        // Rounding can leave u a hair above the last weight.
        candidates.last().map_or_else(argmax, |&(id, _)| id)
    }

    /// The allowed tokens with unnormalised probabilities, most likely first.
    fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let scaled: Vec<f64> = logits
            .iter()
            .map(|&l| l as f64 / self.config.temperature)
            .collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut probs: Vec<(u32, f64)> = scaled
            .iter()
            .enumerate()
            .map(|(i, &s)| (i as u32, (s - max).exp()))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.config.top_k {
            probs.truncate(k.max(1));
        }
        if let Some(p) = self.config.top_p {
            let total: f64 = probs.iter().map(|&(_, q)| q).sum();
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|&(_, q)| {
                    cumulative += q / total;
                    cumulative >= p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        probs
    }
}

/// The logits `[1, V]` after reading `ids` from the zero state, and the state then.
///
/// The prompt goes through the GRU as whole sequences (chunks of [`CHUNK`]), so a long
/// prompt costs a few large matrix products rather than one small step per character.
/// An empty prompt gives the model's prediction from the zero state.
pub fn prime(model: &CharGru, ids: &[u32]) -> CandleResult<(Tensor, State)> {
    let mut state = model.zero_state(1)?;
    let mut logits = model.logits(&state)?; // [1, V]
    for chunk in ids.chunks(CHUNK) {
        let (chunk_logits, next) =
            model.forward(&ids_tensor(&[chunk], model.device())?, Some(&state), None)?; // [1, C, V]
        logits = chunk_logits.i((.., chunk.len() - 1))?; // [1, V]
        state = next;
    }
    Ok((logits, state))
}

/// Generates up to `length` token ids after `prompt` for each of `samples` sequences, run
/// through the model together as one batch. Each id goes to `emit(sample, id)` as soon as
/// it is drawn; `emit` returns `false` when that sample should stop. Each new character
/// costs one GRU step, whatever the prompt's length. Returns how many ids each sample got.
pub fn generate(
    model: &CharGru,
    prompt: &[u32],
    length: usize,
    samples: usize,
    sampler: &mut Sampler,
    emit: impl FnMut(usize, u32) -> bool,
) -> CandleResult<Vec<usize>> {
    let (logits, state) = prime(model, prompt)?;
    generate_from(model, &logits, &state, length, samples, sampler, emit)
}

/// [`generate`] from a model already primed: `logits` `[1, V]` and `state` as [`prime`] returns them.
pub fn generate_from(
    model: &CharGru,
    logits: &Tensor,
    state: &[Tensor],
    length: usize,
    samples: usize,
    sampler: &mut Sampler,
    mut emit: impl FnMut(usize, u32) -> bool,
) -> CandleResult<Vec<usize>> {
    let logits = logits.repeat((samples, 1))?; // [S, V]
    let state: State = state
        .iter()
        .map(|h| h.repeat((samples, 1)))
        .collect::<CandleResult<_>>()?; // [S, H] each
    let vocab = logits.dim(1)?;
    let mut logits = logits.flatten_all()?.to_vec1::<f32>()?;
    let mut stepper = Stepper::new(model, state)?;
    let mut produced = vec![0; samples];
    let mut active = vec![true; samples];
    let mut ids = vec![0u32; samples];
    for step in 0..length {
        for (s, row) in logits.chunks_exact(vocab).enumerate() {
            if !active[s] {
                continue;
            }
            ids[s] = sampler.sample(row);
            produced[s] += 1;
            active[s] = emit(s, ids[s]);
        }
        if step + 1 == length || !active.contains(&true) {
            break;
        }
        logits = stepper.step(&ids)?;
    }
    Ok(produced)
}

/// How generation advances: on the CPU without tensors, elsewhere through [`CharGru::step`].
enum Stepper<'m> {
    Cpu(CpuStepper),
    Tensors { model: &'m CharGru, state: State },
}

impl<'m> Stepper<'m> {
    fn new(model: &'m CharGru, state: State) -> CandleResult<Self> {
        Ok(if model.device().is_cpu() {
            Stepper::Cpu(CpuStepper::new(model, &state)?)
        } else {
            Stepper::Tensors { model, state }
        })
    }

    /// Feeds one token per sequence; the next logits, `[S, V]` row-major.
    fn step(&mut self, ids: &[u32]) -> CandleResult<Vec<f32>> {
        match self {
            Stepper::Cpu(stepper) => stepper.step(ids),
            Stepper::Tensors { model, state } => {
                let input = Tensor::new(ids, model.device())?; // [S]
                let (logits, next) = model.step(&input, state)?;
                *state = next;
                logits.flatten_all()?.to_vec1::<f32>()
            }
        }
    }
}
