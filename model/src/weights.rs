//! Reading and writing weights in the Hugging Face layout: one
//! `model.safetensors`, or shards listed by `model.safetensors.index.json`.
//!
//! Loading checks the checkpoint against the variables the config implies
//! before copying anything, and reports every missing, unexpected and
//! mis-shaped tensor by name.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::Deserialize;
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";

/// Hugging Face shards at 5 GB by default when saving large models.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// How many names of each kind of problem an error lists before "and N more".
const LISTED_PROBLEMS: usize = 12;

struct Shard {
    path: PathBuf,
    mmap: memmap2::Mmap,
}

/// The safetensors files of one checkpoint, memory-mapped and validated.
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name -> (shard index, dtype, shape).
    tensors: BTreeMap<String, (usize, Dtype, Vec<i64>)>,
}

#[derive(Deserialize)]
struct WeightIndex {
    weight_map: BTreeMap<String, String>,
}

/// A shard index and where it was read from.
type IndexFile = (PathBuf, WeightIndex);

/// The weight files of a model directory: the single file, or the shards
/// its index names (with the index, to check against them).
fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<IndexFile>)> {
    let single = dir.join(WEIGHTS_FILE);
    let index_path = dir.join(WEIGHTS_INDEX_FILE);
    if single.is_file() {
        return Ok((vec![single], None));
    }
    if !index_path.is_file() {
        return Err(ModelError::Safetensors {
            path: dir.to_path_buf(),
            message: format!("neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX_FILE} is there"),
        });
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
    let index: WeightIndex = serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
        path: index_path.clone(),
        message: format!("bad index: {e}"),
    })?;
    let mut files: Vec<PathBuf> = index.weight_map.values().map(|f| dir.join(f)).collect();
    files.sort();
    files.dedup();
    Ok((files, Some((index_path, index))))
}

impl Checkpoint {
    /// Opens the weights of a model directory. Fails with the file's name when
    /// a file is missing, truncated or not safetensors, or when the index and
    /// the shards disagree.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let (files, index) = weight_files(dir)?;
        let mut checkpoint = Checkpoint {
            dir: dir.to_path_buf(),
            shards: Vec::with_capacity(files.len()),
            tensors: BTreeMap::new(),
        };
        for path in files {
            checkpoint.add_shard(path)?;
        }
        if let Some((index_path, index)) = index {
            checkpoint.check_index(&index_path, &index)?;
        }
        Ok(checkpoint)
    }

    /// Maps one weight file and records its tensors; a tensor that another
    /// shard holds too is an error.
    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us
        // would fault, as with any mmap reader (transformers included).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
        let shard_index = self.shards.len();
        let parsed = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        for (name, view) in parsed.iter() {
            let shape = view.shape().iter().map(|&d| d as i64).collect();
            if let Some((other, ..)) = self
                .tensors
                .insert(name.to_string(), (shard_index, view.dtype(), shape))
            {
                return Err(ModelError::Safetensors {
                    path: path.clone(),
                    message: format!(
                        "tensor '{name}' is also in {}",
                        self.shards[other].path.display()
                    ),
                });
            }
        }
        self.shards.push(Shard { path, mmap });
        Ok(())
    }

    /// Every tensor the index lists is in the shard it names.
    fn check_index(&self, index_path: &Path, index: &WeightIndex) -> Result<()> {
        for (name, file) in &index.weight_map {
            let found = self.tensors.get(name).map(|(s, ..)| &self.shards[*s].path);
            if found != Some(&self.dir.join(file)) {
                return Err(ModelError::Safetensors {
                    path: index_path.to_path_buf(),
                    message: format!("tensor '{name}' is listed in {file} but is not there"),
                });
            }
        }
        Ok(())
    }

    /// Tensor names and shapes in the checkpoint.
    pub fn shapes(&self) -> BTreeMap<String, Vec<i64>> {
        self.tensors
            .iter()
            .map(|(name, (_, _, shape))| (name.clone(), shape.clone()))
            .collect()
    }

    /// Copies the checkpoint into `variables` (converting dtype and device).
    /// Names for which `ignore` is true may be in the checkpoint without a
    /// variable. Nothing is copied unless every variable has a tensor of the
    /// right shape and every other tensor is ignorable.
    pub fn load_into(
        &self,
        variables: &HashMap<String, Tensor>,
        ignore: impl Fn(&str) -> bool,
    ) -> Result<()> {
        self.check_against(variables, &ignore)?;
        for (shard_index, shard) in self.shards.iter().enumerate() {
            let parsed =
                SafeTensors::deserialize(&shard.mmap).map_err(|e| ModelError::Safetensors {
                    path: shard.path.clone(),
                    message: e.to_string(),
                })?;
            for (name, view) in parsed.iter() {
                debug_assert_eq!(self.tensors[name].0, shard_index);
                let Some(variable) = variables.get(name) else {
                    continue;
                };
                let kind = kind_of(view.dtype()).ok_or_else(|| ModelError::Safetensors {
                    path: shard.path.clone(),
                    message: format!(
                        "tensor '{name}' has dtype {:?}, premem reads F32, F16, BF16 and F64",
                        view.dtype()
                    ),
                })?;
                let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
                let source = Tensor::f_from_data_size(view.data(), &shape, kind)?;
                tch::no_grad(|| {
                    let mut target = variable.shallow_clone();
                    target.f_copy_(&source)
                })?;
            }
        }
        Ok(())
    }

    fn check_against(
        &self,
        variables: &HashMap<String, Tensor>,
        ignore: &impl Fn(&str) -> bool,
    ) -> Result<()> {
        let mut missing = vec![];
        let mut mis_shaped = vec![];
        for (name, var) in sorted(variables) {
            match self.tensors.get(name) {
                None => missing.push(format!("{name} {:?}", var.size())),
                Some((_, _, shape)) if *shape != var.size() => mis_shaped.push(format!(
                    "{name}: checkpoint has {shape:?}, config implies {:?}",
                    var.size()
                )),
                Some(_) => {}
            }
        }
        let unexpected: Vec<String> = self
            .tensors
            .iter()
            .filter(|(name, _)| !variables.contains_key(*name) && !ignore(name))
            .map(|(name, (shard, _, shape))| {
                format!(
                    "{name} {shape:?} (in {})",
                    file_name(&self.shards[*shard].path)
                )
            })
            .collect();
        let mut details = String::new();
        for (what, names) in [
            ("missing tensors", missing),
            ("tensors with the wrong shape", mis_shaped),
            ("unexpected tensors", unexpected),
        ] {
            if names.is_empty() {
                continue;
            }
            details.push_str(&format!("  {} {what}:\n", names.len()));
            for name in names.iter().take(LISTED_PROBLEMS) {
                details.push_str(&format!("    {name}\n"));
            }
            if names.len() > LISTED_PROBLEMS {
                details.push_str(&format!(
                    "    ... and {} more\n",
                    names.len() - LISTED_PROBLEMS
                ));
            }
        }
        if details.is_empty() {
            Ok(())
        } else {
            Err(ModelError::WeightsMismatch {
                path: self.dir.clone(),
                details: details.trim_end().to_string(),
            })
        }
    }
}

fn sorted(variables: &HashMap<String, Tensor>) -> BTreeMap<&str, &Tensor> {
    variables.iter().map(|(k, v)| (k.as_str(), v)).collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    match kind {
        Kind::Float => Ok(Dtype::F32),
        Kind::Half => Ok(Dtype::F16),
        Kind::BFloat16 => Ok(Dtype::BF16),
        Kind::Double => Ok(Dtype::F64),
        other => Err(ModelError::Invalid(format!(
            "cannot save tensors of kind {other:?}"
        ))),
    }
}

/// The name transformers writes in `config.json` for a weight kind.
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "float16",
        Kind::BFloat16 => "bfloat16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// A tensor as safetensors sees it: bytes are fetched (from the GPU too) only
/// when the writer reaches it, so saving holds one tensor in host memory.
struct TensorBytes<'a> {
    tensor: &'a Tensor,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl View for TensorBytes<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let host = self.tensor.to_device(tch::Device::Cpu).contiguous();
        let mut bytes = vec![0u8; self.data_len()];
        host.copy_data_u8(&mut bytes, host.numel());
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

/// Writes named tensors as `model.safetensors`, or as shards of at most
/// `max_shard_bytes` (a larger single tensor gets its own shard) with
/// `model.safetensors.index.json`, as transformers does. Each file is written
/// under a temporary name and renamed; weight files of the other layout left
/// from an earlier save are removed so loaders cannot pick stale ones.
pub fn save_safetensors(
    dir: &Path,
    tensors: &BTreeMap<String, Tensor>,
    max_shard_bytes: u64,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut shards: Vec<Vec<(&str, &Tensor)>> = vec![vec![]];
    let mut shard_bytes = 0u64;
    for (name, tensor) in tensors {
        let bytes = (tensor.numel() * tensor.kind().elt_size_in_bytes()) as u64;
        if shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes {
            shards.push(vec![]);
            shard_bytes = 0;
        }
        shards.last_mut().expect("non-empty").push((name, tensor));
        shard_bytes += bytes;
    }
    remove_weight_files(dir)?;
    let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    if shards.len() == 1 {
        return write_shard(&dir.join(WEIGHTS_FILE), &shards[0], metadata);
    }
    let total = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, total);
        write_shard(&dir.join(&file), shard, metadata.clone())?;
        for (name, tensor) in shard {
            weight_map.insert(name.to_string(), file.clone());
            total_size += (tensor.numel() * tensor.kind().elt_size_in_bytes()) as u64;
        }
    }
    let index = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    write_atomic(
        &dir.join(WEIGHTS_INDEX_FILE),
        serde_json::to_string_pretty(&index)
            .expect("json")
            .as_bytes(),
    )
}

fn write_shard(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, tensor)| {
            Ok((
                *name,
                TensorBytes {
                    tensor,
                    dtype: dtype_of(tensor.kind())?,
                    shape: tensor.size().iter().map(|&d| d as usize).collect(),
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let tmp = temporary_name(path);
    safetensors::tensor::serialize_to_file(views, metadata, &tmp).map_err(|e| {
        ModelError::Safetensors {
            path: tmp.clone(),
            message: e.to_string(),
        }
    })?;
    sync_and_rename(&tmp, path)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_name(path);
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    sync_and_rename(&tmp, path)
}

fn temporary_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

fn sync_and_rename(tmp: &Path, path: &Path) -> Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| ModelError::io(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| ModelError::io(path, e))
}

fn remove_weight_files(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ModelError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard =
            name.starts_with("model-") && name.ends_with(".safetensors") && name.contains("-of-");
        if name == WEIGHTS_FILE || name == WEIGHTS_INDEX_FILE || is_shard {
            std::fs::remove_file(entry.path()).map_err(|e| ModelError::io(entry.path(), e))?;
        }
    }
    Ok(())
}
