//! Checkpoint files: SPEC's names, shapes and metadata, and a faithful round trip.

use std::collections::HashMap;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use chargru::model::ids_tensor;
use chargru::params::ParamStore;
use chargru::{CharGru, CharTokenizer, Checkpoint, ModelConfig, TrainingRecord};
use safetensors::SafeTensors;

fn small_checkpoint() -> (Checkpoint, CharGru) {
    let tokenizer = CharTokenizer::from_text("hello, world\n").unwrap();
    let config = ModelConfig {
        vocab_size: tokenizer.vocab_size(),
        embed_dim: 5,
        hidden_size: 7,
        num_layers: 2,
        dropout: 0.1,
    };
    let params = ParamStore::new(3);
    let model = CharGru::new(&config, params.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let tensors = params
        .vars()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    let training = TrainingRecord {
        step: 12,
        tokens_seen: 3456,
        train_loss: Some(1.5),
        val_loss: None,
        corpus: "hello.txt".into(),
        corpus_sha256: "ab".repeat(32),
        ..TrainingRecord::default()
    };
    let checkpoint = Checkpoint {
        config,
        tokenizer,
        training,
        tensors,
    };
    (checkpoint, model)
}

#[test]
fn names_shapes_and_metadata_follow_spec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (checkpoint, _) = small_checkpoint();
    checkpoint.save(&path).unwrap();

    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mut shapes: HashMap<String, Vec<usize>> = HashMap::new();
    for (name, view) in file.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        shapes.insert(name, view.shape().to_vec());
    }
    let (v, e, h) = (checkpoint.config.vocab_size, 5, 7);
    let expected: HashMap<String, Vec<usize>> = [
        ("embedding.weight", vec![v, e]),
        ("gru.0.weight_x", vec![3 * h, e]),
        ("gru.0.weight_h", vec![3 * h, h]),
        ("gru.0.bias", vec![3 * h]),
        ("gru.1.weight_x", vec![3 * h, h]),
        ("gru.1.weight_h", vec![3 * h, h]),
        ("gru.1.bias", vec![3 * h]),
        ("head.weight", vec![v, h]),
        ("head.bias", vec![v]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(shapes, expected);

    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().as_ref().unwrap();
    assert_eq!(metadata["chargru.format"], "1");
    let config: serde_json::Value = serde_json::from_str(&metadata["chargru.config"]).unwrap();
    for key in [
        "vocab_size",
        "embed_dim",
        "hidden_size",
        "num_layers",
        "dropout",
    ] {
        assert!(config.get(key).is_some(), "config lacks {key}");
    }
    assert_eq!(config["hidden_size"], 7);
    let training: serde_json::Value = serde_json::from_str(&metadata["chargru.training"]).unwrap();
    for key in [
        "step",
        "tokens_seen",
        "train_loss",
        "val_loss",
        "corpus",
        "corpus_sha256",
    ] {
        assert!(training.get(key).is_some(), "training record lacks {key}");
    }
    assert!(training["val_loss"].is_null());
    // The tokenizer is a plain `tokenizers` document, usable without chargru.
    let tokenizer = tokenizers::Tokenizer::from_str(&metadata["chargru.tokenizer"]).unwrap();
    let ids = tokenizer.encode("world", false).unwrap().get_ids().to_vec();
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "world");
    assert_eq!(ids, checkpoint.tokenizer.encode("world").unwrap());
}

#[test]
fn a_saved_model_loads_with_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (checkpoint, model) = small_checkpoint();
    checkpoint.save(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded.config, checkpoint.config);
    assert_eq!(loaded.training, checkpoint.training);
    assert_eq!(loaded.tokenizer.chars(), checkpoint.tokenizer.chars());
    let reloaded = loaded.model(&Device::Cpu).unwrap();

    let ids = checkpoint.tokenizer.encode("hello, world\nhello").unwrap();
    let input = ids_tensor(&[&ids], &Device::Cpu).unwrap();
    let logits = |m: &CharGru| {
        m.forward(&input, None, None)
            .unwrap()
            .0
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(logits(&model), logits(&reloaded));
}

#[test]
fn half_precision_tensors_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (checkpoint, _) = small_checkpoint();
    checkpoint.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let halves: Vec<(String, Tensor)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = Tensor::from_raw_buffer(view.data(), DType::F32, view.shape(), &Device::Cpu)
                .unwrap();
            (name, t.to_dtype(DType::F16).unwrap())
        })
        .collect();
    let half_path = dir.path().join("half.safetensors");
    safetensors::serialize_to_file(
        halves.iter().map(|(n, t)| (n.as_str(), t)),
        header.metadata().clone(),
        &half_path,
    )
    .unwrap();
    let loaded = Checkpoint::load(&half_path).unwrap();
    let original = &checkpoint.tensors["gru.1.weight_h"];
    let diff = (&loaded.tensors["gru.1.weight_h"] - original)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() < 1e-3);
}
