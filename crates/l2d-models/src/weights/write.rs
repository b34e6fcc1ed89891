//! Writing weight files: f32 safetensors bytes, and an atomic file write that never leaves a
//! half-written file in place of a good one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;

/// An f32 tensor as safetensors' writer takes it.
struct F32Tensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &F32Tensor {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
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

/// The bytes of a safetensors file holding `tensors` (each converted to f32, little-endian)
/// and `metadata` in its header.
///
/// # Errors
/// safetensors' own error for names or shapes it cannot write.
pub fn serialize_f32(
    tensors: Vec<(String, TensorData)>,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let tensors: Vec<(String, F32Tensor)> = tensors
        .into_iter()
        .map(|(name, data)| {
            let shape = data.shape().to_vec();
            let values: Vec<f32> = data
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, F32Tensor { shape, bytes })
        })
        .collect();
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced to disk, then
/// renamed over `path`: a reader sees the old file or the new one, never a part. On failure
/// the temporary file is removed and `path` is left as it was.
///
/// # Errors
/// The I/O error; `InvalidInput` when `path` names no file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_tensors_read_back_as_f32_with_their_metadata() {
        let data = TensorData::new(vec![1.5f64, -2.0, 0.25, 8.0], [2, 2]);
        let meta = HashMap::from([("format".to_string(), "test".to_string())]);
        let bytes = serialize_f32(vec![("w".into(), data)], meta).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("w").unwrap();
        assert_eq!(w.dtype(), safetensors::Dtype::F32);
        assert_eq!(w.shape(), &[2, 2]);
        let values: Vec<f32> = w
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, [1.5, -2.0, 0.25, 8.0]);
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["format"], "test");
    }

    #[test]
    fn atomic_writes_replace_the_file_and_a_failed_one_leaves_it_alone() {
        let dir = std::env::temp_dir().join(format!("l2d-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.bin");
        write_atomically(&file, b"first").unwrap();
        write_atomically(&file, b"second").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"second");
        // A folder in the file's place: the rename fails, the folder stays, no temporary
        // file is left behind.
        let blocked = dir.join("sub");
        std::fs::create_dir_all(blocked.join("inner")).unwrap();
        assert!(write_atomically(&blocked, b"x").is_err());
        assert!(blocked.join("inner").is_dir());
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        let e = write_atomically(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
