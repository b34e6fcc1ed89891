//! Shared helpers of the tokenizer, chat-template, GGUF and sampling tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// `<repo>/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// `<repo>/fixtures/tokenizers/<name>`.
pub fn tokenizer_dir(name: &str) -> PathBuf {
    fixtures().join("tokenizers").join(name)
}

/// Reads a JSON fixture.
pub fn read_json(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON in {}: {e}", path.display()))
}

#[path = "../../../../tests/support/smollm2.rs"]
mod smollm2;

/// The SmolLM2 GGUF (fetched on first use).
pub fn smollm2_gguf() -> PathBuf {
    smollm2::smollm2_gguf()
}

/// JSON array of ints → Vec<u32>.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// The tensors of a safetensors fixture as f64 vectors (f32, f64 and i64 tensors), with
/// shapes.
pub fn safetensors(
    path: impl AsRef<Path>,
) -> std::collections::HashMap<String, (Vec<usize>, Vec<f64>)> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let mut out = std::collections::HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f64> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            safetensors::Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("unexpected dtype {other:?} for {name}"),
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    out
}

/// A fresh empty directory under the target dir's temp area.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "l2d-models-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
