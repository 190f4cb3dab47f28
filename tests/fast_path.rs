//! The CPU fast path computes the same function as the candle-autograd composition of
//! SPEC's equations: same loss, same gradient for every parameter.

use candle_core::{DType, Device, Result, Tensor};
use chargru::model::cross_entropy;
use chargru::params::ParamStore;
use chargru::{CharGru, ModelConfig};

const V: usize = 23;
const H: usize = 19;
const LAYERS: usize = 3;
const N: usize = 5;
const T: usize = 13;

/// A loss and each parameter's gradient, by name.
type LossAndGradients = (f64, Vec<(String, Vec<f32>)>);

/// Loss and every parameter's gradient of a 3-layer model on a fixed batch from a fixed,
/// non-zero initial state, with the fast path on or off.
fn loss_and_gradients(autograd_only: bool) -> Result<LossAndGradients> {
    let config = ModelConfig {
        vocab_size: V,
        embed_dim: 7,
        hidden_size: H,
        num_layers: LAYERS,
        dropout: 0.0,
    };
    let params = ParamStore::new(11);
    let mut model = CharGru::new(&config, params.var_builder(DType::F32, &Device::Cpu))?;
    model.set_autograd_only(autograd_only);
    let ids: Vec<u32> = (0..N * T).map(|k| ((k * 7 + k / 5) % V) as u32).collect();
    let targets: Vec<u32> = ids.iter().map(|&id| (id * 3 + 1) % V as u32).collect();
    let ids = Tensor::from_vec(ids, (N, T), &Device::Cpu)?;
    let targets = Tensor::from_vec(targets, (N, T), &Device::Cpu)?;
    let state: Vec<Tensor> = (0..LAYERS)
        .map(|l| {
            let values: Vec<f32> = (0..N * H)
                .map(|k| ((k * 13 + l * 5) % 17) as f32 / 17.0 - 0.5)
                .collect();
            Tensor::from_vec(values, (N, H), &Device::Cpu)
        })
        .collect::<Result<_>>()?;
    let (logits, last) = model.forward(&ids, Some(&state), None)?;
    // Weigh the final state into the loss so its gradient path is checked too.
    let loss = (cross_entropy(&logits, &targets)? + last[LAYERS - 1].sqr()?.mean_all()?)?;
    let grads = loss.backward()?;
    let mut gradients = Vec::new();
    for (name, var) in params.vars() {
        let g = grads.get(&var).expect("every parameter has a gradient");
        gradients.push((name, g.flatten_all()?.to_vec1::<f32>()?));
    }
    Ok((loss.to_scalar::<f32>()? as f64, gradients))
}

#[test]
fn the_fast_path_matches_autograd_in_loss_and_every_gradient() -> Result<()> {
    let fast = loss_and_gradients(false)?;
    let reference = loss_and_gradients(true)?;
    assert!(
        (fast.0 - reference.0).abs() <= 1e-5 * reference.0.abs(),
        "loss {} vs {}",
        fast.0,
        reference.0
    );
    assert_eq!(fast.1.len(), 3 * LAYERS + 3);
    for ((name, a), (_, b)) in fast.1.iter().zip(&reference.1) {
        let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-5 * scale,
            "{name}: gradients differ by {worst} (largest {scale})"
        );
    }
    Ok(())
}

#[test]
fn fast_and_autograd_sequences_agree_in_f64() -> Result<()> {
    let config = ModelConfig {
        vocab_size: V,
        embed_dim: 4,
        hidden_size: H,
        num_layers: 2,
        dropout: 0.0,
    };
    let params = ParamStore::new(5);
    let mut model = CharGru::new(&config, params.var_builder(DType::F64, &Device::Cpu))?;
    let ids = Tensor::from_vec(
        (0..N * T).map(|k| (k % V) as u32).collect::<Vec<_>>(),
        (N, T),
        &Device::Cpu,
    )?;
    let (fast, _) = model.forward(&ids, None, None)?;
    model.set_autograd_only(true);
    let (reference, _) = model.forward(&ids, None, None)?;
    let diff = (fast - reference)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(diff < 1e-12, "logits differ by {diff}");
    Ok(())
}

#[test]
fn the_cpu_stepper_matches_the_model_step() -> Result<()> {
    let config = ModelConfig {
        vocab_size: V,
        embed_dim: 6,
        hidden_size: H,
        num_layers: 2,
        dropout: 0.0,
    };
    let model = CharGru::new(
        &config,
        ParamStore::new(3).var_builder(DType::F32, &Device::Cpu),
    )?;
    let samples = 3;
    let mut state = model.zero_state(samples)?;
    let mut stepper = chargru::cpu_generate::CpuStepper::new(&model, &state)?;
    for k in 0..20u32 {
        let ids: Vec<u32> = (0..samples as u32)
            .map(|s| (k * 5 + s * 7) % V as u32)
            .collect();
        let fast = stepper.step(&ids)?;
        let (logits, next) = model.step(&Tensor::new(ids.as_slice(), &Device::Cpu)?, &state)?;
        state = next;
        let reference = logits.flatten_all()?.to_vec1::<f32>()?;
        let worst = fast
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "step {k}: logits differ by {worst}");
    }
    Ok(())
}

#[test]
fn a_batch_cut_into_blocks_gives_the_autograd_gradients() -> Result<()> {
    use candle_core::Var;
    use chargru::Gru;
    // Large enough for the fast path to run blocks of batch rows side by side.
    let (n, t, i, h) = (5, 9, 3, 730);
    assert!(n * t * h >= chargru::cpu_gru::BLOCK_WORK);
    let dev = Device::Cpu;
    let wave = |len: usize, seed: usize| -> Vec<f64> {
        (0..len)
            .map(|k| (((k * 7919 + seed * 104_729) % 1000) as f64 / 1000.0 - 0.5) * 0.4)
            .collect()
    };
    let weights = [
        (
            "weight_x",
            Var::from_vec(wave(3 * h * i, 1), (3 * h, i), &dev)?,
        ),
        (
            "weight_h",
            Var::from_vec(wave(3 * h * h, 2), (3 * h, h), &dev)?,
        ),
        ("bias", Var::from_vec(wave(3 * h, 3), 3 * h, &dev)?),
    ];
    let xs = Var::from_vec(wave(n * t * i, 4), (n, t, i), &dev)?;
    let h0 = Var::from_vec(wave(n * h, 5), (n, h), &dev)?;
    let w_ys = Tensor::from_vec(wave(n * t * h, 6), (n, t, h), &dev)?;
    let run = |autograd_only: bool| -> Result<Vec<Vec<f64>>> {
        let tensors = weights
            .iter()
            .map(|(name, v)| (name.to_string(), v.as_tensor().clone()))
            .collect();
        let mut gru = Gru::new(
            i,
            h,
            candle_nn::VarBuilder::from_tensors(tensors, DType::F64, &dev),
        )?;
        gru.set_autograd_only(autograd_only);
        let (ys, last) = gru.forward(xs.as_tensor(), Some(h0.as_tensor()))?;
        let loss = ((ys * &w_ys)?.sum_all()? + last.sqr()?.sum_all()?)?;
        let grads = loss.backward()?;
        let mut all = vec![vec![loss.to_scalar::<f64>()?]];
        for var in weights.iter().map(|(_, v)| v).chain([&xs, &h0]) {
            all.push(
                grads
                    .get(var)
                    .expect("a gradient")
                    .flatten_all()?
                    .to_vec1::<f64>()?,
            );
        }
        Ok(all)
    };
    let (fast, reference) = (run(false)?, run(true)?);
    for (k, (a, b)) in fast.iter().zip(&reference).enumerate() {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f64::max);
        assert!(worst < 1e-10, "output {k} differs by {worst}");
    }
    Ok(())
}
