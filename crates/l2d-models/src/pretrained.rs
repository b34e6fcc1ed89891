//! A loaded model bundle: the decoder, its tokenizer, chat template and stop set, from a
//! Hugging Face folder (or an `org/name` of the local Hugging Face cache) or a GGUF file.
//!
//! ```
//! use l2d_models::pretrained::{LoadOptions, Pretrained};
//! use l2d_models::generation::{Flow, GenerationConfig};
//!
//! let gguf = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/gguf/tiny-llama.gguf");
//! let lm = Pretrained::open(gguf, &LoadOptions::default())?;
//! let prompt = lm.encode("Hello world")?;
//! let mut streamed = String::new();
//! let out = lm.generate(&[prompt], &GenerationConfig::greedy(5), |event| {
//!     streamed.push_str(event.text);
//!     Flow::Continue
//! })?;
//! let reply = &out.sequences[0];
//! assert!(reply.tokens.len() <= 5);
//! assert_eq!(streamed, reply.text);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{DType, Device};

use crate::chat_template::{ChatMessage, ChatTemplate, ChatTemplateError, RenderOptions};
use crate::config::{ConfigError, ModelConfig};
use crate::decoder::CausalLm;
use crate::generation::{
    BaseStep, Flow, GenerationConfig, GenerationError, GenerationOutput, TokenEvent, TokenStep,
    generate,
};
use crate::gguf::{GgufError, GgufFile, GgufWeights};
pub use crate::loading::WeightFormat;
use crate::loading::{LoadError, resolve_model_dir};
use crate::stops::{StopError, StopSet};
use crate::tokenizer::{Tokenizer, TokenizerError};
use crate::weights::SafetensorsSource;

/// Errors of loading a [`Pretrained`] bundle and of building its prompts. Each names the
/// file concerned.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// The weights or `config.json` could not be loaded, or the model was not found.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The GGUF file could not be read or mapped.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The configuration derived from a GGUF file is invalid.
    #[error("invalid model configuration in `{path}`: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ConfigError,
    },
    /// The tokenizer could not be loaded, or encoding failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template could not be read or rendered, or the model has none.
    #[error(transparent)]
    ChatTemplate(#[from] ChatTemplateError),
    /// The EOS ids could not be collected.
    #[error(transparent)]
    Stops(#[from] StopError),
    /// Generation failed.
    #[error(transparent)]
    Generation(#[from] GenerationError),
    /// A file that is neither a GGUF file nor a model folder.
    #[error(
        "`{path}` is a file but not a GGUF file; pass a `.gguf` file or a Hugging Face model \
         folder"
    )]
    NotAModel {
        /// The file.
        path: PathBuf,
    },
}

/// Where a bundle was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face model folder (resolved from a path or the local cache).
    Folder(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl ModelSource {
    /// The folder or file.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Folder(p) | ModelSource::Gguf(p) => p,
        }
    }
}

/// The device and dtype to load weights into.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the weights live.
    pub device: Device,
    /// A float dtype (F32, F16, BF16) for every weight, or a block format for the
    /// projections ([`WeightFormat`]).
    pub format: WeightFormat,
}

impl Default for LoadOptions {
    /// The CPU (`Device::flex()`), f32.
    fn default() -> Self {
        LoadOptions {
            device: Device::flex(),
            format: WeightFormat::default(),
        }
    }
}

impl LoadOptions {
    /// Options with a device and a float dtype.
    pub fn new(device: Device, dtype: DType) -> Self {
        LoadOptions {
            device,
            format: WeightFormat::Float(dtype),
        }
    }

    /// Options with a device and a weight format.
    pub fn with_format(device: Device, format: WeightFormat) -> Self {
        LoadOptions { device, format }
    }
}

/// A model with what generation needs around it.
#[derive(Debug)]
pub struct Pretrained {
    /// The decoder.
    pub model: CausalLm,
    /// The tokenizer with its special tokens.
    pub tokenizer: Tokenizer,
    /// The chat template; `None` for base models without one.
    pub chat_template: Option<ChatTemplate>,
    /// Every EOS id of the model (config, generation config, tokenizer config; or the GGUF
    /// EOS / EOT / EOM ids). [`Pretrained::generate`] always stops on them.
    pub stops: StopSet,
    /// Where it was loaded from.
    pub source: ModelSource,
}

fn optional_template(
    t: Result<ChatTemplate, ChatTemplateError>,
) -> Result<Option<ChatTemplate>, ChatTemplateError> {
    match t {
        Ok(t) => Ok(Some(t)),
        Err(ChatTemplateError::NoTemplate { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Pretrained {
    /// Loads a GGUF file (a path to a file) or a Hugging Face model (a folder, or an
    /// `org/name` found in the local Hugging Face cache; never the network).
    ///
    /// # Errors
    /// [`PretrainedError::NotAModel`] for another kind of file; otherwise as
    /// [`Pretrained::from_gguf`] / [`Pretrained::from_pretrained`].
    pub fn open(name_or_path: &str, options: &LoadOptions) -> Result<Self, PretrainedError> {
        let path = Path::new(name_or_path);
        if path.is_file() {
            let is_gguf = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
                || has_gguf_magic(path);
            if is_gguf {
                return Self::from_gguf(path, options);
            }
            return Err(PretrainedError::NotAModel {
                path: path.to_path_buf(),
            });
        }
        Self::from_pretrained(name_or_path, options)
    }

    /// Loads a Hugging Face model: a folder, or an `org/name` of the local cache
    /// (`models--org--name/snapshots/<rev>`).
    ///
    /// # Errors
    /// [`LoadError::Resolve`] naming every place looked at; as [`Pretrained::from_dir`].
    pub fn from_pretrained(
        name_or_path: &str,
        options: &LoadOptions,
    ) -> Result<Self, PretrainedError> {
        let dir = resolve_model_dir(name_or_path).map_err(LoadError::from)?;
        Self::from_dir(&dir, options)
    }

    /// Loads a Hugging Face model folder: `config.json`, safetensors weights (single or
    /// sharded), `tokenizer.json` (+ `tokenizer_config.json`), the chat template
    /// (`chat_template.jinja` or `tokenizer_config.json`) and the EOS ids of
    /// `config.json`, `generation_config.json` and `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`PretrainedError::Load`], [`PretrainedError::Tokenizer`],
    /// [`PretrainedError::ChatTemplate`] (a template that cannot be read; a missing one is
    /// `None`), [`PretrainedError::Stops`].
    pub fn from_dir(dir: &Path, options: &LoadOptions) -> Result<Self, PretrainedError> {
        let tokenizer = Tokenizer::from_dir(dir)?;
        let chat_template = optional_template(ChatTemplate::from_model_dir(dir))?;
        let stops = StopSet::from_model_dir(dir, &tokenizer)?;
        let config = ModelConfig::from_file(dir.join("config.json")).map_err(LoadError::from)?;
        let weights = SafetensorsSource::open(dir).map_err(LoadError::from)?;
        let model = CausalLm::load_as(&weights, &config, &options.device, options.format)?;
        Ok(Pretrained {
            model,
            tokenizer,
            chat_template,
            stops,
            source: ModelSource::Folder(dir.to_path_buf()),
        })
    }

    /// Loads a GGUF file: the configuration from its metadata, the weights in
    /// `options.format` (dequantised to a float dtype, or Q8_0/Q4_0/Q4_1 blocks kept), the tokenizer rebuilt from its vocabulary, its chat template and its
    /// EOS / EOT / EOM ids.
    ///
    /// # Errors
    /// [`PretrainedError::Gguf`], [`PretrainedError::Config`], [`PretrainedError::Load`],
    /// [`PretrainedError::ChatTemplate`].
    pub fn from_gguf(
        path: impl AsRef<Path>,
        options: &LoadOptions,
    ) -> Result<Self, PretrainedError> {
        let path = path.as_ref();
        let file = Arc::new(GgufFile::open(path)?);
        let config = ModelConfig::from_value(&file.config_json()?).map_err(|source| {
            PretrainedError::Config {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let tokenizer = file.tokenizer()?;
        let chat_template = optional_template(file.chat_template())?;
        let stops = file.stop_set()?;
        let weights = GgufWeights::new(file)?;
        let model = CausalLm::load_as(&weights, &config, &options.device, options.format)?;
        Ok(Pretrained {
            model,
            tokenizer,
            chat_template,
            stops,
            source: ModelSource::Gguf(path.to_path_buf()),
        })
    }

    /// Encodes plain text the way the tokenizer is configured to (its post-processor may
    /// prepend BOS).
    ///
    /// # Errors
    /// [`PretrainedError::Tokenizer`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PretrainedError> {
        Ok(self.tokenizer.encode(text, true)?)
    }

    /// Renders a conversation with the chat template and the assistant's generation prompt,
    /// and encodes it (exactly one BOS, as transformers' `apply_chat_template`).
    ///
    /// # Errors
    /// [`ChatTemplateError::NoTemplate`] for a model without a template; rendering and
    /// encoding errors.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, PretrainedError> {
        let template =
            self.chat_template
                .as_ref()
                .ok_or_else(|| ChatTemplateError::NoTemplate {
                    source_name: self.source.path().display().to_string(),
                })?;
        let options = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        Ok(template.encode(&self.tokenizer, messages, &options)?)
    }

    /// The frozen model's [`TokenStep`].
    pub fn base_step(&self) -> BaseStep<'_> {
        BaseStep::new(&self.model)
    }

    /// `config` with the model's stop ids added to its stops.
    pub fn with_model_stops(&self, config: &GenerationConfig) -> GenerationConfig {
        GenerationConfig {
            stops: self.stops.clone().union(&config.stops),
            ..config.clone()
        }
    }

    /// Generates continuations of token prompts with the frozen model (see
    /// [`generate`]); stops on the model's EOS ids and on
    /// `config.stops`.
    ///
    /// # Errors
    /// As [`generate`].
    pub fn generate<F>(
        &self,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        on_token: F,
    ) -> Result<GenerationOutput, GenerationError>
    where
        F: FnMut(&TokenEvent<'_>) -> Flow,
    {
        self.generate_with(&mut self.base_step(), prompts, config, on_token)
    }

    /// As [`Pretrained::generate`], with another [`TokenStep`] (e.g. a diffusion step over
    /// this model).
    ///
    /// # Errors
    /// As [`generate`].
    pub fn generate_with<S, F>(
        &self,
        step: &mut S,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        on_token: F,
    ) -> Result<GenerationOutput, GenerationError>
    where
        S: TokenStep + ?Sized,
        F: FnMut(&TokenEvent<'_>) -> Flow,
    {
        let config = self.with_model_stops(config);
        generate(step, Some(&self.tokenizer), prompts, &config, on_token)
    }

    /// Replies to a conversation: [`Pretrained::chat_prompt`] then
    /// [`Pretrained::generate`].
    ///
    /// # Errors
    /// As both.
    pub fn chat<F>(
        &self,
        messages: &[ChatMessage],
        config: &GenerationConfig,
        on_token: F,
    ) -> Result<GenerationOutput, PretrainedError>
    where
        F: FnMut(&TokenEvent<'_>) -> Flow,
    {
        let prompt = self.chat_prompt(messages)?;
        Ok(self.generate(&[prompt], config, on_token)?)
    }
}

fn has_gguf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"GGUF"
}
