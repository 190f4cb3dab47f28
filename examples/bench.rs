//! Speed benchmark: training steps and generation for the performance issue's reference
//! configurations, ours next to candle-nn's built-in GRU, with a large-matmul ceiling.
//!
//! Run: `cargo run --release --example bench [-- --steps 5 --chars 500]`. Each measurement
//! runs in its own child process so its peak memory is its own; the parent prints a table
//! and one JSON object. Threads: candle's default (RAYON_NUM_THREADS, else every core).
//!
//! A training step = forward over `[N, T]` ids, cross-entropy, backward, global-norm
//! clipping and an AdamW update; generation = batch 1, one character at a time with the
//! hidden state carried, sampling at temperature 1.

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::rnn::{gru, GRUConfig, RNN};
use candle_nn::{
    embedding, linear, AdamW, Embedding, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap,
};
use chargru::model::cross_entropy;
use chargru::optim::{clip_scale, grad_norm, AdamW as OurAdamW, AdamWConfig};
use chargru::params::ParamStore;
use chargru::{CharGru, ModelConfig, Sampler, SamplingConfig};
use serde_json::{json, Value};

/// A reference configuration of the performance issue.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    vocab: usize,
    embed: usize,
    hidden: usize,
    layers: usize,
    batch: usize,
    seq: usize,
}

const CONFIGS: [Config; 2] = [
    Config {
        name: "S",
        vocab: 65,
        embed: 64,
        hidden: 256,
        layers: 2,
        batch: 32,
        seq: 64,
    },
    Config {
        name: "M",
        vocab: 65,
        embed: 128,
        hidden: 512,
        layers: 2,
        batch: 64,
        seq: 100,
    },
];

impl Config {
    /// Multiply-add FLOPs of the matrix products of one training token (forward 1×, backward 2×).
    fn train_flops_per_token(&self) -> f64 {
        let h = self.hidden as f64;
        let mut forward = 2.0 * self.vocab as f64 * h;
        for l in 0..self.layers {
            let input = if l == 0 { self.embed } else { self.hidden } as f64;
            forward += 2.0 * 3.0 * h * (input + h);
        }
        3.0 * forward
    }

    fn model(&self) -> ModelConfig {
        ModelConfig {
            vocab_size: self.vocab,
            embed_dim: self.embed,
            hidden_size: self.hidden,
            num_layers: self.layers,
            dropout: 0.0,
        }
    }

    fn ids(&self) -> Result<Tensor> {
        let ids: Vec<u32> = (0..self.batch * self.seq)
            .map(|k| ((k * 7919) % self.vocab) as u32)
            .collect();
        Tensor::from_vec(ids, (self.batch, self.seq), &Device::Cpu)
    }
}

/// candle-nn's GRU language model of the same sizes (its own GRU equations).
struct CandleNnModel {
    embedding: Embedding,
    layers: Vec<candle_nn::rnn::GRU>,
    head: Linear,
}

impl CandleNnModel {
    fn new(c: &Config, vb: VarBuilder) -> Result<Self> {
        let layers = (0..c.layers)
            .map(|l| {
                let input = if l == 0 { c.embed } else { c.hidden };
                gru(
                    input,
                    c.hidden,
                    GRUConfig::default(),
                    vb.pp(format!("gru{l}")),
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            embedding: embedding(c.vocab, c.embed, vb.pp("embedding"))?,
            layers,
            head: linear(c.hidden, c.vocab, vb.pp("head"))?,
        })
    }

    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let mut xs = self.embedding.forward(ids)?;
        for layer in &self.layers {
            let states = layer.seq(&xs)?;
            // candle-nn concatenates the states to [N, T·H].
            xs = layer.states_to_tensor(&states)?.reshape((n, t, ()))?;
        }
        self.head.forward(&xs)
    }
}

/// Seconds per call of `f`, the median of `runs` after `warmup` untimed calls.
fn median_seconds(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn train_ours(c: &Config, steps: usize) -> Result<f64> {
    let params = ParamStore::new(1);
    let model = CharGru::new(&c.model(), params.var_builder(DType::F32, &Device::Cpu))?;
    let mut optimizer = OurAdamW::new(params.vars(), AdamWConfig::default())?;
    let ids = c.ids()?;
    let seconds = median_seconds(2, steps, || {
        let (logits, _) = model.forward(&ids, None, None)?;
        let loss = cross_entropy(&logits, &ids)?;
        let grads = loss.backward()?;
        let norm = grad_norm(&grads, optimizer.params())?;
        optimizer.step(&grads, 1e-3, clip_scale(norm, 1.0))
    })?;
    Ok((c.batch * c.seq) as f64 / seconds)
}

fn train_candle_nn(c: &Config, steps: usize) -> Result<f64> {
    let varmap = VarMap::new();
    let model = CandleNnModel::new(
        c,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let vars = varmap.all_vars();
    let mut optimizer = AdamW::new(vars.clone(), ParamsAdamW::default())?;
    let ids = c.ids()?;
    let named: Vec<(String, candle_core::Var)> =
        vars.iter().map(|v| (String::new(), v.clone())).collect();
    let seconds = median_seconds(2, steps, || {
        let logits = model.forward(&ids)?;
        let loss = cross_entropy(&logits, &ids)?;
        let mut grads = loss.backward()?;
        let scale = clip_scale(grad_norm(&grads, &named)?, 1.0);
        for var in &vars {
            if let Some(g) = grads.remove(var) {
                grads.insert(var, (g * scale)?);
            }
        }
        optimizer.step(&grads)
    })?;
    Ok((c.batch * c.seq) as f64 / seconds)
}

fn generate_ours(c: &Config, chars: usize) -> Result<f64> {
    let params = ParamStore::new(1);
    let model = CharGru::new(&c.model(), params.var_builder(DType::F32, &Device::Cpu))?;
    let mut sampler = Sampler::new(SamplingConfig::default(), 1);
    let seconds = median_seconds(1, 3, || {
        chargru::sample::generate(&model, &[0], chars, 1, &mut sampler, |_, _| true)?;
        Ok(())
    })?;
    Ok(chars as f64 / seconds)
}

fn generate_candle_nn(c: &Config, chars: usize) -> Result<f64> {
    let varmap = VarMap::new();
    let model = CandleNnModel::new(
        c,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let mut sampler = Sampler::new(SamplingConfig::default(), 1);
    let seconds = median_seconds(1, 3, || {
        let mut states: Vec<_> = model
            .layers
            .iter()
            .map(|l| l.zero_state(1))
            .collect::<Result<_>>()?;
        let mut id = 0u32;
        for _ in 0..chars {
            let mut x = model
                .embedding
                .forward(&Tensor::new(&[id], &Device::Cpu)?)?;
            for (layer, state) in model.layers.iter().zip(states.iter_mut()) {
                *state = layer.step(&x, state)?;
                x = state.h().clone();
            }
            let logits = model.head.forward(&x)?.squeeze(0)?;
            id = sampler.sample(&logits.to_vec1::<f32>()?);
        }
        Ok(())
    })?;
    Ok(chars as f64 / seconds)
}

/// GFLOP/s of a large square f32 matrix product: the machine's practical ceiling in candle.
fn matmul_gflops() -> Result<f64> {
    let n = 2048;
    let a = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1.0, (n, n), &Device::Cpu)?;
    let seconds = median_seconds(1, 5, || {
        a.matmul(&b)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    })?;
    Ok(2.0 * (n * n * n) as f64 / seconds / 1e9)
}

/// The most resident memory this process has used, in MB.
fn peak_memory_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs one measurement in this process and prints it as JSON.
fn child(case: &[String], steps: usize, chars: usize) -> Result<()> {
    let config = |name: &str| {
        CONFIGS
            .iter()
            .find(|c| c.name == name)
            .copied()
            .expect("S or M")
    };
    let value = match case.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["matmul"] => matmul_gflops()?,
        ["train", c, "ours"] => train_ours(&config(c), steps)?,
        ["train", c, "candle-nn"] => train_candle_nn(&config(c), steps)?,
        ["generate", c, "ours"] => generate_ours(&config(c), chars)?,
        ["generate", c, "candle-nn"] => generate_candle_nn(&config(c), chars)?,
        _ => candle_core::bail!("unknown case {case:?}"),
    };
    println!("{}", json!({"value": value, "peak_mb": peak_memory_mb()}));
    Ok(())
}

fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = flag(&args, "--steps", 5);
    let chars = flag(&args, "--chars", 500);
    if let Some(i) = args.iter().position(|a| a == "--case") {
        return child(&args[i + 1..], steps, chars);
    }
    let me = std::env::current_exe()?;
    let run = |case: &[&str]| -> Value {
        let output = Command::new(&me)
            .args([
                "--steps",
                &steps.to_string(),
                "--chars",
                &chars.to_string(),
                "--case",
            ])
            .args(case)
            .output()
            .expect("the benchmark can run itself");
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|_| {
            panic!(
                "{case:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    };
    let matmul = run(&["matmul"]);
    let peak = matmul["value"].as_f64().unwrap_or(f64::NAN);
    println!(
        "matmul 2048³ ceiling: {peak:.0} GFLOP/s ({} threads)",
        candle_core::utils::get_num_threads()
    );
    println!(
        "{:<10} {:<6} {:>14} {:>14} {:>8} {:>9} {:>10} {:>10}",
        "task", "config", "ours", "candle-nn", "ratio", "% peak", "ours MB", "cnn MB"
    );
    let mut results = Vec::new();
    for task in ["train", "generate"] {
        for c in CONFIGS {
            let ours = run(&[task, c.name, "ours"]);
            let theirs = run(&[task, c.name, "candle-nn"]);
            let (o, t) = (
                ours["value"].as_f64().unwrap_or(0.0),
                theirs["value"].as_f64().unwrap_or(0.0),
            );
            let unit = if task == "train" {
                "tokens/s"
            } else {
                "chars/s"
            };
            let peak_fraction =
                (task == "train").then(|| o * c.train_flops_per_token() / 1e9 / peak);
            println!(
                "{task:<10} {:<6} {:>14} {:>14} {:>7.2}× {:>9} {:>10.0} {:>10.0}",
                c.name,
                format!("{o:.0} {unit}"),
                format!("{t:.0}"),
                o / t,
                peak_fraction.map_or_else(|| "–".to_string(), |f| format!("{:.1}%", 100.0 * f)),
                ours["peak_mb"].as_f64().unwrap_or(f64::NAN),
                theirs["peak_mb"].as_f64().unwrap_or(f64::NAN),
            );
            results.push(json!({
                "task": task, "config": c.name, "unit": unit,
                "ours": o, "candle_nn": t, "ratio": o / t,
                "fraction_of_matmul_peak": peak_fraction,
                "ours_peak_mb": ours["peak_mb"], "candle_nn_peak_mb": theirs["peak_mb"],
            }));
        }
    }
    println!(
        "{}",
        json!({"matmul_gflops": peak, "threads": candle_core::utils::get_num_threads(), "results": results})
    );
    Ok(())
}
