//! The GRU layer against SPEC's equations: a step worked out by hand, gradients against
//! finite differences, and whole-sequence runs against repeated single steps.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarBuilder;
use chargru::Gru;

/// A GRU with I = 1 input and H = 2 units whose every weight is given.
fn hand_gru() -> Result<Gru> {
    let dev = Device::Cpu;
    let mut tensors = HashMap::new();
    // Rows: W_z (2), W_r (2), W_h (2).
    let weight_x = [0.5, -0.3, 0.2, 0.4, 1.0, -1.0];
    tensors.insert(
        "weight_x".to_string(),
        Tensor::new(&weight_x, &dev)?.reshape((6, 1))?,
    );
    // Rows: U_z (2×2), U_r (2×2), U_h (2×2).
    let weight_h = [
        [0.1, 0.2],
        [0.3, 0.4],
        [-0.5, 0.6],
        [0.7, -0.8],
        [0.9, -0.1],
        [0.2, 0.3],
    ];
    tensors.insert("weight_h".to_string(), Tensor::new(&weight_h, &dev)?);
    // b_z, b_r, b_h.
    let bias = [0.1, -0.1, 0.0, 0.2, -0.2, 0.1];
    tensors.insert("bias".to_string(), Tensor::new(&bias, &dev)?);
    Gru::new(1, 2, VarBuilder::from_tensors(tensors, DType::F64, &dev))
}

#[test]
fn one_step_matches_the_hand_computation() -> Result<()> {
    let gru = hand_gru()?;
    let x = Tensor::new(&[[1.0f64]], &Device::Cpu)?; // [N=1, I=1]
    let h_prev = Tensor::new(&[[0.5f64, -0.5]], &Device::Cpu)?; // [N=1, H=2]
    let h = gru.step(&x, &h_prev)?.to_vec2::<f64>()?;

    // By hand, x = 1, h_{t-1} = (0.5, −0.5):
    // z pre-activation = W_z x + U_z h + b_z
    //   = (0.5 + 0.1·0.5 + 0.2·(−0.5) + 0.1, −0.3 + 0.3·0.5 + 0.4·(−0.5) − 0.1) = (0.55, −0.45)
    //   z = σ(·) = (0.634135591, 0.389360766)
    // r pre-activation = (0.2 − 0.25 − 0.3 + 0.0, 0.4 + 0.35 + 0.4 + 0.2) = (−0.35, 1.35)
    //   r = (0.413382421, 0.794129628)
    // r ⊙ h = (0.206691211, −0.397064814)
    // candidate pre-activation = W_h x + U_h (r ⊙ h) + b_h
    //   = (1.0 + 0.9·0.206691211 − 0.1·(−0.397064814) − 0.2,
    //      −1.0 + 0.2·0.206691211 + 0.3·(−0.397064814) + 0.1) = (1.025728571, −0.977781202)
    //   h̃ = tanh(·) = (0.772189544, −0.752103800)
    // h = (1 − z) ⊙ h_{t-1} + z ⊙ h̃
    //   = (0.365864409·0.5 + 0.634135591·0.772189544,
    //      0.610639234·(−0.5) + 0.389360766·(−0.752103800)) = (0.672605077, −0.598159329)
    let expected = [0.672605077, -0.598159329];
    // The variants SPEC rules out would give: gates z and r swapped (0.6249, −0.6698);
    // reset applied after U_h (0.6677, −0.5915); z weighting the old state (0.5996, −0.6539).
    for (got, want) in h[0].iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-8,
            "h = {:?}, expected {expected:?}",
            h[0]
        );
    }
    Ok(())
}

/// A random f64 tensor with entries in ±scale, from a fixed seed.
fn random(shape: &[usize], seed: u64, scale: f64) -> Result<Tensor> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

/// Checks `forward`'s gradients (every weight, the input, the initial state) against
/// central finite differences in f64 over several time steps.
fn check_gradients(autograd_only: bool) -> Result<()> {
    let (n, t, i, h) = (2, 5, 3, 4);
    let dev = Device::Cpu;
    let vars: Vec<(&str, Var)> = vec![
        ("weight_x", Var::from_tensor(&random(&[3 * h, i], 1, 0.8)?)?),
        ("weight_h", Var::from_tensor(&random(&[3 * h, h], 2, 0.8)?)?),
        ("bias", Var::from_tensor(&random(&[3 * h], 3, 0.5)?)?),
        ("xs", Var::from_tensor(&random(&[n, t, i], 4, 1.0)?)?),
        ("h0", Var::from_tensor(&random(&[n, h], 5, 0.9)?)?),
    ];
    // A loss that weighs every output and the final state differently.
    let w_ys = random(&[n, t, h], 6, 1.0)?;
    let w_last = random(&[n, h], 7, 1.0)?;
    let loss = || -> Result<Tensor> {
        let tensors: HashMap<String, Tensor> = vars[..3]
            .iter()
            .map(|(name, var)| (name.to_string(), var.as_tensor().clone()))
            .collect();
        let mut gru = Gru::new(i, h, VarBuilder::from_tensors(tensors, DType::F64, &dev))?;
        gru.set_autograd_only(autograd_only);
        let (ys, last) = gru.forward(vars[3].1.as_tensor(), Some(vars[4].1.as_tensor()))?;
        (ys * &w_ys)?.sum_all()? + (last * &w_last)?.sum_all()?
    };
    let grads = loss()?.backward()?;
    let eps = 1e-6;
    for (name, var) in &vars {
        let analytic = grads
            .get(var)
            .expect("every input has a gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let original = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for k in 0..original.len() {
            let mut shifted = original.clone();
            shifted[k] = original[k] + eps;
            var.set(&Tensor::from_vec(shifted.clone(), var.shape(), &dev)?)?;
            let plus = loss()?.to_scalar::<f64>()?;
            shifted[k] = original[k] - eps;
            var.set(&Tensor::from_vec(shifted, var.shape(), &dev)?)?;
            let minus = loss()?.to_scalar::<f64>()?;
            var.set(&Tensor::from_vec(original.clone(), var.shape(), &dev)?)?;
            let numeric = (plus - minus) / (2.0 * eps);
            let error =
                (numeric - analytic[k]).abs() / numeric.abs().max(analytic[k].abs()).max(1e-3);
            assert!(
                error < 1e-6,
                "d loss / d {name}[{k}]: backward {} vs finite difference {numeric} (autograd only: {autograd_only})",
                analytic[k]
            );
        }
    }
    Ok(())
}

#[test]
fn cpu_fast_path_gradients_match_finite_differences() -> Result<()> {
    check_gradients(false)
}

#[test]
fn autograd_gradients_match_finite_differences() -> Result<()> {
    check_gradients(true)
}

#[test]
fn a_sequence_equals_repeated_steps_with_input_size_unlike_hidden_size() -> Result<()> {
    let (n, t, i, h) = (3, 6, 5, 2);
    let dev = Device::Cpu;
    let tensors = HashMap::from([
        ("weight_x".to_string(), random(&[3 * h, i], 11, 0.7)?),
        ("weight_h".to_string(), random(&[3 * h, h], 12, 0.7)?),
        ("bias".to_string(), random(&[3 * h], 13, 0.3)?),
    ]);
    let gru = Gru::new(i, h, VarBuilder::from_tensors(tensors, DType::F64, &dev))?;
    let xs = random(&[n, t, i], 14, 1.0)?;
    let (ys, last) = gru.forward(&xs, None)?;
    assert_eq!(ys.dims(), &[n, t, h]);
    let mut state = gru.zero_state(n)?;
    for step in 0..t {
        state = gru.step(&xs.narrow(1, step, 1)?.squeeze(1)?, &state)?;
        let from_sequence = ys.narrow(1, step, 1)?.squeeze(1)?;
        let diff = (from_sequence - &state)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(diff < 1e-12, "step {step} differs by {diff}");
    }
    let diff = (last - state)?.abs()?.max_all()?.to_scalar::<f64>()?;
    assert!(diff < 1e-12);
    Ok(())
}
