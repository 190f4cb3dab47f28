//! End-to-end learning through the library: a small model masters a repetitive text.

use std::sync::atomic::AtomicBool;

use candle_core::Device;
use chargru::run::RunDir;
use chargru::sample::generate;
use chargru::train::{train, Progress, TrainConfig};
use chargru::{Checkpoint, Sampler, SamplingConfig};

#[test]
fn a_small_model_learns_a_repeated_pattern_and_greedy_generation_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("pattern.txt");
    let line = "the quick brown fox jumps over the lazy dog\n";
    std::fs::write(&corpus, line.repeat(60)).unwrap();
    let config = TrainConfig {
        corpus,
        out: dir.path().join("run"),
        steps: 250,
        embed: 16,
        hidden: 48,
        layers: 1,
        seq_len: 48,
        batch: 8,
        lr: 1e-2,
        dropout: 0.0,
        eval_every: 50,
        val_streams: 4,
        ..TrainConfig::default()
    };
    let mut val_losses = Vec::new();
    let summary = train(&config, &Device::Cpu, &AtomicBool::new(false), |p| {
        if let Progress::Eval { val_loss, .. } = p {
            val_losses.push(*val_loss);
        }
    })
    .unwrap();
    assert!(
        val_losses[0] > val_losses[val_losses.len() - 1],
        "{val_losses:?}"
    );
    assert!(
        summary.best_val_loss < 0.05,
        "validation loss stayed at {}",
        summary.best_val_loss
    );

    let checkpoint = Checkpoint::load(&RunDir::new(&summary.run).best()).unwrap();
    let model = checkpoint.model(&Device::Cpu).unwrap();
    let prompt = checkpoint.tokenizer.encode("the quick").unwrap();
    let greedy = SamplingConfig {
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    let mut ids = Vec::new();
    generate(
        &model,
        &prompt,
        2 * line.len(),
        1,
        &mut Sampler::new(greedy, 0),
        |_, id| {
            ids.push(id);
            true
        },
    )
    .unwrap();
    let text = checkpoint.tokenizer.decode(&ids).unwrap();
    let expected = format!("{}{line}", &line["the quick".len()..]);
    assert!(text.starts_with(&expected), "greedy continuation {text:?}");
}

#[test]
fn the_same_seed_gives_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("text.txt");
    std::fs::write(
        &corpus,
        "It is a truth universally acknowledged, that a single man\n".repeat(20),
    )
    .unwrap();
    let run = |name: &str, seed: u64| {
        let config = TrainConfig {
            corpus: corpus.clone(),
            out: dir.path().join(name),
            steps: 12,
            embed: 8,
            hidden: 16,
            layers: 2,
            seq_len: 20,
            batch: 4,
            dropout: 0.2,
            eval_every: 6,
            seed,
            ..TrainConfig::default()
        };
        let summary = train(&config, &Device::Cpu, &AtomicBool::new(false), |_| {}).unwrap();
        let checkpoint = Checkpoint::load(&RunDir::new(&summary.run).latest()).unwrap();
        let mut tensors: Vec<(String, Vec<f32>)> = checkpoint
            .tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        (tensors, checkpoint.training.val_loss)
    };
    let first = run("a", 5);
    assert_eq!(run("b", 5), first, "same seed, different model");
    assert_ne!(run("c", 6).0, first.0, "the seed has no effect");
}
