//! Mutation fuzzing of the checkpoint loader: thousands of damaged files, each of which
//! must load into a working model or be refused — never a panic, never an allocation the
//! file's size does not justify. `CHARGRU_FUZZ_ITERATIONS` raises the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use chargru::params::ParamStore;
use chargru::{CharGru, CharTokenizer, Checkpoint, ModelConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Records the largest single allocation made by the fuzzing thread since the last reset
/// (other threads, such as a thread pool starting up, are not the loader's doing).
struct Watched;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if WATCHING.with(Cell::get) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Watched = Watched;

/// A small valid checkpoint, its tensors stored as `dtype`.
fn seed_file(dtype: DType, layers: usize) -> Vec<u8> {
    let tokenizer =
        CharTokenizer::from_text("To be, or not to be: that is the question.\n").unwrap();
    let config = ModelConfig {
        vocab_size: tokenizer.vocab_size(),
        embed_dim: 3,
        hidden_size: 4,
        num_layers: layers,
        dropout: 0.0,
    };
    let params = ParamStore::new(layers as u64);
    CharGru::new(&config, params.var_builder(DType::F32, &Device::Cpu)).unwrap();
    let tensors: Vec<(String, Tensor)> = params
        .vars()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().to_dtype(dtype).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.safetensors");
    let checkpoint = Checkpoint {
        config,
        tokenizer,
        training: Default::default(),
        tensors: tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.to_dtype(DType::F32).unwrap()))
            .collect(),
    };
    checkpoint.save(&path).unwrap();
    if dtype == DType::F32 {
        return std::fs::read(&path).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    safetensors::serialize(
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        header.metadata().clone(),
    )
    .unwrap()
}

/// One random damage: byte edits, cuts, insertions, or numbers in the header made huge.
fn mutate(seed: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    let header_end =
        (8 + u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize).min(seed.len());
    for _ in 0..rng.random_range(1..4) {
        if bytes.is_empty() {
            break;
        }
        let at = |rng: &mut StdRng, len: usize| rng.random_range(0..len.max(1));
        match rng.random_range(0..7) {
            0 => {
                let i = at(rng, bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let i = at(rng, header_end.min(bytes.len()));
                bytes[i] = rng.random();
            }
            2 => bytes.truncate(at(rng, bytes.len())),
            3 => {
                let i = at(rng, bytes.len());
                let junk: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(i..i, junk);
            }
            4 => {
                let len: u64 = if rng.random_bool(0.5) {
                    rng.random()
                } else {
                    rng.random_range(0..2 * header_end as u64)
                };
                if let Some(prefix) = bytes.get_mut(..8) {
                    prefix.copy_from_slice(&len.to_le_bytes());
                }
            }
            _ => {
                // Replace a number in the header (a shape, an offset or a config size).
                let header = bytes
                    .get(8..header_end.min(bytes.len()))
                    .unwrap_or_default();
                let digits: Vec<usize> = header
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_ascii_digit())
                    .map(|(i, _)| i + 8)
                    .collect();
                if let Some(&i) = digits.get(at(rng, digits.len())) {
                    let big = ["9", "99999999", "18446744073709551615", "0", "4294967296"]
                        [rng.random_range(0..5)];
                    bytes.splice(i..i + 1, big.bytes());
                }
            }
        }
    }
    bytes
}

#[test]
fn damaged_checkpoints_load_or_are_refused_without_panics_or_huge_allocations() {
    let iterations: usize = std::env::var("CHARGRU_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seeds = [
        seed_file(DType::F32, 1),
        seed_file(DType::F16, 2),
        seed_file(DType::BF16, 1),
    ];
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut loaded, mut refused) = (0, 0);
    let path = Path::new("fuzzed.safetensors");
    WATCHING.with(|w| w.set(true));
    for i in 0..iterations {
        let bytes = mutate(&seeds[i % seeds.len()], &mut rng);
        LARGEST.store(0, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(|| match Checkpoint::from_bytes(&bytes, path) {
            Ok(checkpoint) => {
                let model = checkpoint
                    .model(&Device::Cpu)
                    .expect("a loaded checkpoint builds a model");
                let ids = Tensor::new(&[[0u32, 1, 2]], &Device::Cpu).unwrap();
                model
                    .forward(&ids, None, None)
                    .expect("a loaded model runs");
                true
            }
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.contains("fuzzed.safetensors") && !message.contains('\n'),
                    "{message}"
                );
                false
            }
        });
        let Ok(ok) = outcome else {
            panic!("iteration {i} panicked on {} bytes", bytes.len());
        };
        if ok {
            loaded += 1;
        } else {
            refused += 1;
        }
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest <= 8 * bytes.len() + (1 << 20),
            "iteration {i}: a {largest}-byte allocation for a {}-byte file",
            bytes.len()
        );
    }
    eprintln!("{iterations} damaged checkpoints: {loaded} loaded, {refused} refused");
    assert!(
        refused > iterations / 2,
        "the mutations should mostly break the files"
    );
}
