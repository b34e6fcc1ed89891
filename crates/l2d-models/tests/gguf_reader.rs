//! The GGUF container and dequantisation against the `gguf` Python package
//! (`fixtures/gguf/all-types.*`, made by `scripts/make_smollm2_reference.py`): every
//! metadata value type, nested arrays, a non-default alignment, tensors of every supported
//! encoding; v2 files; malformed files give typed errors, never panics.

mod tokenizer_support;

use burn::tensor::DType;
use l2d_models::gguf::{GgmlType, GgufError, GgufFile, GgufValue};
use tokenizer_support::{fixtures, read_json, safetensors};

fn path() -> std::path::PathBuf {
    fixtures().join("gguf/all-types.gguf")
}

fn bytes() -> Vec<u8> {
    std::fs::read(path()).unwrap()
}

#[test]
fn metadata_of_every_type() {
    let file = GgufFile::open(path()).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 64);
    assert_eq!(file.data_offset() % 64, 0);
    let expected = read_json(fixtures().join("gguf/all-types.json"));
    use GgufValue::*;
    let want = [
        ("t.u8", U8(250)),
        ("t.i8", I8(-100)),
        ("t.u16", U16(65000)),
        ("t.i16", I16(-32000)),
        ("t.u32", U32(4_000_000_000)),
        ("t.i32", I32(-2_000_000_000)),
        ("t.f32", F32(0.1)),
        ("t.bool", Bool(true)),
        ("t.string", String("héllo 🤗".into())),
        ("t.u64", U64(18_000_000_000_000_000_000)),
        ("t.i64", I64(-9_000_000_000_000_000_000)),
        ("t.f64", F64(-2.5e-300)),
        ("t.arr_i32", Array(vec![I32(1), I32(-2), I32(3)])),
        ("t.arr_u8", Array(vec![U8(1), U8(2), U8(255)])),
        (
            "t.arr_str",
            Array(vec![
                String("a".into()),
                String("".into()),
                String("ü".into()),
            ]),
        ),
        ("t.arr_f32", Array(vec![F32(0.5), F32(-1.25)])),
        ("t.arr_bool", Array(vec![Bool(true), Bool(false)])),
        (
            "t.arr_nested",
            Array(vec![Array(vec![I32(1), I32(2)]), Array(vec![I32(3)])]),
        ),
    ];
    for (key, value) in &want {
        assert_eq!(file.get(key), Some(value), "{key}");
        if *key != "t.arr_nested" {
            // The Python reader's view (it flattens nested arrays, so that one is skipped).
            let py = &expected["metadata"][key];
            match value {
                F32(v) => assert_eq!(py.as_f64().unwrap(), f64::from(*v), "{key}"),
                _ => assert_eq!(&value.to_json(), py, "{key}"),
            }
        }
    }
    assert_eq!(
        file.get_str("general.architecture").unwrap(),
        Some("testarch")
    );
    assert_eq!(file.get_u64("t.u8").unwrap(), Some(250));
    let err = file.get_u64("t.string").unwrap_err();
    assert!(
        matches!(err, GgufError::WrongType { ref key, .. } if key == "t.string"),
        "{err}"
    );
    let err = file.get_u64("t.i8").unwrap_err();
    assert!(
        matches!(err, GgufError::WrongType { .. }),
        "a negative value is not unsigned: {err}"
    );
}

#[test]
fn tensor_infos_and_dequantisation_equal_the_gguf_package() {
    let file = GgufFile::open(path()).unwrap();
    let expected = read_json(fixtures().join("gguf/all-types.json"));
    let values = safetensors(fixtures().join("gguf/all-types.safetensors"));
    assert_eq!(file.tensor_infos().len(), 6);
    for info in file.tensor_infos() {
        let py = &expected["tensors"][&info.name];
        let dims: Vec<u64> = py["gguf_dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, dims, "{}", info.name);
        assert_eq!(info.ggml_type.to_string(), py["type"].as_str().unwrap());
        assert_eq!(
            file.data_offset() + info.offset,
            py["offset"].as_u64().unwrap(),
            "{}",
            info.name
        );
        let (shape, want) = &values[&info.name];
        assert_eq!(
            &info.shape(),
            shape,
            "{}: PyTorch order is the GGUF dims reversed",
            info.name
        );
        let got = file.dequantize(&info.name).unwrap();
        let got: Vec<f64> = got.iter().map(|&x| f64::from(x)).collect();
        assert_eq!(&got, want, "{}: bit-exact dequantisation", info.name);
    }
    // F16 / BF16 keep their dtype; quantised tensors become f32.
    let dtype = |n: &str| file.tensor_data(n).unwrap().dtype();
    assert_eq!(dtype("f16"), DType::F16);
    assert_eq!(dtype("bf16"), DType::BF16);
    assert_eq!(dtype("q4_1"), DType::F32);
    let bf = file.tensor_data("bf16").unwrap();
    assert_eq!(bf.shape().to_vec(), vec![2, 32]);
    let as_f32: Vec<f64> = bf.iter::<f32>().map(f64::from).collect();
    assert_eq!(&as_f32, &values["bf16"].1);
    let q40 = file.tensor_data("q4_0").unwrap();
    assert_eq!(q40.shape().to_vec(), vec![2, 3, 32]);
}

#[test]
fn version_2_reads_the_same() {
    let mut b = bytes();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let v2 = GgufFile::from_bytes(b, "v2.gguf").unwrap();
    let v3 = GgufFile::open(path()).unwrap();
    assert_eq!(v2.version(), 2);
    assert_eq!(v2.metadata(), v3.metadata());
    assert_eq!(v2.tensor_infos(), v3.tensor_infos());
    assert_eq!(
        v2.dequantize("q8_0").unwrap(),
        v3.dequantize("q8_0").unwrap()
    );
}

#[test]
fn default_alignment_is_32() {
    // The tiny llama has no `general.alignment`.
    let file = GgufFile::open(fixtures().join("gguf/tiny-llama.gguf")).unwrap();
    assert!(file.get("general.alignment").is_none());
    assert_eq!(file.alignment(), 32);
    assert_eq!(file.data_offset() % 32, 0);
    assert!(file.tensor_infos().iter().all(|t| t.offset % 32 == 0));
}

#[test]
fn every_truncation_is_a_typed_error() {
    let b = bytes();
    let file = GgufFile::open(path()).unwrap();
    let header_end = file.data_offset() as usize;
    // The file may end with padding after its last tensor; cutting there is harmless.
    let data_end = file
        .tensor_infos()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.ggml_type.byte_size(t.num_elements()).unwrap())
        .max()
        .unwrap() as usize;
    assert!(data_end <= b.len());
    let cut = |len: usize| GgufFile::from_bytes(b[..len].to_vec(), "cut.gguf");
    assert!(cut(data_end).is_ok());
    for len in (0..data_end)
        .step_by(7)
        .chain([header_end - 1, header_end, data_end - 1])
    {
        let err = cut(len).unwrap_err();
        assert!(
            matches!(err, GgufError::Format { .. } | GgufError::Tensor { .. }),
            "length {len}: {err:?}"
        );
        assert!(err.to_string().contains("cut.gguf"), "{err}");
    }
}

#[test]
fn malformed_headers_are_typed_errors() {
    let b = bytes();
    let mut bad_magic = b.clone();
    bad_magic[..4].copy_from_slice(b"GGML");
    let err = GgufFile::from_bytes(bad_magic, "m.gguf").unwrap_err();
    assert!(err.to_string().contains("not a GGUF file"), "{err}");

    let mut v1 = b.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    let err = GgufFile::from_bytes(v1, "v1.gguf").unwrap_err();
    assert!(
        err.to_string().contains("unsupported GGUF version 1"),
        "{err}"
    );

    // The first metadata value type (after magic, version, two counts and the first key).
    let key_len = u64::from_le_bytes(b[24..32].try_into().unwrap()) as usize;
    let type_at = 32 + key_len;
    let mut bad_type = b.clone();
    bad_type[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    let err = GgufFile::from_bytes(bad_type, "t.gguf").unwrap_err();
    assert!(err.to_string().contains("unknown value type 99"), "{err}");

    // A huge tensor count cannot make the reader allocate or loop forever.
    let mut huge = b.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(GgufFile::from_bytes(huge, "h.gguf").is_err());
}

/// Byte position of a tensor info's type field.
fn type_field(b: &[u8], name: &str) -> usize {
    let needle = [&(name.len() as u64).to_le_bytes()[..], name.as_bytes()].concat();
    let at = b
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap()
        + needle.len();
    let n_dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    at + 4 + 8 * n_dims
}

#[test]
fn tensor_problems_are_typed_errors_naming_the_tensor() {
    let b = bytes();
    // An encoding this reader does not dequantise (I8 has a known size, so the file parses).
    let mut other = b.clone();
    let at = type_field(&b, "f32");
    other[at..at + 4].copy_from_slice(&24u32.to_le_bytes());
    let file = GgufFile::from_bytes(other, "i8.gguf").unwrap();
    assert_eq!(
        file.tensor_info("f32").unwrap().ggml_type,
        GgmlType::Other(24)
    );
    let err = file.dequantize("f32").unwrap_err();
    assert!(
        matches!(err, GgufError::UnsupportedType { ref tensor, .. } if tensor == "f32"),
        "{err}"
    );
    assert!(err.to_string().contains("I8"), "{err}");

    // An offset past the end of the file.
    let mut far = b.clone();
    let at = type_field(&b, "q4_1") + 4;
    far[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let err = GgufFile::from_bytes(far, "far.gguf").unwrap_err();
    assert!(
        matches!(err, GgufError::Tensor { ref tensor, .. } if tensor == "q4_1"),
        "{err}"
    );

    // A misaligned offset.
    let mut odd = b.clone();
    odd[at..at + 8].copy_from_slice(&3u64.to_le_bytes());
    let err = GgufFile::from_bytes(odd, "odd.gguf").unwrap_err();
    assert!(err.to_string().contains("alignment"), "{err}");

    // A quantised tensor whose rows are not whole blocks.
    let mut rows = b.clone();
    let at = type_field(&b, "q8_0") - 16; // dims [64, 3] → [48, 3]
    rows[at..at + 8].copy_from_slice(&48u64.to_le_bytes());
    let err = GgufFile::from_bytes(rows, "rows.gguf").unwrap_err();
    assert!(err.to_string().contains("block size 32"), "{err}");

    let file = GgufFile::open(path()).unwrap();
    let err = file.dequantize("nope").unwrap_err();
    assert!(matches!(err, GgufError::MissingTensor { .. }), "{err}");
    let err = GgufFile::open(fixtures().join("gguf/missing.gguf")).unwrap_err();
    assert!(matches!(err, GgufError::Io { .. }), "{err}");
}

/// Two tensors pointing at the same bytes (a corrupt or crafted index) are refused, naming
/// both.
#[test]
fn tensors_whose_bytes_overlap_are_refused() {
    let b = bytes();
    let offset_of = |name: &str| {
        let at = type_field(&b, name) + 4;
        (at, u64::from_le_bytes(b[at..at + 8].try_into().unwrap()))
    };
    let (_, f32_offset) = offset_of("f32");
    let (at, _) = offset_of("f16");
    let mut shared = b.clone();
    shared[at..at + 8].copy_from_slice(&f32_offset.to_le_bytes());
    let err = GgufFile::from_bytes(shared, "overlap.gguf")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("overlap") && err.contains("f32") && err.contains("f16"),
        "{err}"
    );
    // The unmodified file has none.
    assert!(GgufFile::from_bytes(b, "ok.gguf").is_ok());
}
