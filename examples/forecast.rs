//! The design note's Keras forecasting example, rebuilt on chargru's GRU layer.
//!
//! Keras: `Sequential([GRU(50, input_shape=(10, 1)), Dense(1)])`, compiled with
//! `loss="mse", optimizer="adam"`. Here: the same model over windows of 10 values of a
//! noisy sine wave, predicting the next value. It prints the validation mean squared error
//! as it falls and compares it with the naive forecast "the next value equals the last one".
//!
//! Run: `cargo run --release --example forecast [steps]`.

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use candle_nn::{
    linear, loss::mse, AdamW, Linear, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap,
};
use chargru::Gru;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Values per input window.
const WINDOW: usize = 10;
/// GRU units, as in the Keras example.
const UNITS: usize = 50;

/// The outcome of a training run.
pub struct Forecast {
    /// Validation MSE after each evaluation, in order.
    pub val_mse: Vec<f64>,
    /// Validation MSE of predicting the window's last value.
    pub baseline_mse: f64,
}

/// A GRU over the window, then a dense layer from its final state to one number.
struct Model {
    gru: Gru,
    dense: Linear,
}

impl Model {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gru: Gru::new(1, UNITS, vb.pp("gru"))?,
            dense: linear(UNITS, 1, vb.pp("dense"))?,
        })
    }

    /// Windows `[N, WINDOW, 1]` → forecasts `[N, 1]`.
    fn forward(&self, windows: &Tensor) -> Result<Tensor> {
        let (_, h_last) = self.gru.forward(windows, None)?; // [N, UNITS]
        self.dense.forward(&h_last)
    }
}

/// `sin(0.1 k)` plus Gaussian-ish noise of standard deviation 0.1, for k = 0..len.
fn noisy_sine(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len)
        .map(|k| {
            // The sum of 12 uniforms minus 6 is close to a unit normal.
            let noise: f32 = (0..12).map(|_| rng.random::<f32>()).sum::<f32>() - 6.0;
            (0.1 * k as f32).sin() + 0.1 * noise
        })
        .collect()
}

/// Every window of the series with the value that follows it: `[N, WINDOW, 1]` and `[N, 1]`.
fn windows(series: &[f32], device: &Device) -> Result<(Tensor, Tensor)> {
    let n = series.len() - WINDOW;
    let inputs: Vec<f32> = (0..n)
        .flat_map(|i| series[i..i + WINDOW].to_vec())
        .collect();
    let targets: Vec<f32> = series[WINDOW..].to_vec();
    Ok((
        Tensor::from_vec(inputs, (n, WINDOW, 1), device)?,
        Tensor::from_vec(targets, (n, 1), device)?,
    ))
}

/// Trains for `steps` Adam steps on mini-batches of 64 windows, evaluating every 50.
pub fn run(steps: usize, seed: u64, mut report: impl FnMut(usize, f64)) -> Result<Forecast> {
    let device = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(seed);
    let series = noisy_sine(3000, &mut rng);
    let split = series.len() * 8 / 10;
    let (train_x, train_y) = windows(&series[..split], &device)?;
    let (val_x, val_y) = windows(&series[split..], &device)?;

    // The naive forecast: tomorrow equals today.
    let last = val_x.i((.., WINDOW - 1))?; // [N, 1]
    let baseline_mse = mse(&last, &val_y)?.to_scalar::<f32>()? as f64;

    let varmap = VarMap::new();
    let model = Model::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let adam = ParamsAdamW {
        lr: 5e-3,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    let mut optimizer = AdamW::new(varmap.all_vars(), adam)?;
    let train_len = train_x.dim(0)?;
    let mut val_mse = Vec::new();
    for step in 1..=steps {
        let rows: Vec<u32> = (0..64)
            .map(|_| rng.random_range(0..train_len as u32))
            .collect();
        let rows = Tensor::new(rows.as_slice(), &device)?;
        let loss = mse(
            &model.forward(&train_x.index_select(&rows, 0)?)?,
            &train_y.index_select(&rows, 0)?,
        )?;
        optimizer.backward_step(&loss)?;
        if step % 50 == 0 || step == steps {
            let mse = mse(&model.forward(&val_x)?, &val_y)?.to_scalar::<f32>()? as f64;
            report(step, mse);
            val_mse.push(mse);
        }
    }
    Ok(Forecast {
        val_mse,
        baseline_mse,
    })
}

#[allow(dead_code)] // The test suite includes this file for `run` alone.
fn main() -> Result<()> {
    let steps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    println!("GRU({UNITS}) over windows of {WINDOW} values of a noisy sine, then Dense(1); MSE loss, Adam");
    let forecast = run(steps, 7, |step, mse| {
        println!("step {step:>5}: validation MSE {mse:.5}")
    })?;
    let last = forecast.val_mse.last().copied().unwrap_or(f64::NAN);
    println!(
        "validation MSE {last:.5} vs {:.5} for repeating the last value ({:.1}× lower)",
        forecast.baseline_mse,
        forecast.baseline_mse / last
    );
    Ok(())
}
