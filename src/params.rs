//! Trainable parameters: named candle `Var`s, drawn from a seeded generator when first asked for.
//!
//! candle's CPU device cannot be seeded, so a `VarMap` would give a different model each
//! run. `ParamStore` is a `VarBuilder` backend that draws each new parameter from its own
//! `StdRng` instead; the layers ask for their weights in a fixed order, so a seed fixes
//! the whole initial model, on any device.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// A shared, seeded store of named trainable parameters.
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    vars: BTreeMap<String, Var>,
    rng: StdRng,
}

impl ParamStore {
    /// An empty store whose new parameters are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                vars: BTreeMap::new(),
                rng: StdRng::seed_from_u64(seed),
            })),
        }
    }

    /// A store that already holds `tensors` (for example a checkpoint's) as trainable variables.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, Tensor)>) -> Result<Self> {
        let store = Self::new(0);
        {
            let mut inner = store.lock();
            for (name, tensor) in tensors {
                inner.vars.insert(name, Var::from_tensor(&tensor)?);
            }
        }
        Ok(store)
    }

    /// A `VarBuilder` that creates (or finds) parameters in this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// Every parameter with its name, in name order (a fixed order keeps sums reproducible).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.lock()
            .vars
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still whole.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let mut inner = self.lock();
        if let Some(var) = inner.vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter {name} has shape {:?}, expected {shape:?}",
                    var.shape()
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let values = draw(&init, &shape, &mut inner.rng);
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?;
        let var = Var::from_tensor(&tensor)?;
        inner.vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _device: &Device) -> Result<Tensor> {
        match self.lock().vars.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("no parameter named {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().vars.contains_key(name)
    }
}

/// `shape.elem_count()` values drawn as `init` asks, from `rng`.
fn draw(init: &Init, shape: &Shape, rng: &mut StdRng) -> Vec<f32> {
    let count = shape.elem_count();
    let normal = |rng: &mut StdRng, mean: f64, stdev: f64| {
        let x: f64 = StandardNormal.sample(rng);
        (mean + stdev * x) as f32
    };
    match *init {
        Init::Const(value) => vec![value as f32; count],
        Init::Uniform { lo, up } => (0..count)
            .map(|_| rng.random_range(lo..up) as f32)
            .collect(),
        Init::Randn { mean, stdev } => (0..count).map(|_| normal(rng, mean, stdev)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let stdev = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * stdev;
                    (0..count)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect()
                }
                candle_nn::init::NormalOrUniform::Normal => {
                    (0..count).map(|_| normal(rng, 0.0, stdev)).collect()
                }
            }
        }
    }
}
