//! The sampler: greedy, temperature, top-k and top-p on fixed logits.

use chargru::{Sampler, SamplingConfig};

fn counts(config: SamplingConfig, logits: &[f32], draws: usize) -> Vec<usize> {
    let mut sampler = Sampler::new(config, 7);
    let mut counts = vec![0; logits.len()];
    for _ in 0..draws {
        counts[sampler.sample(logits) as usize] += 1;
    }
    counts
}

/// Logits whose softmax at temperature 1 is 0.4, 0.3, 0.2, 0.1.
fn logits() -> Vec<f32> {
    [0.4f32, 0.3, 0.2, 0.1].iter().map(|p| p.ln()).collect()
}

#[test]
fn temperature_zero_is_argmax() {
    let greedy = SamplingConfig {
        temperature: 0.0,
        ..SamplingConfig::default()
    };
    assert_eq!(counts(greedy, &logits(), 100), vec![100, 0, 0, 0]);
}

#[test]
fn temperature_one_follows_the_softmax() {
    let draws = 100_000;
    let got = counts(SamplingConfig::default(), &logits(), draws);
    for (count, p) in got.iter().zip([0.4, 0.3, 0.2, 0.1]) {
        let freq = *count as f64 / draws as f64;
        assert!((freq - p).abs() < 0.01, "{got:?}");
    }
}

#[test]
fn top_k_and_top_p_restrict_and_renormalise() {
    let draws = 50_000;
    let top_k = SamplingConfig {
        top_k: Some(2),
        ..SamplingConfig::default()
    };
    let got = counts(top_k, &logits(), draws);
    assert_eq!(&got[2..], &[0, 0]);
    assert!(
        (got[0] as f64 / draws as f64 - 4.0 / 7.0).abs() < 0.01,
        "{got:?}"
    );

    // 0.4 + 0.3 = 0.7 < 0.8, so the third character is needed and the fourth is not.
    let top_p = SamplingConfig {
        top_p: Some(0.8),
        ..SamplingConfig::default()
    };
    let got = counts(top_p, &logits(), draws);
    assert_eq!(got[3], 0);
    assert!(
        (got[2] as f64 / draws as f64 - 2.0 / 9.0).abs() < 0.01,
        "{got:?}"
    );
}

#[test]
fn a_seed_fixes_the_draws() {
    let draw = |seed| {
        let mut sampler = Sampler::new(SamplingConfig::default(), seed);
        (0..50)
            .map(|_| sampler.sample(&logits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
}
