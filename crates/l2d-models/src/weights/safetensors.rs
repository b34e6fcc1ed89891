//! [`WeightSource`] over memory-mapped safetensors files: one `model.safetensors`, or the
//! shards of a `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ::safetensors::{Dtype, SafeTensors};
use burn::tensor::TensorData;
use memmap2::Mmap;

use super::{WeightError, WeightSource};

/// The file name of a single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The file name of a sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the shard's file.
    range: (usize, usize),
}

/// Tensors of one or several memory-mapped safetensors files.
///
/// For a sharded checkpoint the index's `weight_map` is authoritative: every tensor is read
/// only from the shard the index names; a listed shard that is missing, a tensor stored in
/// two files, a tensor in a shard the index does not list, or a listed tensor absent from its
/// shard are errors naming the tensor and files. Files are mapped read-only and must not be
/// modified while the source is alive.
pub struct SafetensorsSource {
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
    index: Option<PathBuf>,
}

impl std::fmt::Debug for SafetensorsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsSource")
            .field("files", &self.files())
            .field("index", &self.index)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn file_err(path: &Path, reason: impl ToString) -> WeightError {
    WeightError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn map_shard(path: &Path) -> Result<(Shard, Vec<(String, Entry)>), WeightError> {
    let file = File::open(path).map_err(|e| file_err(path, e))?;
    // SAFETY: the mapping is read-only; the documented contract is that checkpoint files are
    // not modified while a source is alive (as for every memory-mapped loader).
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| file_err(path, e))?;
    let (header_len, metadata) = SafeTensors::read_metadata(&mmap[..]).map_err(|e| match e {
        // safetensors requires the tensors' byte ranges to tile the data section; a gap
        // (a tensor removed from the header, or resized) is reported on the tensor after it.
        safetensors::SafeTensorError::InvalidOffset(name) => file_err(
            path,
            format!(
                "the header's byte ranges do not tile the data: a gap or overlap before \
                 `{name}` (a tensor removed from the header, or resized?)"
            ),
        ),
        e => file_err(path, e),
    })?;
    let base = 8 + header_len;
    let entries = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (s, e) = info.data_offsets;
            let entry = Entry {
                shard: 0,
                dtype: info.dtype,
                shape: info.shape.clone(),
                range: (base + s, base + e),
            };
            (name, entry)
        })
        .collect();
    Ok((
        Shard {
            path: path.to_path_buf(),
            mmap,
        },
        entries,
    ))
}

impl SafetensorsSource {
    /// Opens a checkpoint: a folder (its `model.safetensors.index.json` if present, else its
    /// `model.safetensors`), an index `.json` file, or a `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            let single = path.join(SINGLE_FILE);
            if index.is_file() {
                Self::from_index(index)
            } else if single.is_file() {
                Self::from_file(single)
            } else {
                Err(file_err(
                    path,
                    format!("folder holds neither `{INDEX_FILE}` nor `{SINGLE_FILE}`"),
                ))
            }
        } else if path.extension().is_some_and(|e| e == "json") {
            Self::from_index(path)
        } else {
            Self::from_file(path)
        }
    }

    /// Maps one `.safetensors` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let (shard, entries) = map_shard(path.as_ref())?;
        Ok(Self {
            shards: vec![shard],
            tensors: entries.into_iter().collect(),
            index: None,
        })
    }

    /// Maps the shards of a `model.safetensors.index.json`, checking them against its
    /// `weight_map`.
    pub fn from_index(index_path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let index_path = index_path.as_ref();
        let text = std::fs::read_to_string(index_path).map_err(|e| file_err(index_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| file_err(index_path, e))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| file_err(index_path, "no `weight_map` object"))?;
        let mut weight_map: BTreeMap<String, String> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| {
                file_err(
                    index_path,
                    format!("weight_map entry `{name}` is not a file name"),
                )
            })?;
            weight_map.insert(name.clone(), file.to_string());
        }
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shard_names: Vec<&String> = weight_map.values().collect();
        shard_names.sort();
        shard_names.dedup();

        let mut shards = Vec::new();
        let mut found: BTreeMap<String, Vec<(usize, Entry)>> = BTreeMap::new();
        for name in &shard_names {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(WeightError::MissingShard {
                    shard: path,
                    index: index_path.into(),
                });
            }
            let (shard, entries) = map_shard(&path)?;
            let i = shards.len();
            shards.push(shard);
            for (t, mut e) in entries {
                e.shard = i;
                found.entry(t).or_default().push((i, e));
            }
        }

        let mut tensors = BTreeMap::new();
        for (name, mut places) in found {
            if places.len() > 1 {
                return Err(WeightError::Duplicate {
                    name,
                    files: places
                        .iter()
                        .map(|(i, _)| shards[*i].path.clone())
                        .collect(),
                });
            }
            let (i, entry) = places.pop().expect("one place");
            match weight_map.get(&name) {
                None => {
                    return Err(WeightError::NotInIndex {
                        name,
                        file: shards[i].path.clone(),
                        index: index_path.into(),
                    });
                }
                Some(listed) if dir.join(listed) != shards[i].path => {
                    return Err(WeightError::IndexMismatch {
                        name,
                        index: index_path.into(),
                        listed: dir.join(listed),
                        found: Some(shards[i].path.clone()),
                    });
                }
                Some(_) => {
                    tensors.insert(name, entry);
                }
            }
        }
        if let Some((name, listed)) = weight_map.iter().find(|(n, _)| !tensors.contains_key(*n)) {
            return Err(WeightError::IndexMismatch {
                name: name.clone(),
                index: index_path.into(),
                listed: dir.join(listed),
                found: None,
            });
        }
        Ok(Self {
            shards,
            tensors,
            index: Some(index_path.into()),
        })
    }

    /// The mapped files, in shard order.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The index file of a sharded checkpoint.
    pub fn index(&self) -> Option<&Path> {
        self.index.as_deref()
    }
}

fn decode<const N: usize, E>(bytes: &[u8], f: impl Fn([u8; N]) -> E) -> Vec<E> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

impl WeightSource for SafetensorsSource {
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|e| e.shape.clone())
    }

    fn tensor_data(&self, name: &str) -> Result<TensorData, WeightError> {
        let entry = self.tensors.get(name).ok_or_else(|| WeightError::Missing {
            name: name.into(),
            location: self.location(name),
        })?;
        let shard = &self.shards[entry.shard];
        let bytes = &shard.mmap[entry.range.0..entry.range.1];
        let shape = entry.shape.clone();
        Ok(match entry.dtype {
            Dtype::F32 => TensorData::new(decode(bytes, f32::from_le_bytes), shape),
            Dtype::F64 => TensorData::new(decode(bytes, f64::from_le_bytes), shape),
            Dtype::F16 => TensorData::new(
                decode(bytes, |b| half::f16::from_bits(u16::from_le_bytes(b))),
                shape,
            ),
            Dtype::BF16 => TensorData::new(
                decode(bytes, |b| half::bf16::from_bits(u16::from_le_bytes(b))),
                shape,
            ),
            other => {
                return Err(WeightError::UnsupportedDType {
                    name: name.into(),
                    path: shard.path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        })
    }

    fn location(&self, name: &str) -> String {
        match (self.tensors.get(name), &self.index) {
            (Some(e), _) => format!("`{}`", self.shards[e.shard].path.display()),
            (None, Some(index)) => format!(
                "`{}` (shards {})",
                index.display(),
                self.shards
                    .iter()
                    .map(|s| format!("`{}`", s.path.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, None) => format!("`{}`", self.shards[0].path.display()),
        }
    }
}
