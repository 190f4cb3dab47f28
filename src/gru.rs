//! A GRU layer written out from SPEC's equations over candle tensors.
//!
//! For input `i_t` and previous state `h_{t-1}`:
//!
//! ```text
//! z_t = σ(W_z i_t + U_z h_{t-1} + b_z)               update gate
//! r_t = σ(W_r i_t + U_r h_{t-1} + b_r)               reset gate
//! h̃_t = tanh(W_h i_t + U_h (r_t ⊙ h_{t-1}) + b_h)    candidate: reset BEFORE U_h
//! h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t              z weights the NEW candidate
//! ```
//!
//! This differs from PyTorch's `nn.GRU` and `candle_nn::GRU`, which apply the reset gate
//! after the recurrent product and let `z` weight the old state. The three gates' weights
//! are stored stacked in the order z, r, h, as SPEC's checkpoint table says.
//!
//! Shapes use torch-rnn's names: N batch, T time, I input features, H hidden units.

use candle_core::{DType, IndexOp, Result, Tensor};
use candle_nn::ops::sigmoid;
use candle_nn::{Init, VarBuilder};

use crate::cpu_gru::{GruSequence, Sizes};

/// A gated recurrent unit layer, usable on its own like Keras' `layers.GRU`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use chargru::Gru;
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let gru = Gru::new(3, 5, vb)?; // I = 3 inputs, H = 5 units
/// let xs = Tensor::zeros((2, 7, 3), DType::F32, &Device::Cpu)?; // [N, T, I]
/// let (ys, h_last) = gru.forward(&xs, None)?;
/// assert_eq!(ys.dims(), &[2, 7, 5]); // every step's output, [N, T, H]
/// assert_eq!(h_last.dims(), &[2, 5]); // the final state, [N, H]
/// # Ok::<(), candle_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gru {
    weight_x: Tensor, // [3H, I]: W_z, W_r, W_h
    weight_h: Tensor, // [3H, H]: U_z, U_r, U_h
    bias: Tensor,     // [3H]:    b_z, b_r, b_h
    input_size: usize,
    hidden_size: usize,
    autograd_only: bool,
}

/// The recurrent weights split and transposed once per sequence, for `h @ Uᵀ` products.
struct RecurrentWeights {
    u_zr: Tensor, // [H, 2H]: (U_z; U_r)ᵀ
    u_h: Tensor,  // [H, H]:  U_hᵀ
}

impl Gru {
    /// A layer mapping `input_size` features to `hidden_size` units; weights come from `vb`
    /// as `weight_x`, `weight_h` and `bias`, initialised uniformly in ±1/√H when new.
    pub fn new(input_size: usize, hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (hidden_size as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight_x = vb.get_with_hints((3 * hidden_size, input_size), "weight_x", init)?;
        let weight_h = vb.get_with_hints((3 * hidden_size, hidden_size), "weight_h", init)?;
        let bias = vb.get_with_hints(3 * hidden_size, "bias", init)?;
        Ok(Self {
            weight_x,
            weight_h,
            bias,
            input_size,
            hidden_size,
            autograd_only: false,
        })
    }

    /// Makes [`Gru::forward`] always use the candle-autograd composition, even where the
    /// CPU fast path applies: the reference for tests and benchmarks.
    pub fn set_autograd_only(&mut self, on: bool) {
        self.autograd_only = on;
    }

    /// Number of input features, I.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Number of hidden units, H.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// `[W_z; W_r; W_h]`, shape `[3H, I]`.
    pub fn weight_x(&self) -> &Tensor {
        &self.weight_x
    }

    /// `[U_z; U_r; U_h]`, shape `[3H, H]`.
    pub fn weight_h(&self) -> &Tensor {
        &self.weight_h
    }

    /// `[b_z; b_r; b_h]`, shape `[3H]`.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The all-zero state SPEC starts from, `[N, H]`.
    pub fn zero_state(&self, batch: usize) -> Result<Tensor> {
        Tensor::zeros(
            (batch, self.hidden_size),
            self.weight_h.dtype(),
            self.weight_h.device(),
        )
    }

    /// The input half of every gate for every step at once: `W i_t + b`, `[N, T, I] → [N, T, 3H]`.
    ///
    /// One large matrix product instead of T small ones: the part of a GRU that needs no
    /// recurrence runs at full matrix-multiply speed.
    pub fn project_inputs(&self, xs: &Tensor) -> Result<Tensor> {
        let (n, t, i) = xs.dims3()?;
        let flat = xs.contiguous()?.reshape((n * t, i))?; // [N·T, I]
        flat.matmul(&self.weight_x.t()?)? // [N·T, 3H]
            .broadcast_add(&self.bias)?
            .reshape((n, t, 3 * self.hidden_size)) // [N, T, 3H]
    }

    /// Runs a whole sequence `xs` (`[N, T, I]`) from `h0` (`[N, H]`, zeros when `None`).
    ///
    /// Returns every step's output `[N, T, H]` and the final state `[N, H]`.
    ///
    /// On the CPU in f32 or f64 this runs the hand-written forward and backward of
    /// [`crate::cpu_gru`]; elsewhere, and in [`Gru::forward_autograd`], the same equations
    /// are composed of candle operations.
    pub fn forward(&self, xs: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (n, t, i) = xs.dims3()?;
        let fast = !self.autograd_only
            && xs.device().is_cpu()
            && matches!(xs.dtype(), DType::F32 | DType::F64)
            && t > 0;
        if !fast {
            return self.forward_autograd(xs, h0);
        }
        let h0 = match h0 {
            Some(h0) => h0.contiguous()?,
            None => self.zero_state(n)?,
        };
        // One vector of weights, since a candle op takes at most three inputs.
        let weights = Tensor::cat(
            &[
                self.weight_x.flatten_all()?,
                self.weight_h.flatten_all()?,
                self.bias.clone(),
            ],
            0,
        )?;
        let sizes = Sizes {
            n,
            t,
            i,
            h: self.hidden_size,
        };
        let ys = xs
            .contiguous()?
            .apply_op3(&h0, &weights, GruSequence::new(sizes))?; // [N, T, H]
        let h_last = ys.narrow(1, t - 1, 1)?.squeeze(1)?; // [N, H]
        Ok((ys, h_last))
    }

    /// [`Gru::forward`] composed of candle operations and differentiated by candle's
    /// autograd: runs on any device, and is the reference the CPU fast path is tested against.
    pub fn forward_autograd(&self, xs: &Tensor, h0: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (n, t, _) = xs.dims3()?;
        let gx = self.project_inputs(xs)?; // [N, T, 3H]
        let u = self.recurrent_weights()?;
        let mut h = match h0 {
            Some(h0) => h0.clone(),
            None => self.zero_state(n)?,
        };
        // candle's backward of a slice is a zero-padded copy of the whole sliced tensor, so
        // slicing each step out of [N, T, 3H] would cost T full copies in the backward pass.
        // Slicing blocks of ~√T steps first, then steps out of a block, costs about 2√T.
        let block = (t as f64).sqrt().ceil().max(1.0) as usize;
        let mut ys = Vec::with_capacity(t);
        for start in (0..t).step_by(block) {
            let gx_block = gx.narrow(1, start, block.min(t - start))?; // [N, B, 3H]
            for step in 0..gx_block.dim(1)? {
                h = self.recur(&gx_block.i((.., step))?, &h, &u)?;
                ys.push(h.clone());
            }
        }
        Ok((Tensor::stack(&ys, 1)?, h)) // [N, T, H], [N, H]
    }

    /// Advances one step: input `x` (`[N, I]`) and state `h` (`[N, H]`) give the next state `[N, H]`.
    pub fn step(&self, x: &Tensor, h: &Tensor) -> Result<Tensor> {
        let gx = x.matmul(&self.weight_x.t()?)?.broadcast_add(&self.bias)?; // [N, 3H]
        self.recur(&gx, h, &self.recurrent_weights()?)
    }

    fn recurrent_weights(&self) -> Result<RecurrentWeights> {
        let hs = self.hidden_size;
        Ok(RecurrentWeights {
            u_zr: self.weight_h.narrow(0, 0, 2 * hs)?.t()?,
            u_h: self.weight_h.narrow(0, 2 * hs, hs)?.t()?,
        })
    }

    /// SPEC's four equations, given the input half of the gates `gx` = `W i_t + b` (`[N, 3H]`).
    fn recur(&self, gx: &Tensor, h_prev: &Tensor, u: &RecurrentWeights) -> Result<Tensor> {
        let hs = self.hidden_size;
        // z_t and r_t share one product h_{t-1} (U_z; U_r)ᵀ and one sigmoid.
        let zr = sigmoid(&(gx.narrow(1, 0, 2 * hs)? + h_prev.matmul(&u.u_zr)?)?)?; // [N, 2H]
        let z = zr.narrow(1, 0, hs)?; // z_t [N, H]
        let r = zr.narrow(1, hs, hs)?; // r_t [N, H]
        let h_cand = (gx.narrow(1, 2 * hs, hs)? + (&r * h_prev)?.matmul(&u.u_h)?)?.tanh()?; // h̃_t [N, H]
        (z.affine(-1.0, 1.0)? * h_prev)? + (&z * &h_cand)? // h_t [N, H]
    }
}
