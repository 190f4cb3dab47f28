//! The model shipped in `checkpoints/shakespeare`: it follows SPEC, came from its preset and
//! its corpus, scores what its record says, and `generate` uses it by default.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chargru::data::Corpus;
use chargru::eval::{sequence_loss, streams_loss};
use chargru::preset::{Preset, SHIPPED_CHECKPOINT};
use chargru::Checkpoint;
use common::{assert_succeeds, chargru, stdout};
use safetensors::{Dtype, SafeTensors};

const CORPUS: &str = "corpus/tinyshakespeare.txt";

#[test]
fn the_shipped_checkpoint_follows_spec_and_its_preset() {
    let bytes = fs::read(SHIPPED_CHECKPOINT).unwrap();
    assert!(bytes.len() <= 16 << 20, "{} bytes", bytes.len());
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let checkpoint = Checkpoint::load(Path::new(SHIPPED_CHECKPOINT)).unwrap();

    let stored: BTreeMap<String, Vec<usize>> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F16, "{name} is stored as f16");
            (name, view.shape().to_vec())
        })
        .collect();
    let spec: BTreeMap<String, Vec<usize>> =
        checkpoint.config.tensor_shapes().into_iter().collect();
    assert_eq!(stored, spec, "exactly SPEC's tensors, with SPEC's shapes");

    let preset = Preset::Shakespeare.config();
    let config = &checkpoint.config;
    assert_eq!(
        (
            config.embed_dim,
            config.hidden_size,
            config.num_layers,
            config.dropout
        ),
        (preset.embed, preset.hidden, preset.layers, preset.dropout),
        "the shipped model is the one --preset shakespeare trains"
    );

    let corpus = Corpus::load(Path::new(CORPUS)).unwrap();
    let training = &checkpoint.training;
    assert_eq!(training.corpus, "tinyshakespeare.txt");
    assert_eq!(training.corpus_sha256, corpus.sha256);
    assert_eq!(
        checkpoint.tokenizer.chars(),
        corpus.tokenizer.chars(),
        "the vocabulary is the corpus's"
    );
    assert!(training.step > 0 && training.train_loss.is_some());
}

#[test]
fn the_recorded_validation_loss_is_what_the_model_scores() {
    let checkpoint = Checkpoint::load(Path::new(SHIPPED_CHECKPOINT)).unwrap();
    let recorded = checkpoint.training.val_loss.unwrap();
    let model = checkpoint.model(&candle_core::Device::Cpu).unwrap();
    let corpus = Corpus::load(Path::new(CORPUS)).unwrap();
    // The trainer's measure, recomputed from the f16 file: the validation text read as
    // the preset's `val_streams` streams side by side. The record was taken on the f32 weights, so the
    // two agree to f16 storage's effect (SPEC's `eval` moved by 2e-6 when it was shipped).
    let streams = Preset::Shakespeare.config().val_streams;
    let measured = streams_loss(&model, corpus.val(), streams).unwrap().mean();
    assert!(
        (measured - recorded).abs() < 1e-3,
        "the validation text scores {measured:.5}, the record says {recorded:.5}"
    );
    // Each stream is SPEC's `eval` of its part of the text (one sequence from the zero
    // state): on a slice, one stream and `eval` give the same loss.
    let slice = &corpus.val()[..SLICE];
    let first_stream = streams_loss(&model, slice, 1).unwrap().mean();
    let eval = sequence_loss(&model, slice).unwrap().mean();
    assert!(
        (eval - first_stream).abs() < 1e-5,
        "{eval} vs {first_stream}"
    );
}

/// Characters of the validation text scored both ways.
const SLICE: usize = 2_000;

#[test]
fn generate_uses_the_shipped_model_without_checkpoint() {
    let args = [
        "generate",
        "--prompt",
        "ROMEO:",
        "--length",
        "200",
        "--temperature",
        "0",
    ];
    let output = chargru(&args);
    assert_succeeds(&output);
    let text = stdout(&output);
    assert!(text.starts_with("ROMEO:"), "{text}");
    let with_flag = chargru(&[&args[..], &["--checkpoint", SHIPPED_CHECKPOINT]].concat());
    assert_eq!(text, stdout(&with_flag), "the default is the shipped file");
    let words = text.split_whitespace().count();
    assert!(
        words >= 25,
        "greedy text from a trained model is words, not one long string: {text}"
    );
}
