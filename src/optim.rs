//! AdamW with decoupled weight decay, and gradient clipping by global norm.
//!
//! Written here rather than taken from `candle_nn::AdamW` so the moments are reachable
//! (a resumable run has to save them) and parameters are visited in a fixed order.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// AdamW's hyper-parameters, apart from the learning rate which changes per step.
#[derive(Clone, Debug)]
pub struct AdamWConfig {
    /// Decay rate of the first moment.
    pub beta1: f64,
    /// Decay rate of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment to avoid dividing by zero.
    pub eps: f64,
    /// Decoupled weight decay, applied as `θ ← θ − lr·λ·θ`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The AdamW optimizer over a fixed list of named variables.
pub struct AdamW {
    params: Vec<(String, Var)>,
    first_moment: Vec<Tensor>,
    second_moment: Vec<Tensor>,
    steps_taken: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// An optimizer for `params`, with zero moments.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let zeros = |params: &[(String, Var)]| -> Result<Vec<Tensor>> {
            params.iter().map(|(_, var)| var.zeros_like()).collect()
        };
        Ok(Self {
            first_moment: zeros(&params)?,
            second_moment: zeros(&params)?,
            params,
            steps_taken: 0,
            config,
        })
    }

    /// The variables being optimised, in a fixed order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Updates taken so far (the `t` of Adam's bias correction).
    pub fn steps_taken(&self) -> usize {
        self.steps_taken
    }

    /// Each parameter's name with its first and second moment, for saving.
    pub fn moments(&self) -> impl Iterator<Item = (&str, &Tensor, &Tensor)> {
        self.params
            .iter()
            .zip(self.first_moment.iter().zip(&self.second_moment))
            .map(|((name, _), (m, v))| (name.as_str(), m, v))
    }

    /// Puts back a saved state: steps taken and `moment(name)` = (first, second) for every parameter.
    pub fn restore(
        &mut self,
        steps_taken: usize,
        mut moment: impl FnMut(&str) -> Option<(Tensor, Tensor)>,
    ) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            let Some((m, v)) = moment(name) else {
                candle_core::bail!("the saved optimizer state has no moments for {name}")
            };
            if m.shape() != var.shape() || v.shape() != var.shape() {
                candle_core::bail!(
                    "the saved moments of {name} do not have its shape {:?}",
                    var.shape()
                )
            }
            self.first_moment[i] = m.to_device(var.device())?;
            self.second_moment[i] = v.to_device(var.device())?;
        }
        self.steps_taken = steps_taken;
        Ok(())
    }

    /// One update with learning rate `lr`, gradients scaled by `grad_scale` (for clipping).
    pub fn step(&mut self, grads: &GradStore, lr: f64, grad_scale: f64) -> Result<()> {
        self.steps_taken += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let t = self.steps_taken as i32;
        let m_correction = 1.0 / (1.0 - beta1.powi(t));
        let v_correction = 1.0 / (1.0 - beta2.powi(t));
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(var) else { continue };
            let grad = (grad * grad_scale)?;
            let m = ((&self.first_moment[i] * beta1)? + (&grad * (1.0 - beta1))?)?;
            let v = ((&self.second_moment[i] * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let update = ((&m * m_correction)? / ((&v * v_correction)?.sqrt()? + eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.first_moment[i] = m;
            self.second_moment[i] = v;
        }
        Ok(())
    }
}

/// The global L2 norm of all gradients of `params` (summed in their order).
pub fn grad_norm(grads: &GradStore, params: &[(String, Var)]) -> Result<f64> {
    let mut sum = 0.0f64;
    for (_, var) in params {
        if let Some(grad) = grads.get(var) {
            sum += grad
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sum.sqrt())
}

/// The factor that brings a gradient of global norm `norm` down to `max_norm` (1 if already within).
pub fn clip_scale(norm: f64, max_norm: f64) -> f64 {
    if norm > max_norm {
        max_norm / norm
    } else {
        1.0
    }
}
