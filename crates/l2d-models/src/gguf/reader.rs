//! The GGUF container: header, metadata, tensor infos and the tensor data section.
//!
//! Layout (little-endian, versions 2 and 3; version 1 used 32-bit counts and is rejected):
//! `"GGUF"`, `u32 version`, `u64 tensor_count`, `u64 metadata_kv_count`, the metadata
//! (`string key`, `u32 value_type`, value), the tensor infos (`string name`, `u32 n_dims`,
//! `n_dims × u64` dims fastest-first, `u32 ggml_type`, `u64 offset`), padding to
//! `general.alignment` (default 32), then the tensor data; each tensor's offset is relative to
//! the start of that data section. Strings are `u64 length` + UTF-8 bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::GgufError;
use super::dequant::GgmlType;

/// The default alignment of the tensor data section and of each tensor's offset.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value, one variant per GGUF value type.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (one byte, 0 or 1).
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: elements of one type, possibly arrays themselves.
    Array(Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// The GGUF name of the value's type (`"u32"`, `"string"`, `"array"`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// The value as a signed integer, for every integer type whose value fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an unsigned integer, for every integer type holding a value ≥ 0.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value as a float, for the float types and the integer types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a bool (type 7 only).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string slice (type 8 only).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of an array (type 9 only).
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The value as JSON (integers as numbers, arrays as lists).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            GgufValue::U8(v) => J::from(*v),
            GgufValue::I8(v) => J::from(*v),
            GgufValue::U16(v) => J::from(*v),
            GgufValue::I16(v) => J::from(*v),
            GgufValue::U32(v) => J::from(*v),
            GgufValue::I32(v) => J::from(*v),
            GgufValue::F32(v) => J::from(f64::from(*v)),
            GgufValue::Bool(v) => J::from(*v),
            GgufValue::String(v) => J::from(v.clone()),
            GgufValue::Array(v) => J::Array(v.iter().map(GgufValue::to_json).collect()),
            GgufValue::U64(v) => J::from(*v),
            GgufValue::I64(v) => J::from(*v),
            GgufValue::F64(v) => J::from(*v),
        }
    }
}

impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::Array(v) if v.len() > 8 => write!(f, "[{} × {}]", v.len(), v[0].type_name()),
            _ => write!(f, "{}", self.to_json()),
        }
    }
}

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The GGUF tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as stored: fastest-varying first (`[ne0, ne1]` is a row-major
    /// `[ne1, ne0]` matrix).
    pub dims: Vec<u64>,
    /// The element encoding.
    pub ggml_type: GgmlType,
    /// Offset of the tensor's bytes from the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch / row-major order (the GGUF dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The bytes of a GGUF file: memory-mapped or owned.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file (read-only). Tensor bytes stay in the (memory-mapped) file until a
/// tensor is asked for.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses a GGUF file, memory-mapping its bytes.
    ///
    /// # Errors
    /// [`GgufError::Io`] if the file cannot be read, [`GgufError::Format`] if it is not a
    /// well-formed GGUF v2/v3 file (bad magic, truncated header, invalid UTF-8, unknown value
    /// type, tensors outside the file or misaligned).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: the mapping is read-only and private to this value; like every reader of
        // model files we assume the file is not truncated or rewritten while it is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Bytes::Mapped(map))
    }

    /// Parses GGUF bytes held in memory; `path` is only used in error messages.
    ///
    /// # Errors
    /// As [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self, GgufError> {
        Self::parse(path.into(), Bytes::Owned(bytes))
    }

    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self, GgufError> {
        let data = bytes.as_slice();
        let mut r = Cursor {
            data,
            pos: 0,
            path: &path,
        };
        let magic = r.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(r.error(format!(
                "not a GGUF file (magic {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(magic)
            )));
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(r.error(format!(
                "unsupported GGUF version {version} (only 2 and 3 are read; a huge number \
                 means a big-endian file)"
            )));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;

        let mut metadata = Vec::with_capacity(r.bounded_capacity(kv_count, 13));
        let mut metadata_index = HashMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata value type")?;
            let value = r.value(ty, &key, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(r.error(format!("metadata key `{key}` appears twice")));
            }
            metadata.push((key, value));
        }

        let alignment = match metadata_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let v = &metadata[i].1;
                match v.as_u64() {
                    Some(a) if a > 0 && a.is_power_of_two() => a,
                    _ => {
                        return Err(r.error(format!(
                            "`general.alignment` must be a power of two, found {v}"
                        )));
                    }
                }
            }
        };

        let mut tensors = Vec::with_capacity(r.bounded_capacity(tensor_count, 24));
        let mut tensor_index = HashMap::new();
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.tensor_error(&name, format!("{n_dims} dimensions (1 to 4 allowed)")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let ggml_type = GgmlType::from_id(r.u32("tensor type")?);
            let offset = r.u64("tensor offset")?;
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(r.tensor_error(&name, "appears twice".into()));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let file_len = data.len() as u64;
        if data_offset > file_len && !tensors.is_empty() {
            return Err(r.error("the file ends before its tensor data section".into()));
        }
        // Byte ranges `[offset, offset + size)` of the tensors of known size, to refuse
        // tensors that share bytes (a corrupt or crafted index).
        let mut ranges: Vec<(u64, u64, &str)> = Vec::with_capacity(tensors.len());
        for t in &tensors {
            if t.offset % alignment != 0 {
                return Err(r.tensor_error(
                    &t.name,
                    format!(
                        "offset {} is not a multiple of the alignment {alignment}",
                        t.offset
                    ),
                ));
            }
            let n = t
                .dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| r.tensor_error(&t.name, format!("invalid dims {:?}", t.dims)))?;
            if let Some((block, _)) = t.ggml_type.block() {
                if t.dims[0] % block != 0 {
                    return Err(r.tensor_error(
                        &t.name,
                        format!(
                            "first dimension {} is not a multiple of the {} block size {block}",
                            t.dims[0], t.ggml_type
                        ),
                    ));
                }
                let size = t.ggml_type.byte_size(n).unwrap_or(u64::MAX);
                let end = data_offset
                    .checked_add(t.offset)
                    .and_then(|s| s.checked_add(size));
                if end.is_none_or(|e| e > file_len) {
                    return Err(r.tensor_error(
                        &t.name,
                        format!(
                            "its {size} bytes at offset {} run past the end of the file ({file_len} bytes)",
                            t.offset
                        ),
                    ));
                }
                ranges.push((t.offset, t.offset + size, &t.name));
            }
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            let ((_, end, first), (start, _, second)) = (pair[0], pair[1]);
            if start < end {
                return Err(r.tensor_error(
                    second,
                    format!("its bytes overlap those of `{first}` (offset {start} < {end})"),
                ));
            }
        }
        Ok(GgufFile {
            path,
            bytes,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// The file's path (as given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of the data section (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The byte offset of the tensor data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata entries, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// One metadata value, or `None` if the key is absent.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A required metadata value.
    ///
    /// # Errors
    /// [`GgufError::MissingKey`] if absent.
    pub fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// A metadata value that must be a non-negative integer, if present.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] if present with another type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| self.wrong_type(key, "unsigned integer", v))
            })
            .transpose()
    }

    /// A metadata value that must be a number, if present.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] if present with another type.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong_type(key, "number", v)))
            .transpose()
    }

    /// A metadata value that must be a bool, if present.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] if present with another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.wrong_type(key, "bool", v)))
            .transpose()
    }

    /// A metadata value that must be a string, if present.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] if present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.wrong_type(key, "string", v)))
            .transpose()
    }

    /// A metadata value that must be an array, if present.
    ///
    /// # Errors
    /// [`GgufError::WrongType`] if present with another type.
    pub fn get_array(&self, key: &str) -> Result<Option<&[GgufValue]>, GgufError> {
        self.get(key)
            .map(|v| v.as_array().ok_or_else(|| self.wrong_type(key, "array", v)))
            .transpose()
    }

    pub(crate) fn wrong_type(&self, key: &str, expected: &str, found: &GgufValue) -> GgufError {
        GgufError::WrongType {
            path: self.path.clone(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: found.type_name().to_string(),
        }
    }

    /// All tensor infos, in file order.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor's info, or `None` if absent.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn require_tensor(&self, name: &str) -> Result<&GgufTensorInfo, GgufError> {
        self.tensor_info(name)
            .ok_or_else(|| GgufError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The raw bytes of a tensor.
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`] if absent; [`GgufError::UnsupportedType`] if its encoding
    /// has no known size.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], GgufError> {
        let info = self.require_tensor(name)?;
        let size = info
            .ggml_type
            .byte_size(info.num_elements())
            .ok_or_else(|| self.unsupported(info))?;
        let start = (self.data_offset + info.offset) as usize;
        // Bounds were checked at parse time for every type with a known size.
        Ok(&self.bytes.as_slice()[start..start + size as usize])
    }

    fn unsupported(&self, info: &GgufTensorInfo) -> GgufError {
        GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: info.name.clone(),
            ggml_type: info.ggml_type.to_string(),
        }
    }

    /// A tensor dequantised to f32, row-major in the order of [`GgufTensorInfo::shape`].
    ///
    /// # Errors
    /// [`GgufError::MissingTensor`], or [`GgufError::UnsupportedType`] for encodings other
    /// than F32, F16, BF16, Q8_0, Q4_0 and Q4_1.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.require_tensor(name)?;
        let bytes = self.tensor_bytes(name)?;
        super::dequant::dequantize(info.ggml_type, bytes).ok_or_else(|| self.unsupported(info))
    }

    /// The tensor as burn data in PyTorch shape: F32/F16/BF16 keep their dtype, quantised
    /// types are dequantised to f32.
    ///
    /// # Errors
    /// As [`GgufFile::dequantize`].
    pub fn tensor_data(&self, name: &str) -> Result<burn::tensor::TensorData, GgufError> {
        let info = self.require_tensor(name)?;
        let bytes = self.tensor_bytes(name)?;
        super::dequant::tensor_data(info.ggml_type, bytes, info.shape())
            .ok_or_else(|| self.unsupported(info))
    }
}

/// A bounds-checked little-endian reader over the header.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn error(&self, reason: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            reason: format!("{reason} (at byte {})", self.pos),
        }
    }

    fn tensor_error(&self, tensor: &str, reason: String) -> GgufError {
        GgufError::Tensor {
            path: self.path.to_path_buf(),
            tensor: tensor.to_string(),
            reason,
        }
    }

    /// A capacity for `count` items of at least `min_size` bytes that the rest of the file
    /// could hold: a corrupt count cannot make us allocate more than the file's size.
    fn bounded_capacity(&self, count: u64, min_size: u64) -> usize {
        let remaining = (self.data.len() - self.pos) as u64;
        count.min(remaining / min_size.max(1)) as usize
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(self.error(format!("truncated file: cannot read {what} ({n} bytes)"))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let len = usize::try_from(len).map_err(|_| self.error(format!("{what}: bad length")))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| self.error(format!("{what} is not valid UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        let ctx = format!("value of `{key}`");
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(&ctx)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(&ctx)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&ctx)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&ctx)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(&ctx)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&ctx)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&ctx)?)),
            7 => match self.array::<1>(&ctx)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.error(format!("{ctx}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&ctx)?),
            9 => {
                if depth >= 8 {
                    return Err(self.error(format!("{ctx}: arrays nested too deeply")));
                }
                let elem = self.u32(&ctx)?;
                let n = self.u64(&ctx)?;
                let mut items = Vec::with_capacity(self.bounded_capacity(n, 1));
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(&ctx)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&ctx)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&ctx)?)),
            t => return Err(self.error(format!("{ctx}: unknown value type {t}"))),
        })
    }
}
