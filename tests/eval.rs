//! SPEC's eval semantics: one sequence from the zero state, every character after the first predicted.

use candle_core::{DType, Device, IndexOp};
use chargru::eval::{sequence_loss, streams_loss, CHUNK};
use chargru::model::ids_tensor;
use chargru::params::ParamStore;
use chargru::{CharGru, ModelConfig};

fn model() -> CharGru {
    let config = ModelConfig {
        vocab_size: 11,
        embed_dim: 4,
        hidden_size: 6,
        num_layers: 2,
        dropout: 0.0,
    };
    CharGru::new(
        &config,
        ParamStore::new(9).var_builder(DType::F32, &Device::Cpu),
    )
    .unwrap()
}

fn text(len: usize) -> Vec<u32> {
    (0..len).map(|k| ((k * 7 + k / 13) % 11) as u32).collect()
}

/// −ln p of every next character, from one forward pass over the whole text.
fn direct_nll(model: &CharGru, ids: &[u32]) -> Vec<f64> {
    let input = ids_tensor(&[&ids[..ids.len() - 1]], &Device::Cpu).unwrap();
    let (logits, _) = model.forward(&input, None, None).unwrap();
    let log_p = candle_nn::ops::log_softmax(&logits.i(0).unwrap(), 1).unwrap();
    let log_p = log_p.to_vec2::<f32>().unwrap();
    ids[1..]
        .iter()
        .enumerate()
        .map(|(t, &next)| -(log_p[t][next as usize] as f64))
        .collect()
}

#[test]
fn chunked_eval_equals_the_one_sequence_definition() {
    let model = model();
    let ids = text(3 * CHUNK + 17);
    let direct = direct_nll(&model, &ids);
    let loss = sequence_loss(&model, &ids).unwrap();
    assert_eq!(loss.predictions, ids.len() - 1);
    let expected = direct.iter().sum::<f64>() / direct.len() as f64;
    assert!(
        (loss.mean() - expected).abs() < 1e-5,
        "{} vs {expected}",
        loss.mean()
    );
}

#[test]
fn streams_predict_every_character_once() {
    let model = model();
    let ids = text(1000);
    let one = sequence_loss(&model, &ids).unwrap();
    for streams in [2, 7, 64] {
        let many = streams_loss(&model, &ids, streams).unwrap();
        assert_eq!(many.predictions, ids.len() - 1);
        // Only the first characters of each stream lose history: close, not equal.
        assert!(
            (many.mean() - one.mean()).abs() < 0.05,
            "{streams}: {} vs {}",
            many.mean(),
            one.mean()
        );
    }
    let mut zero_state_first = ids.clone();
    zero_state_first.truncate(2);
    let tiny = streams_loss(&model, &zero_state_first, 8).unwrap();
    assert_eq!(tiny.predictions, 1);
    let direct = direct_nll(&model, &zero_state_first);
    assert!((tiny.mean() - direct[0]).abs() < 1e-5);
}
