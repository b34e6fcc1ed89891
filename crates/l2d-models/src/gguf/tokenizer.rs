//! The tokenizer, chat template and stop ids of a GGUF file.
//!
//! `tokenizer.ggml.model = "gpt2"` is a byte-level BPE: the vocabulary
//! (`tokenizer.ggml.tokens`), the merges (`tokenizer.ggml.merges`, `"a b"` strings) and the
//! token types (`tokenizer.ggml.token_type`: 3 = control → special added token,
//! 4 = user-defined → added token) are rebuilt into a `tokenizer.json` document. The
//! pre-tokenizer follows `tokenizer.ggml.pre` as llama.cpp does:
//!
//! | `pre` | pre-tokenizer |
//! | --- | --- |
//! | `default`, `gpt2`, `gpt-2` (or absent) | GPT-2 byte-level regex |
//! | `smollm`, `starcoder`, `refact`, `codeshell` | single digits, then the GPT-2 regex |
//! | `llama-bpe`, `llama3` | the Llama 3 split regex, then byte-level |
//! | `qwen2` | the Qwen2 split regex (single digits), then byte-level |
//!
//! transformers 4.46.3 ignores `pre` (always the GPT-2 regex) and, for `llama` GGUFs, always
//! prepends BOS and calls it EOS as well; here `tokenizer.ggml.add_bos_token` decides
//! (absent = false, as for llama.cpp's BPE vocabularies) and EOS is
//! `tokenizer.ggml.eos_token_id`. For SmolLM2 the ids agree with transformers' for every
//! text: its vocabulary has no multi-digit tokens, so the digit split changes nothing.

use serde_json::{Map, Value, json};

use super::{GgufError, GgufFile, GgufValue};
use crate::chat_template::ChatTemplate;
use crate::stops::StopSet;
use crate::tokenizer::Tokenizer;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token type of a control (special) token in `tokenizer.ggml.token_type`.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// Token type of a user-defined (added, not special) token.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

impl GgufFile {
    fn tokenizer_error(&self, reason: impl Into<String>) -> GgufError {
        GgufError::Tokenizer {
            path: self.path().to_path_buf(),
            reason: reason.into(),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let array = self.get_array(key)?.ok_or_else(|| GgufError::MissingKey {
            path: self.path().to_path_buf(),
            key: key.into(),
        })?;
        array
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.wrong_type(key, "array of strings", v))
            })
            .collect()
    }

    /// The `tokenizer.json` document (as JSON) of the GGUF vocabulary.
    ///
    /// # Errors
    /// [`GgufError::Unsupported`] for tokenizer models other than `gpt2` and unknown `pre`
    /// values; missing or mistyped `tokenizer.ggml.*` keys.
    pub fn tokenizer_json(&self) -> Result<Value, GgufError> {
        let model = self.get_str("tokenizer.ggml.model")?.unwrap_or("");
        if model != "gpt2" {
            return Err(GgufError::Unsupported {
                path: self.path().to_path_buf(),
                what: format!(
                    "tokenizer model `{model}` (`tokenizer.ggml.model`; only the byte-level \
                     BPE `gpt2` is rebuilt)"
                ),
            });
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.get_array("tokenizer.ggml.token_type")? {
            None => vec![1; tokens.len()],
            Some(a) => a
                .iter()
                .map(|v| {
                    v.as_i64().ok_or_else(|| {
                        self.wrong_type("tokenizer.ggml.token_type", "array of integers", v)
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if types.len() != tokens.len() {
            return Err(GgufError::InvalidValue {
                path: self.path().to_path_buf(),
                key: "tokenizer.ggml.token_type".into(),
                reason: format!("{} types for {} tokens", types.len(), tokens.len()),
            });
        }
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, (&token, &ty)) in tokens.iter().zip(&types).enumerate() {
            vocab.insert(token.to_string(), json!(id));
            if ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED {
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == TOKEN_TYPE_CONTROL,
                }));
            }
        }
        let merges: Vec<Value> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| json!([a, b]))
                    .ok_or_else(|| self.tokenizer_error(format!("merge `{m}` is not `a b`")))
            })
            .collect::<Result<_, _>>()?;

        let add_prefix_space = self
            .get_bool("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(false);
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                   "trim_offsets": true, "use_regex": use_regex})
        };
        let split = |regex: &str| {
            json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                   "invert": false})
        };
        let pre = self.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre_tokenizer = match pre {
            "default" | "gpt2" | "gpt-2" => byte_level(true),
            "smollm" | "starcoder" | "refact" | "codeshell" => json!({
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)],
            }),
            "llama-bpe" | "llama3" => json!({
                "type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)],
            }),
            "qwen2" => json!({
                "type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)],
            }),
            other => {
                return Err(GgufError::Unsupported {
                    path: self.path().to_path_buf(),
                    what: format!("pre-tokenizer `{other}` (`tokenizer.ggml.pre`)"),
                });
            }
        };

        let token_at = |key: &str| -> Result<Option<(u64, &str)>, GgufError> {
            match self.get_u64(key)? {
                None => Ok(None),
                Some(id) => match tokens.get(id as usize) {
                    Some(&t) => Ok(Some((id, t))),
                    None => Err(GgufError::InvalidValue {
                        path: self.path().to_path_buf(),
                        key: key.into(),
                        reason: format!("id {id} is outside the vocabulary of {}", tokens.len()),
                    }),
                },
            }
        };
        let bos = token_at("tokenizer.ggml.bos_token_id")?;
        let unk = token_at("tokenizer.ggml.unknown_token_id")?;
        let add_bos = self
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false);
        let post_processor = match (add_bos, bos) {
            (true, Some((id, bos))) => json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}},
            }),
            (true, None) => {
                return Err(GgufError::MissingKey {
                    path: self.path().to_path_buf(),
                    key: "tokenizer.ggml.bos_token_id (add_bos_token is true)".into(),
                });
            }
            (false, _) => json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
                                 "trim_offsets": false, "use_regex": true}),
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk.map(|(_, t)| t),
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        }))
    }

    /// The tokenizer rebuilt from the vocabulary, with BOS / EOS / PAD from
    /// `tokenizer.ggml.{bos,eos,padding}_token_id`.
    ///
    /// # Errors
    /// As [`GgufFile::tokenizer_json`]; [`GgufError::Tokenizer`] if the `tokenizers` crate
    /// rejects the result.
    pub fn tokenizer(&self) -> Result<Tokenizer, GgufError> {
        let json = self.tokenizer_json()?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| self.tokenizer_error(e.to_string()))?;
        let source = self.path().display().to_string();
        let id = |key: &str| self.get_u64(key).map(|v| v.map(|v| v as u32));
        Tokenizer::from_tokenizers(inner, source.clone())
            .with_special_ids(
                id("tokenizer.ggml.bos_token_id")?,
                id("tokenizer.ggml.eos_token_id")?,
                id("tokenizer.ggml.padding_token_id")?,
                &source,
            )
            .map_err(|e| self.tokenizer_error(e.to_string()))
    }

    /// The chat template of `tokenizer.chat_template`, with the BOS / EOS texts of the
    /// vocabulary.
    ///
    /// # Errors
    /// [`ChatTemplateError::NoTemplate`](crate::chat_template::ChatTemplateError::NoTemplate)
    /// if the file has no `tokenizer.chat_template`,
    /// [`ChatTemplateError::Source`](crate::chat_template::ChatTemplateError::Source) for
    /// mistyped metadata.
    pub fn chat_template(&self) -> Result<ChatTemplate, crate::chat_template::ChatTemplateError> {
        use crate::chat_template::ChatTemplateError;
        let source = self.path().display().to_string();
        let gguf = |e: GgufError| ChatTemplateError::Source {
            source_name: source.clone(),
            reason: e.to_string(),
        };
        let template = self
            .get_str("tokenizer.chat_template")
            .map_err(gguf)?
            .ok_or_else(|| ChatTemplateError::NoTemplate {
                source_name: format!("{source} (no `tokenizer.chat_template`)"),
            })?;
        let tokens = self.get_array("tokenizer.ggml.tokens").map_err(gguf)?;
        let text = |key: &str| -> Result<Option<String>, ChatTemplateError> {
            let id = self.get_u64(key).map_err(gguf)?;
            Ok(id
                .and_then(|id| tokens.and_then(|t| t.get(id as usize)))
                .and_then(GgufValue::as_str)
                .map(str::to_string))
        };
        Ok(ChatTemplate::new(template, source.clone())
            .with_bos_token(text("tokenizer.ggml.bos_token_id")?)
            .with_eos_token(text("tokenizer.ggml.eos_token_id")?)
            .with_pad_token(text("tokenizer.ggml.padding_token_id")?)
            .with_unk_token(text("tokenizer.ggml.unknown_token_id")?))
    }

    /// The stop ids: `tokenizer.ggml.eos_token_id` and, when present, llama.cpp's
    /// `tokenizer.ggml.eot_token_id` / `eom_token_id`.
    ///
    /// # Errors
    /// Mistyped keys, or an id outside the vocabulary.
    pub fn stop_set(&self) -> Result<StopSet, GgufError> {
        let n = self.get_array("tokenizer.ggml.tokens")?.map(<[_]>::len);
        let mut stops = StopSet::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = self.get_u64(key)? {
                if n.is_some_and(|n| id as usize >= n) {
                    return Err(GgufError::InvalidValue {
                        path: self.path().to_path_buf(),
                        key: key.into(),
                        reason: format!("id {id} is outside the vocabulary"),
                    });
                }
                stops.add_id(id as u32);
            }
        }
        Ok(stops)
    }
}
