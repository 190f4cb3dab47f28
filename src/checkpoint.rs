//! SPEC's checkpoint file: one safetensors file with the weights, the configuration, the
//! tokenizer and the training record.

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::model::{CharGru, ModelConfig, DTYPE};
use crate::schedule::Schedule;
use crate::tokenizer::CharTokenizer;
use crate::{Error, Result};

/// The value of `chargru.format` this version writes and reads.
pub const FORMAT: &str = "1";
/// The largest size, depth or vocabulary a checkpoint may declare; far above any
/// model this program can train, it keeps a damaged file from asking for absurd shapes.
pub const MAX_DIMENSION: usize = 1 << 20;

const KEY_FORMAT: &str = "chargru.format";
const KEY_CONFIG: &str = "chargru.config";
const KEY_TOKENIZER: &str = "chargru.tokenizer";
const KEY_TRAINING: &str = "chargru.training";

/// The float type a checkpoint stores its weights in; they are f32 again once loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageDtype {
    /// 4 bytes a weight, exact.
    #[default]
    F32,
    /// 2 bytes a weight, 11 significant bits.
    F16,
    /// 2 bytes a weight, 8 significant bits and f32's range.
    Bf16,
}

impl StorageDtype {
    /// The candle dtype the tensors are written as.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Bf16 => DType::BF16,
        }
    }
}

/// How a model was trained, as `chargru.training` records it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Optimizer steps taken.
    pub step: u64,
    /// Characters the model was trained on (steps × batch × sequence length).
    pub tokens_seen: u64,
    /// Mean training loss over the steps since the previous evaluation, nats per character.
    pub train_loss: Option<f64>,
    /// Validation loss at this step, nats per character.
    pub val_loss: Option<f64>,
    /// File name of the corpus.
    pub corpus: String,
    /// SHA-256 of the corpus file, hex.
    pub corpus_sha256: String,
    /// The seed the run started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Seconds of training so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    /// The learning-rate schedule the run follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// Everything a checkpoint holds, with the weights as f32 tensors on the CPU.
///
/// Saving a model, loading it back and generating from it:
///
/// ```
/// use candle_core::{DType, Device};
/// use chargru::params::ParamStore;
/// use chargru::sample::generate;
/// use chargru::{CharGru, CharTokenizer, Checkpoint, ModelConfig, Sampler, SamplingConfig};
///
/// let tokenizer = CharTokenizer::from_text("ROMEO: JULIET\n")?;
/// let config = ModelConfig { vocab_size: tokenizer.vocab_size(), embed_dim: 4, hidden_size: 8, num_layers: 1, dropout: 0.0 };
/// let params = ParamStore::new(1);
/// CharGru::new(&config, params.var_builder(DType::F32, &Device::Cpu))?;
/// let tensors = params.vars().into_iter().map(|(name, var)| (name, var.as_tensor().clone())).collect();
/// let path = std::env::temp_dir().join(format!("chargru-doc-{}.safetensors", std::process::id()));
/// Checkpoint { config, tokenizer, training: Default::default(), tensors }.save(&path)?;
///
/// let checkpoint = Checkpoint::load(&path)?;
/// let model = checkpoint.model(&Device::Cpu)?;
/// let prompt = checkpoint.tokenizer.encode("ROMEO:")?;
/// let mut sampler = Sampler::new(SamplingConfig { temperature: 0.8, ..Default::default() }, 1);
/// let mut text = String::new();
/// generate(&model, &prompt, 20, 1, &mut sampler, |_, id| {
///     text.extend(checkpoint.tokenizer.char(id));
///     true
/// })?;
/// assert_eq!(text.chars().count(), 20);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), chargru::Error>(())
/// ```
pub struct Checkpoint {
    /// The model's shape.
    pub config: ModelConfig,
    /// Its vocabulary.
    pub tokenizer: CharTokenizer,
    /// How it was trained.
    pub training: TrainingRecord,
    /// The weights by SPEC name.
    pub tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Builds the model on `device`.
    pub fn model(&self, device: &Device) -> Result<CharGru> {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), DTYPE, device);
        Ok(CharGru::new(&self.config, vb)?)
    }

    /// Writes the checkpoint to `path` through a temporary file and a rename, so `path`
    /// holds either its old contents or the complete new file, whatever happens midway.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_as(path, StorageDtype::F32)
    }

    /// [`Checkpoint::save`] with the weights stored as `storage`.
    pub fn save_as(&self, path: &Path, storage: StorageDtype) -> Result<()> {
        let mut metadata = HashMap::new();
        metadata.insert(KEY_FORMAT.to_string(), FORMAT.to_string());
        metadata.insert(KEY_CONFIG.to_string(), to_json(&self.config));
        metadata.insert(KEY_TOKENIZER.to_string(), self.tokenizer.to_json()?);
        metadata.insert(KEY_TRAINING.to_string(), to_json(&self.training));
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (name, _) in self.config.tensor_shapes() {
            let tensor = self.tensors.get(&name).ok_or_else(|| {
                Error::Input(format!("cannot save: the model has no tensor {name}"))
            })?;
            tensors.push((name, tensor));
        }
        write_safetensors(path, tensors, metadata, storage.dtype())
    }

    /// Reads and checks a checkpoint: every tensor SPEC names, with the right shape and a
    /// float dtype (F32, F16 or BF16), finite values, and complete `chargru.*` metadata.
    /// Tensors SPEC does not name are rejected: such a file was not written by chargru.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Error::checkpoint(
                path,
                "the file does not exist; pass --checkpoint with a file written by `chargru train` (best.safetensors or latest.safetensors in its output directory)",
            ),
            _ if path.is_dir() => Error::checkpoint(path, "it is a directory; pass the .safetensors file inside it"),
            _ => Error::io("read", path, e),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Reads and checks a checkpoint held in memory; `path` names it in error messages.
    ///
    /// Nothing is allocated beyond a small multiple of `bytes.len()`: every size the file
    /// declares is checked against the data it actually holds before it is used.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::checkpoint(
                path,
                format!("it is not a complete safetensors file ({e}); it may be truncated or of another format, so retrain or copy it again"),
            )
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::checkpoint(path, format!("its header is unreadable ({e})")))?;
        let empty = HashMap::new();
        let metadata = header.metadata().as_ref().unwrap_or(&empty);
        let field = |key: &str| {
            metadata.get(key).ok_or_else(|| {
                Error::checkpoint(
                    path,
                    format!("its metadata has no {key} entry, so it was not written by chargru"),
                )
            })
        };
        let format = field(KEY_FORMAT)?;
        if format != FORMAT {
            return Err(Error::checkpoint(
                path,
                format!("it has {KEY_FORMAT} {format:?} but this chargru reads only format {FORMAT:?}; use the chargru version that wrote it"),
            ));
        }
        let config: ModelConfig = from_json(path, KEY_CONFIG, field(KEY_CONFIG)?)?;
        check_config(path, &config)?;
        let tokenizer = CharTokenizer::from_json(field(KEY_TOKENIZER)?)
            .map_err(|e| Error::checkpoint(path, format!("{KEY_TOKENIZER} is unusable: {e}")))?;
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::checkpoint(
                path,
                format!(
                    "its tokenizer has {} characters but {KEY_CONFIG} says vocab_size {}",
                    tokenizer.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
        let training: TrainingRecord = from_json(path, KEY_TRAINING, field(KEY_TRAINING)?)?;
        let tensors = read_tensors(path, &file, &config)?;
        Ok(Self {
            config,
            tokenizer,
            training,
            tensors,
        })
    }
}

fn check_config(path: &Path, config: &ModelConfig) -> Result<()> {
    let sizes = [
        ("vocab_size", config.vocab_size),
        ("embed_dim", config.embed_dim),
        ("hidden_size", config.hidden_size),
        ("num_layers", config.num_layers),
    ];
    for (name, value) in sizes {
        if value == 0 || value > MAX_DIMENSION {
            return Err(Error::checkpoint(
                path,
                format!("{KEY_CONFIG} has {name} {value}, outside 1..={MAX_DIMENSION}"),
            ));
        }
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(Error::checkpoint(
            path,
            format!(
                "{KEY_CONFIG} has dropout {}, outside [0, 1)",
                config.dropout
            ),
        ));
    }
    Ok(())
}

fn read_tensors(
    path: &Path,
    file: &SafeTensors,
    config: &ModelConfig,
) -> Result<HashMap<String, Tensor>> {
    if let Some(extra) = file
        .names()
        .into_iter()
        .find(|name| !config.has_tensor(name))
    {
        return Err(Error::checkpoint(
            path,
            format!("it holds a tensor {extra:?} that a chargru model with this configuration does not have"),
        ));
    }
    let mut tensors = HashMap::new();
    // Lazily, so a damaged configuration claiming millions of layers costs nothing: the
    // first missing tensor ends the loop.
    for (name, shape) in (0..config.tensor_count()).map(|k| config.tensor_shape(k)) {
        let view = file
            .tensor(&name)
            .map_err(|_| Error::checkpoint(path, format!("the tensor {name} is missing")))?;
        if view.shape() != shape.as_slice() {
            return Err(Error::checkpoint(
                path,
                format!(
                    "the tensor {name} has shape {:?} but the configuration needs {shape:?}",
                    view.shape()
                ),
            ));
        }
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "the tensor {name} has dtype {other:?}; chargru reads F32, F16 or BF16"
                    ),
                ))
            }
        };
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, &shape, &Device::Cpu)?
            .to_dtype(DType::F32)?;
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::checkpoint(
                path,
                format!("the tensor {name} contains NaN or infinite values; use an earlier checkpoint of the run"),
            ));
        }
        tensors.insert(name, tensor);
    }
    Ok(tensors)
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("plain structs of numbers and strings always serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(path: &Path, key: &str, json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::checkpoint(path, format!("its {key} metadata is malformed ({e})")))
}

/// Writes `tensors` (as F32) and `metadata` to `path` as one safetensors file, atomically.
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, &'a Tensor)>,
    metadata: HashMap<String, String>,
    dtype: DType,
) -> Result<()> {
    let tensors = tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?.to_dtype(dtype)?)))
        .collect::<Result<Vec<_>>>()?;
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| Error::Input(format!("cannot encode {}: {e}", path.display())))?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` via a temporary file in the same directory, synced, then renamed.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every platform lets a directory be synced.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path, e)
    })
}
