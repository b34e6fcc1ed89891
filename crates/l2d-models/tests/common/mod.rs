//! Helpers shared by the integration tests: fixture paths, reading `cases.safetensors`,
//! comparing logits, and writing altered checkpoints into temporary folders.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use l2d_models::l2d_config::L2dConfig;
use safetensors::{Dtype, SafeTensors};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn hf_fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/hf").join(name)
}

pub fn reference_fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures/reference").join(name)
}

/// A raw tensor read from or written to a safetensors file.
#[derive(Clone, Debug)]
pub struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl safetensors::View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

pub fn read_all(path: &Path) -> BTreeMap<String, Raw> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                Raw {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect()
}

pub fn write_all(path: &Path, tensors: &BTreeMap<String, Raw>) {
    safetensors::serialize_to_file(tensors.iter().map(|(k, v)| (k.clone(), v)), None, path)
        .unwrap();
}

impl Raw {
    pub fn f32(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32);
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn i64(&self) -> Vec<i64> {
        assert_eq!(self.dtype, Dtype::I64);
        self.bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    pub fn from_f32(values: &[f32], shape: Vec<usize>) -> Raw {
        Raw {
            dtype: Dtype::F32,
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// `cases.safetensors` of a fixture.
pub struct Cases(pub BTreeMap<String, Raw>);

impl Cases {
    pub fn open(path: &Path) -> Self {
        Cases(read_all(path))
    }
    pub fn raw(&self, name: &str) -> &Raw {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("case tensor `{name}` missing"))
    }
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let r = self.raw(name);
        (r.f32(), r.shape.clone())
    }
    pub fn ids(&self, name: &str, device: &Device) -> Tensor<2, Int> {
        let r = self.raw(name);
        Tensor::from_data(TensorData::new(r.i64(), [r.shape[0], r.shape[1]]), device)
    }
    pub fn ids_vec(&self, name: &str) -> Vec<i64> {
        self.raw(name).i64()
    }
}

pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Max absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn max_abs(a: &[f32]) -> f32 {
    a.iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "l2d-models-test-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh temporary folder holding copies of `src`'s files.
pub fn copy_to_temp(src: &Path) -> TempDir {
    let dir = TempDir::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            let mut perm = std::fs::metadata(dir.path().join(p.file_name().unwrap()))
                .unwrap()
                .permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            std::fs::set_permissions(dir.path().join(p.file_name().unwrap()), perm).unwrap();
        }
    }
    dir
}

/// Edits a JSON file in place.
pub fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// A diffusion path small enough for every test base: flow width 8, LoRA rank 3 (alpha =
/// rank), small modulation networks.
pub fn tiny_l2d_config() -> L2dConfig {
    L2dConfig {
        flow_representation_dim: Some(8),
        flow_to_lm_hidden_size: Some(12),
        timestep_modulation_hidden_size: Some(10),
        timestep_modulation_freq_embedding_size: Some(16),
        flow_lora_rank: 3,
        flow_lora_alpha: None,
        ..L2dConfig::default()
    }
}
