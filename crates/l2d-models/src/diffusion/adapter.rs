//! Adapter files: a safetensors file holding only the diffusion path's parameters, under the
//! reference's key names and layout (`model.layers.3.self_attn.flow_q_proj.A`, linear weights
//! `[out, in]`), with JSON metadata in the header's `__metadata__`:
//!
//! | key | value |
//! | --- | --- |
//! | `format` | `l2d-adapter` |
//! | `format_version` | `1` |
//! | `l2d_config` | the [`L2dConfig`] as JSON (reference names) |
//! | `architecture` | the base `model_type` |
//! | `base_model` | the base sizes ([`BaseSummary`]) as JSON |
//! | `base_fingerprint` | [`base_fingerprint`] of the base weights it was trained on |
//! | `num_parameters` | the diffusion path's parameter count |
//!
//! The reference's own checkpoints load directly: an adapter-only file (its key names, no
//! metadata: pass the `l2d_config.json`), or its whole state dict `model.safetensors` (base
//! weights and the LoRA layers' `...wrapped_layer.weight` copies are recognised and skipped;
//! [`load_reference_model`] builds both the base and the path from it).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use serde_json::Value;

use super::error::DiffusionError;
use super::keys::KeyLayout;
use super::path::{BaseSummary, DiffusionPath};
use super::source::FileSource;
use crate::config::ModelConfig;
use crate::decoder::{CausalLm, Projection};
use crate::l2d_config::L2dConfig;
use crate::loading::expected_tensors;
use crate::weights::{
    SafetensorsSource, WeightError, WeightSource, serialize_f32, write_atomically,
};

/// The `format` value of an L2D adapter's metadata.
pub const ADAPTER_FORMAT: &str = "l2d-adapter";
/// Elements sampled per base tensor by [`base_fingerprint`].
pub const FINGERPRINT_SAMPLES: usize = 64;

/// Options of [`DiffusionPath::load`].
#[derive(Debug, Clone, Default)]
pub struct AdapterLoadOptions {
    /// The configuration, for files without one in their metadata (the reference's); when
    /// both exist this one wins.
    pub config: Option<L2dConfig>,
    /// Load even if the base's fingerprint differs from the one recorded in the file.
    pub force: bool,
}

/// The metadata of an adapter file (all `None` for the reference's files).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterMetadata {
    /// `format`.
    pub format: Option<String>,
    /// `l2d_config`.
    pub config: Option<L2dConfig>,
    /// `architecture`.
    pub architecture: Option<String>,
    /// `base_model`.
    pub base: Option<BaseSummary>,
    /// `base_fingerprint`.
    pub base_fingerprint: Option<String>,
    /// Every raw `__metadata__` entry.
    pub raw: HashMap<String, String>,
}

impl AdapterMetadata {
    /// Reads the `__metadata__` of a safetensors file (only its header is read).
    ///
    /// # Errors
    /// [`DiffusionError::Metadata`] for an unreadable header or malformed entries.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, DiffusionError> {
        let path = path.as_ref();
        let bad = |reason: String| DiffusionError::Metadata {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| bad(format!("no safetensors header: {e}")))?;
        let len = u64::from_le_bytes(len);
        let file_len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        if len > file_len.saturating_sub(8) || len > 100_000_000 {
            return Err(bad(format!("header length {len} exceeds the file")));
        }
        let mut header = vec![0u8; len as usize];
        file.read_exact(&mut header)
            .map_err(|e| bad(format!("truncated header: {e}")))?;
        let header: Value =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
        let raw: HashMap<String, String> = match header.get("__metadata__") {
            None => HashMap::new(),
            Some(m) => serde_json::from_value(m.clone())
                .map_err(|e| bad(format!("__metadata__ is not a string map: {e}")))?,
        };
        let config = raw
            .get("l2d_config")
            .map(|s| {
                let v: Value = serde_json::from_str(s)
                    .map_err(|e| bad(format!("l2d_config is not JSON: {e}")))?;
                L2dConfig::from_value(v).map_err(DiffusionError::from)
            })
            .transpose()?;
        let base = raw
            .get("base_model")
            .map(|s| {
                serde_json::from_str::<BaseSummary>(s).map_err(|e| bad(format!("base_model: {e}")))
            })
            .transpose()?;
        Ok(Self {
            format: raw.get("format").cloned(),
            config,
            architecture: raw.get("architecture").cloned(),
            base,
            base_fingerprint: raw.get("base_fingerprint").cloned(),
            raw,
        })
    }
}

impl AdapterMetadata {
    /// Refuses metadata that cannot belong to an adapter this build reads for `base`: another
    /// `format`, a `format_version` other than 1, an `architecture` other than the base's.
    /// Entries that are absent (a reference checkpoint has none) are not checked.
    ///
    /// # Errors
    /// [`DiffusionError::Metadata`] naming the file and the entry.
    pub fn check_format(&self, path: &Path, base: &CausalLm) -> Result<(), DiffusionError> {
        let bad = |reason: String| DiffusionError::Metadata {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(format) = &self.format
            && format != ADAPTER_FORMAT
        {
            return Err(bad(format!(
                "format {format:?} is not an L2D adapter ({ADAPTER_FORMAT:?})"
            )));
        }
        if let Some(version) = self.raw.get("format_version")
            && version != "1"
        {
            return Err(bad(format!(
                "format_version {version:?}: this build reads version 1 (a newer l2d wrote it?)"
            )));
        }
        let model_type = base.config().architecture.model_type();
        if let Some(arch) = &self.architecture
            && !arch.eq_ignore_ascii_case(model_type)
        {
            return Err(bad(format!(
                "architecture {arch:?}: the base model is `{model_type}`"
            )));
        }
        Ok(())
    }
}

/// A fingerprint of a model's weights: an FNV-1a hash over every parameter's path and shape
/// and [`FINGERPRINT_SAMPLES`] evenly spaced elements of it rounded to bf16 (so the same
/// checkpoint loaded in f32 or bf16 gives the same fingerprint). Projections held in blocks
/// are hashed as their float expansion would be, in the same place, so a GGUF loaded with
/// its blocks kept (`--dtype q4_1`) has the fingerprint of its f32 expansion and an adapter
/// trained on either loads on the other. Cheap: it reads a few thousand values, not the
/// weights.
pub fn base_fingerprint(model: &CausalLm) -> String {
    struct Hasher {
        stack: Vec<String>,
        hash: u64,
        /// Projections held in blocks, by the path their float weight would have.
        blocks: std::collections::HashMap<String, std::sync::Arc<l2d_quant::QuantMatrix>>,
        /// Whether the module being visited holds a float tensor.
        visited_float: bool,
    }
    impl Hasher {
        fn feed(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.hash ^= u64::from(*b);
                self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
            }
        }

        /// What `visit_float` feeds for the float weight `[d_in, d_out]` of these blocks
        /// (`[d_out, d_in]`): the path, the shape, the same samples.
        fn feed_blocks(&mut self, q: &l2d_quant::QuantMatrix) {
            let (d_in, d_out) = (q.cols(), q.rows());
            let path = self.stack.join(".");
            self.feed(path.as_bytes());
            for d in [d_in, d_out] {
                self.feed(&(d as u64).to_le_bytes());
            }
            let n = d_in * d_out;
            if n == 0 {
                return;
            }
            let k = FINGERPRINT_SAMPLES.min(n);
            for i in 0..k {
                let idx = i * n / k;
                let v = q.get(idx % d_out, idx / d_out);
                self.feed(&half::bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
    }
    impl ModuleVisitor for Hasher {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
            self.visited_float = false;
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            if !self.visited_float
                && let Some(q) = self.blocks.get(&self.stack.join(".")).cloned()
            {
                self.feed_blocks(&q);
            }
            self.visited_float = false;
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.visited_float = true;
            let t = param.val();
            let shape = t.shape();
            let n = shape.num_elements();
            let path = self.stack.join(".");
            self.feed(path.as_bytes());
            for d in shape.iter() {
                self.feed(&(*d as u64).to_le_bytes());
            }
            if n == 0 {
                return;
            }
            let k = FINGERPRINT_SAMPLES.min(n);
            let idx: Vec<i64> = (0..k).map(|i| (i * n / k) as i64).collect();
            let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [k]), &t.device());
            let values = t.reshape([n]).select(0, idx).cast(DType::F32).into_data();
            let values: Vec<f32> = values
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            for v in values {
                self.feed(&half::bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
    }
    let mut blocks = std::collections::HashMap::new();
    for (l, layer) in model.model.layers.iter().enumerate() {
        for p in Projection::ALL {
            if let Some(q) = &layer.projection(p).quantized {
                blocks.insert(format!("model.layers.{l}.{}.weight", p.path()), q.clone());
            }
        }
    }
    if let Some(q) = model.lm_head.as_ref().and_then(|h| h.quantized.clone()) {
        blocks.insert("lm_head.weight".to_string(), q);
    }
    let mut h = Hasher {
        stack: Vec::new(),
        hash: 0xcbf2_9ce4_8422_2325,
        blocks,
        visited_float: false,
    };
    model.visit(&mut h);
    format!("l2d-fp1:{:016x}", h.hash)
}

impl DiffusionPath {
    /// Every parameter's id, reference key (`model.layers.3.self_attn.flow_q_proj.A`) and
    /// whether it is a bias (for optimizer groups, e.g. no weight decay on biases, and for
    /// naming optimizer state), in the order the path was built. The keys are the ones the
    /// path was built under (each submodule names its own part of them, once).
    pub fn reference_keys(&self) -> Vec<(ParamId, String, bool)> {
        self.keys()
            .entries()
            .iter()
            .map(|e| (e.id, e.key.clone(), e.layout == KeyLayout::Vector))
            .collect()
    }

    /// Every parameter under its reference key, in the reference's layout (linear weights
    /// `[out, in]`), as f32 data.
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] if a submodule was replaced after the path was built (its
    /// parameters then have no key).
    pub fn reference_tensors(&self) -> Result<Vec<(String, TensorData)>, DiffusionError> {
        self.keys().tensors(self)
    }

    /// Writes the adapter file (parameters + metadata, see the [module docs](self)) for the
    /// base it runs on, atomically: a temporary file in the same folder, then a rename.
    ///
    /// # Errors
    /// [`DiffusionError::Write`] naming the file; a base of other sizes.
    pub fn save(&self, path: impl AsRef<Path>, base: &CausalLm) -> Result<(), DiffusionError> {
        let path = path.as_ref();
        self.check_base(base)?;
        let write_err = |reason: String| DiffusionError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), ADAPTER_FORMAT.to_string());
        meta.insert("format_version".to_string(), "1".to_string());
        meta.insert(
            "l2d_config".to_string(),
            self.config().to_json().to_string(),
        );
        meta.insert(
            "architecture".to_string(),
            self.base_summary().model_type.clone(),
        );
        meta.insert(
            "base_model".to_string(),
            serde_json::to_string(self.base_summary()).unwrap_or_default(),
        );
        meta.insert("base_fingerprint".to_string(), base_fingerprint(base));
        meta.insert("num_parameters".to_string(), self.num_params().to_string());
        let bytes =
            serialize_f32(self.reference_tensors()?, meta).map_err(|e| write_err(e.to_string()))?;
        let bytes = canonical_header(bytes).map_err(write_err)?;
        write_atomically(path, &bytes).map_err(|e| write_err(e.to_string()))
    }

    /// Loads an adapter file for `base`: an L2D adapter (configuration, base sizes and
    /// fingerprint from its metadata) or a reference checkpoint (adapter-only or whole state
    /// dict; give the configuration in `options`). Parameters are f32 on the base's device.
    ///
    /// # Errors
    /// [`DiffusionError::MissingConfig`], [`DiffusionError::BaseMismatch`],
    /// [`DiffusionError::FingerprintMismatch`] (unless `options.force`),
    /// [`DiffusionError::MissingTensor`], [`DiffusionError::TensorShape`],
    /// [`DiffusionError::UnexpectedTensors`], read errors; each names the file.
    pub fn load(
        path: impl AsRef<Path>,
        base: &CausalLm,
        options: &AdapterLoadOptions,
    ) -> Result<Self, DiffusionError> {
        let path = path.as_ref();
        let meta = AdapterMetadata::read(path)?;
        meta.check_format(path, base)?;
        let config = options
            .config
            .clone()
            .or(meta.config.clone())
            .ok_or_else(|| DiffusionError::MissingConfig {
                path: path.to_path_buf(),
            })?;
        if let Some(summary) = &meta.base {
            summary.check(&BaseSummary::of(base.config()))?;
        }
        if let Some(recorded) = &meta.base_fingerprint
            && !options.force
        {
            let actual = base_fingerprint(base);
            if &actual != recorded {
                return Err(DiffusionError::FingerprintMismatch {
                    path: path.to_path_buf(),
                    adapter: recorded.clone(),
                    base: actual,
                });
            }
        }
        let source = SafetensorsSource::from_file(path)?;
        load_from_source(&source, path, &config, base)
    }
}

/// Builds the path from `source`'s tensors and checks that nothing is left over (base weights
/// and the reference's `wrapped_layer` copies excepted).
fn load_from_source<S: WeightSource + ?Sized>(
    source: &S,
    path: &Path,
    config: &L2dConfig,
    base: &CausalLm,
) -> Result<DiffusionPath, DiffusionError> {
    let mut file = FileSource {
        source,
        path: path.to_path_buf(),
        device: base.device(),
        dtype: DType::F32,
        used: BTreeSet::new(),
    };
    let diffusion = DiffusionPath::build(config, base.config(), Some(base), &mut file)?;
    let base_names = base_tensor_names(base.config());
    let mut extra: Vec<String> = source
        .names()
        .into_iter()
        .filter(|n| !file.used.contains(n) && !base_names.contains(n) && !is_reference_extra(n))
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(DiffusionError::UnexpectedTensors {
            names: extra,
            path: path.to_path_buf(),
        });
    }
    Ok(diffusion)
}

/// Names of the base model's tensors as a full reference state dict stores them.
fn base_tensor_names(config: &ModelConfig) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = expected_tensors(config)
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.insert("lm_head.weight".into());
    names
}

/// Entries of a reference state dict that are neither base nor diffusion parameters: the LoRA
/// layers' references to their wrapped base projection, and RoPE buffers.
fn is_reference_extra(name: &str) -> bool {
    name.contains(".wrapped_layer.") || name.ends_with(".rotary_emb.inv_freq")
}

/// A [`WeightSource`] showing only the base model's tensors of a reference state dict.
struct BaseOnly<'a> {
    inner: &'a SafetensorsSource,
    names: BTreeSet<String>,
}

impl WeightSource for BaseOnly<'_> {
    fn names(&self) -> Vec<String> {
        self.inner
            .names()
            .into_iter()
            .filter(|n| self.names.contains(n))
            .collect()
    }
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        if self.names.contains(name) {
            self.inner.shape(name)
        } else {
            None
        }
    }
    fn tensor_data(&self, name: &str) -> Result<TensorData, WeightError> {
        self.inner.tensor_data(name)
    }
    fn location(&self, name: &str) -> String {
        self.inner.location(name)
    }
}

/// Loads the base model and the diffusion path from one reference state dict
/// (`model.safetensors` of the reference: base weights, L2D parameters, `wrapped_layer`
/// copies). The base is built in `dtype`, the path in f32.
///
/// # Errors
/// Base loading errors ([`DiffusionError::Load`]) and adapter errors as
/// [`DiffusionPath::load`].
pub fn load_reference_model(
    path: impl AsRef<Path>,
    base_config: &ModelConfig,
    config: &L2dConfig,
    device: &Device,
    dtype: DType,
) -> Result<(CausalLm, DiffusionPath), DiffusionError> {
    let path = path.as_ref();
    let source = SafetensorsSource::from_file(path)?;
    let base_only = BaseOnly {
        inner: &source,
        names: base_tensor_names(base_config),
    };
    let base = CausalLm::load(&base_only, base_config, device, dtype)?;
    let diffusion = load_from_source(&source, path, config, &base)?;
    Ok((base, diffusion))
}

/// Rewrites a safetensors header with its keys sorted (the safetensors crate emits its
/// metadata from a `HashMap`), so that saving the same adapter twice gives the same bytes.
/// Offsets in the header are relative to the data section, so only the length prefix changes.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or("serialized adapter shorter than its header length")?;
    let header_len = u64::from_le_bytes(len_bytes) as usize;
    let header = bytes
        .get(8..8 + header_len)
        .ok_or("serialized adapter shorter than its header")?;
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut text = canonical_json(&value);
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - header_len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + header_len..]);
    Ok(out)
}

/// JSON text with every object's keys in sorted order, whatever map type serde_json uses.
fn canonical_json(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| {
                    let key = serde_json::Value::String(k.clone()).to_string();
                    format!("{key}:{}", canonical_json(&map[k]))
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}
