//! Independent random streams derived from one seed, per purpose and per step.
//!
//! Every random draw of a training step (its batch, its dropout masks) comes from a
//! generator seeded by (seed, purpose, step) alone, so a resumed run draws exactly what
//! the uninterrupted run would have drawn without saving any generator state.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// What a random stream is for; each gets draws independent of the others.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// Choosing the windows of a batch.
    Batch = 1,
    /// Dropout masks.
    Dropout = 2,
}

/// The generator for `purpose` at `step` of a run seeded with `seed`.
pub fn step_rng(seed: u64, purpose: Purpose, step: usize) -> StdRng {
    let mixed = splitmix64(splitmix64(seed ^ ((purpose as u64) << 56)) ^ step as u64);
    StdRng::seed_from_u64(mixed)
}

/// One round of SplitMix64: a bijective scramble, so nearby inputs give unrelated outputs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
