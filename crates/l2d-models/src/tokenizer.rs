//! The tokenizer: a Hugging Face `tokenizer.json` run by the `tokenizers` crate (pure-Rust
//! features), with the special tokens of `tokenizer_config.json`.
//!
//! ```
//! use l2d_models::tokenizer::Tokenizer;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizers/llama3");
//! let tokenizer = Tokenizer::from_dir(dir)?;
//! let ids = tokenizer.encode("Hello world", true)?;
//! // The post-processor of this (Llama-3-style) tokenizer prepends `<|begin_of_text|>`.
//! assert!(tokenizer.adds_bos());
//! assert_eq!(ids[0], tokenizer.bos_token().unwrap().id);
//! assert_eq!(tokenizer.decode(&ids, true)?, "Hello world");
//! # Ok::<(), l2d_models::tokenizer::TokenizerError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Errors raised by tokenizer loading, encoding and decoding. Loading errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid tokenizer / tokenizer config (truncated, a Git LFS pointer,
    /// bad JSON, unknown component).
    #[error("cannot parse `{path}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A special token named by the configuration is not in the vocabulary.
    #[error("the {role} token `{token}` named by {source_name} is not in the vocabulary")]
    UnknownToken {
        /// `"BOS"`, `"EOS"`, ...
        role: String,
        /// The token text.
        token: String,
        /// Where it was named (a file).
        source_name: String,
    },
    /// Encoding failed.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// Decoding failed (e.g. an id outside the vocabulary).
    #[error("cannot decode ids: {0}")]
    Decode(String),
}

/// A special token: its text and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialToken {
    /// The token's text (`<|im_end|>`).
    pub content: String,
    /// Its id.
    pub id: u32,
}

/// A token named in `tokenizer_config.json`: a string or an `AddedToken` object
/// `{"content": ...}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenSpec {
    /// `"<s>"`.
    Text(String),
    /// `{"content": "<s>", "lstrip": false, ...}`.
    Object {
        /// The token text.
        content: String,
    },
}

impl TokenSpec {
    /// The token text.
    pub fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) => s,
            TokenSpec::Object { content } => content,
        }
    }
}

/// One named template of a `chat_template` list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NamedTemplate {
    /// `"default"`, `"tool_use"`, ...
    pub name: String,
    /// The Jinja source.
    pub template: String,
}

/// `chat_template` of `tokenizer_config.json`: one template or a list of named ones.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ChatTemplateSpec {
    /// A single Jinja template.
    Single(String),
    /// Named templates (`default`, `tool_use`, ...).
    Named(Vec<NamedTemplate>),
}

/// The fields of `tokenizer_config.json` this crate uses. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TokenizerConfig {
    /// Beginning-of-sequence token (may be `null`).
    #[serde(default)]
    pub bos_token: Option<TokenSpec>,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token: Option<TokenSpec>,
    /// Padding token.
    #[serde(default)]
    pub pad_token: Option<TokenSpec>,
    /// Unknown token.
    #[serde(default)]
    pub unk_token: Option<TokenSpec>,
    /// The chat template(s).
    #[serde(default)]
    pub chat_template: Option<ChatTemplateSpec>,
    /// Whether the (slow) tokenizer adds BOS; informative, `tokenizer.json`'s post-processor
    /// decides what encoding does.
    #[serde(default)]
    pub add_bos_token: Option<bool>,
    /// Whether the (slow) tokenizer adds EOS; informative.
    #[serde(default)]
    pub add_eos_token: Option<bool>,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`TokenizerError::Io`] / [`TokenizerError::Parse`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        serde_json::from_str(&text).map_err(|e| TokenizerError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Reads a text file, recognising Git LFS pointers (a frequent stand-in for the real file).
pub(crate) fn read_text(path: &Path) -> Result<String, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if text.starts_with("version https://git-lfs.github.com/spec/") {
        return Err(TokenizerError::Parse {
            path: path.to_path_buf(),
            reason: "this is a Git LFS pointer, not the file itself (run `git lfs pull` or \
                     download the real file)"
                .into(),
        });
    }
    Ok(text)
}

/// A tokenizer with its special tokens.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: String,
    bos: Option<SpecialToken>,
    eos: Option<SpecialToken>,
    pad: Option<SpecialToken>,
    adds_bos: bool,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("adds_bos", &self.adds_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json` (no special tokens known until
    /// [`Tokenizer::with_special_tokens`]).
    ///
    /// # Errors
    /// [`TokenizerError::Io`], or [`TokenizerError::Parse`] naming the file for truncated
    /// JSON, Git LFS pointers and unknown components.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let inner = tokenizers::Tokenizer::from_str(&text).map_err(|e| TokenizerError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_tokenizers(inner, path.display().to_string()))
    }

    /// Loads `tokenizer.json` of a model folder and, if present, the BOS / EOS / PAD tokens
    /// of its `tokenizer_config.json`.
    ///
    /// # Errors
    /// As [`Tokenizer::from_file`] and [`Tokenizer::with_config`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let tokenizer = Self::from_file(dir.join("tokenizer.json"))?;
        let config_path = dir.join("tokenizer_config.json");
        if !config_path.exists() {
            return Ok(tokenizer);
        }
        let config = TokenizerConfig::from_file(&config_path)?;
        tokenizer.with_config(&config, &config_path.display().to_string())
    }

    /// Wraps a `tokenizers` tokenizer; `source` names it in error messages.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer, source: impl Into<String>) -> Self {
        let mut t = Tokenizer {
            inner,
            source: source.into(),
            bos: None,
            eos: None,
            pad: None,
            adds_bos: false,
        };
        t.refresh_adds_bos();
        t
    }

    /// Sets the special tokens named by a `tokenizer_config.json` (`source_name` names it).
    ///
    /// # Errors
    /// [`TokenizerError::UnknownToken`] if a named token is not in the vocabulary.
    pub fn with_config(
        self,
        config: &TokenizerConfig,
        source_name: &str,
    ) -> Result<Self, TokenizerError> {
        let content = |t: &Option<TokenSpec>| t.as_ref().map(|t| t.content().to_string());
        let mut t = self.with_special_tokens(
            content(&config.bos_token).as_deref(),
            content(&config.eos_token).as_deref(),
            source_name,
        )?;
        if let Some(pad) = content(&config.pad_token) {
            t.pad = Some(t.special("PAD", &pad, source_name)?);
        }
        Ok(t)
    }

    /// Sets the BOS and EOS tokens by text (`source_name` names where they come from).
    ///
    /// # Errors
    /// [`TokenizerError::UnknownToken`] if a token is not in the vocabulary.
    pub fn with_special_tokens(
        mut self,
        bos: Option<&str>,
        eos: Option<&str>,
        source_name: &str,
    ) -> Result<Self, TokenizerError> {
        self.bos = bos
            .map(|b| self.special("BOS", b, source_name))
            .transpose()?;
        self.eos = eos
            .map(|e| self.special("EOS", e, source_name))
            .transpose()?;
        self.refresh_adds_bos();
        Ok(self)
    }

    /// Sets the special tokens by id (for tokenizers rebuilt from GGUF metadata).
    ///
    /// # Errors
    /// [`TokenizerError::UnknownToken`] if an id is outside the vocabulary.
    pub fn with_special_ids(
        mut self,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
        source_name: &str,
    ) -> Result<Self, TokenizerError> {
        let lookup = |role: &str, id: u32| {
            self.inner
                .id_to_token(id)
                .map(|content| SpecialToken { content, id })
                .ok_or_else(|| TokenizerError::UnknownToken {
                    role: role.into(),
                    token: format!("id {id}"),
                    source_name: source_name.into(),
                })
        };
        let bos = bos.map(|id| lookup("BOS", id)).transpose()?;
        let eos = eos.map(|id| lookup("EOS", id)).transpose()?;
        let pad = pad.map(|id| lookup("PAD", id)).transpose()?;
        self.bos = bos;
        self.eos = eos;
        self.pad = pad;
        self.refresh_adds_bos();
        Ok(self)
    }

    fn special(
        &self,
        role: &str,
        token: &str,
        source: &str,
    ) -> Result<SpecialToken, TokenizerError> {
        self.inner
            .token_to_id(token)
            .map(|id| SpecialToken {
                content: token.to_string(),
                id,
            })
            .ok_or_else(|| TokenizerError::UnknownToken {
                role: role.into(),
                token: token.into(),
                source_name: source.into(),
            })
    }

    fn refresh_adds_bos(&mut self) {
        self.adds_bos = match &self.bos {
            Some(bos) => self
                .inner
                .encode("", true)
                .map(|e| e.get_ids().first() == Some(&bos.id))
                .unwrap_or(false),
            None => false,
        };
    }

    /// Encodes text; with `add_special_tokens` the post-processor adds what it is configured
    /// to (e.g. BOS).
    ///
    /// # Errors
    /// [`TokenizerError::Encode`].
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Decodes ids to text, optionally leaving special tokens out.
    ///
    /// # Errors
    /// [`TokenizerError::Decode`].
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The id of a token (vocabulary or added token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The text of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The BOS token, if known.
    pub fn bos_token(&self) -> Option<&SpecialToken> {
        self.bos.as_ref()
    }

    /// The EOS token, if known.
    pub fn eos_token(&self) -> Option<&SpecialToken> {
        self.eos.as_ref()
    }

    /// The padding token, if known.
    pub fn pad_token(&self) -> Option<&SpecialToken> {
        self.pad.as_ref()
    }

    /// Whether encoding with special tokens prepends the BOS token.
    pub fn adds_bos(&self) -> bool {
        self.adds_bos
    }

    /// Whether the id is a special added token (skipped by `decode(.., true)`).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .get_added_tokens_decoder()
            .get(&id)
            .is_some_and(|t| t.special)
    }

    /// Where the tokenizer came from (a path or a description).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
