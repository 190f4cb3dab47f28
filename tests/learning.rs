//! End-to-end learning through the library: a small model masters a repetitive text.

use candle_core::Device;
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
        log_every: 50,
        val_streams: 4,
        ..TrainConfig::default()
    };
    let mut val_losses = Vec::new();
    let summary = train(&config, &Device::Cpu, |p| {
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

    let checkpoint = Checkpoint::load(&summary.best_path).unwrap();
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
