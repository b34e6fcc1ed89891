//! When generation stops: the full set of EOS ids and the user's stop strings.
//!
//! Models disagree with themselves about EOS (Llama 3 Instruct emits `<|eot_id|>` while
//! `tokenizer_config.json` names `<|end_of_text|>`; Qwen emits `<|im_end|>` or
//! `<|endoftext|>`), so the stop set is the union of `config.json`'s `eos_token_id`,
//! `generation_config.json`'s `eos_token_id` (each an int or a list), the EOS token of
//! `tokenizer_config.json` and any ids the user adds. Stop strings are matched on the
//! decoded text.
//!
//! ```
//! use l2d_models::stops::StopSet;
//! use l2d_models::tokenizer::Tokenizer;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizers/llama3");
//! let tokenizer = Tokenizer::from_dir(dir)?;
//! let stops = StopSet::from_model_dir(dir, &tokenizer)?.with_string("\n\n");
//! let eot = tokenizer.token_to_id("<|eot_id|>").unwrap();
//! let eom = tokenizer.token_to_id("<|eom_id|>").unwrap();
//! assert!(stops.is_stop_id(eot) && stops.is_stop_id(eom));
//! assert_eq!(stops.find_stop_string("Paris.\n\nNext"), Some((6, "\n\n")));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::tokenizer::{Tokenizer, TokenizerConfig};

/// Errors while collecting stop ids. Each names the file and field.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// A file could not be read or parsed.
    #[error("cannot read `{path}`: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `eos_token_id` is neither an int nor a list of ints.
    #[error("`eos_token_id` in `{path}` must be an integer or a list of integers, found {found}")]
    InvalidEosId {
        /// The file.
        path: PathBuf,
        /// The JSON found.
        found: String,
    },
    /// The EOS token text is not in the vocabulary.
    #[error("the EOS token `{token}` of `{path}` is not in the tokenizer's vocabulary")]
    UnknownEosToken {
        /// The token text.
        token: String,
        /// The file naming it.
        path: PathBuf,
    },
    /// An EOS id is outside the vocabulary.
    #[error("EOS id {id} from `{path}` is outside the vocabulary ({vocab_size} tokens)")]
    EosIdOutOfRange {
        /// The id.
        id: u64,
        /// The file.
        path: PathBuf,
        /// The tokenizer's vocabulary size.
        vocab_size: usize,
    },
}

/// Stop ids and stop strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopSet {
    ids: BTreeSet<u32>,
    strings: Vec<String>,
}

/// Parses an `eos_token_id` value: an int, a list of ints, or null/absent (no ids).
///
/// # Errors
/// [`StopError::InvalidEosId`] naming `path`.
pub fn parse_eos_ids(value: Option<&Value>, path: &Path) -> Result<Vec<u64>, StopError> {
    let invalid = || StopError::InvalidEosId {
        path: path.to_path_buf(),
        found: value.map(Value::to_string).unwrap_or_default(),
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Number(n)) => Ok(vec![n.as_u64().ok_or_else(invalid)?]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>, StopError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::tokenizer::read_text(path).map_err(|e| StopError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StopError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

impl StopSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The union of the EOS ids of a model folder: `config.json` and
    /// `generation_config.json` (`eos_token_id`, int or list; either file may be absent)
    /// and `tokenizer_config.json`'s `eos_token` (looked up in `tokenizer`).
    ///
    /// # Errors
    /// [`StopError::File`] for unreadable JSON, [`StopError::InvalidEosId`],
    /// [`StopError::UnknownEosToken`] if the EOS text is not in the vocabulary,
    /// [`StopError::EosIdOutOfRange`].
    pub fn from_model_dir(dir: impl AsRef<Path>, tokenizer: &Tokenizer) -> Result<Self, StopError> {
        let dir = dir.as_ref();
        let mut stops = StopSet::new();
        for name in ["config.json", "generation_config.json"] {
            let path = dir.join(name);
            if let Some(json) = read_json(&path)? {
                for id in parse_eos_ids(json.get("eos_token_id"), &path)? {
                    if id as usize >= tokenizer.vocab_size() {
                        return Err(StopError::EosIdOutOfRange {
                            id,
                            path,
                            vocab_size: tokenizer.vocab_size(),
                        });
                    }
                    stops.add_id(id as u32);
                }
            }
        }
        let path = dir.join("tokenizer_config.json");
        if path.exists() {
            let config = TokenizerConfig::from_file(&path).map_err(|e| StopError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            if let Some(eos) = &config.eos_token {
                stops.add_token(tokenizer, eos.content(), &path)?;
            }
        }
        Ok(stops)
    }

    /// Adds the id of an EOS token text.
    ///
    /// # Errors
    /// [`StopError::UnknownEosToken`] (naming `source`) if it is not in the vocabulary.
    pub fn add_token(
        &mut self,
        tokenizer: &Tokenizer,
        token: &str,
        source: &Path,
    ) -> Result<(), StopError> {
        let id = tokenizer
            .token_to_id(token)
            .ok_or_else(|| StopError::UnknownEosToken {
                token: token.into(),
                path: source.to_path_buf(),
            })?;
        self.add_id(id);
        Ok(())
    }

    /// Adds a stop id.
    pub fn add_id(&mut self, id: u32) {
        self.ids.insert(id);
    }

    /// Adds a stop string (empty strings are ignored).
    pub fn add_string(&mut self, s: impl Into<String>) {
        let s = s.into();
        if !s.is_empty() && !self.strings.contains(&s) {
            self.strings.push(s);
        }
    }

    /// The set with more stop ids.
    pub fn with_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.ids.extend(ids);
        self
    }

    /// The set with one more stop string.
    pub fn with_string(mut self, s: impl Into<String>) -> Self {
        self.add_string(s);
        self
    }

    /// The union of two sets.
    pub fn union(mut self, other: &StopSet) -> Self {
        self.ids.extend(other.ids.iter().copied());
        for s in &other.strings {
            self.add_string(s.clone());
        }
        self
    }

    /// The stop ids, sorted.
    pub fn ids(&self) -> &BTreeSet<u32> {
        &self.ids
    }

    /// The stop strings.
    pub fn strings(&self) -> &[String] {
        &self.strings
    }

    /// Whether generating `id` ends the sequence.
    pub fn is_stop_id(&self, id: u32) -> bool {
        self.ids.contains(&id)
    }

    /// The earliest occurrence of any stop string in `text`: `(byte offset, the string)`.
    /// Of two strings starting at the same offset the longer wins.
    pub fn find_stop_string(&self, text: &str) -> Option<(usize, &str)> {
        self.strings
            .iter()
            .filter_map(|s| text.find(s.as_str()).map(|i| (i, s.as_str())))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.len().cmp(&a.1.len())))
    }

    /// How many trailing bytes of `text` could be the start of a stop string (a streaming
    /// printer holds them back until the next token decides). Always a char boundary.
    pub fn pending_prefix_len(&self, text: &str) -> usize {
        let mut best = 0;
        for s in &self.strings {
            for (i, _) in text.char_indices().rev().take(s.len()) {
                let tail = &text[i..];
                if tail.len() < s.len() && s.starts_with(tail) {
                    best = best.max(tail.len());
                }
            }
        }
        best
    }
}
