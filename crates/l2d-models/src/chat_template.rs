//! Chat templates rendered with Hugging Face's semantics.
//!
//! transformers renders `chat_template` with a sandboxed Jinja2 environment
//! (`trim_blocks`, `lstrip_blocks`, loop controls), a `tojson` filter that is Python's
//! `json.dumps` (no HTML escaping, `indent` / `separators` / `sort_keys` / `ensure_ascii`
//! keyword arguments), the globals `raise_exception(message)` and `strftime_now(format)`, and
//! the `{% generation %}` block (assistant-token tracking). The context holds `messages`,
//! `tools` and `documents` (`none` when not given), `add_generation_prompt` and the special
//! tokens that are set (`bos_token`, `eos_token`, `unk_token`, `pad_token`). This module does
//! the same with minijinja: Python string / dict / list methods come from
//! `minijinja_contrib::pycompat`, `{% generation %}` renders its body, and `strftime_now`
//! reads a [`TemplateDate`] that can be pinned for reproducible prompts.
//!
//! Encoding a rendered conversation follows transformers' `apply_chat_template`: the text is
//! tokenised **without** the post-processor's special tokens, so a template that writes
//! `{{ bos_token }}` yields exactly one BOS even when the tokenizer adds one to plain text.
//!
//! ```
//! use l2d_models::chat_template::{ChatMessage, ChatTemplate, RenderOptions};
//!
//! let template = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//!     "example",
//! );
//! let text = template.render(
//!     &[ChatMessage::user("  Hi!  ")],
//!     &RenderOptions { add_generation_prompt: true, ..Default::default() },
//! )?;
//! assert_eq!(text, "<|user|>Hi!\n<|assistant|>");
//! # Ok::<(), l2d_models::chat_template::ChatTemplateError>(())
//! ```

use std::path::Path;
use std::sync::{Arc, Mutex};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde::Serialize;

use crate::tokenizer::{ChatTemplateSpec, Tokenizer, TokenizerConfig, TokenizerError, read_text};

/// Errors of template loading and rendering.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The model has no chat template (a base model): pass one explicitly.
    #[error(
        "no chat template in {source_name}: this looks like a base model; pass a template \
         explicitly (e.g. a `chat_template.jinja` file)"
    )]
    NoTemplate {
        /// Where it was looked for.
        source_name: String,
    },
    /// The template source could not be read or parsed.
    #[error("cannot read the chat template from {source_name}: {reason}")]
    Source {
        /// The file or source.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The named template does not exist.
    #[error("no chat template named `{name}` in {source_name} (available: {available:?})")]
    UnknownName {
        /// The requested name.
        name: String,
        /// Where the templates come from.
        source_name: String,
        /// The names available.
        available: Vec<String>,
    },
    /// Several named templates and none called `default`.
    #[error(
        "{source_name} has several chat templates and no `default`: choose one of {available:?}"
    )]
    NoDefault {
        /// Where the templates come from.
        source_name: String,
        /// The names available.
        available: Vec<String>,
    },
    /// The template does not compile.
    #[error("chat template of {source_name} does not compile: {reason}")]
    Syntax {
        /// Where the template comes from.
        source_name: String,
        /// The compiler's message.
        reason: String,
    },
    /// The template called `raise_exception(message)`.
    #[error("chat template of {source_name} raised: {message}")]
    Raised {
        /// Where the template comes from.
        source_name: String,
        /// The message passed to `raise_exception`.
        message: String,
    },
    /// Rendering failed otherwise.
    #[error("cannot render the chat template of {source_name}: {reason}")]
    Render {
        /// Where the template comes from.
        source_name: String,
        /// The engine's message.
        reason: String,
    },
    /// Encoding the rendered text failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// One message of a conversation. Templates may read other fields (`tool_calls`, ...):
/// render a slice of any `Serialize` type (e.g. `serde_json::Value`) for those.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilDate {
    /// Year.
    pub year: i32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
}

/// What `strftime_now` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateDate {
    /// The current UTC date and time (transformers uses local time).
    #[default]
    Now,
    /// A fixed date at 00:00:00, for reproducible prompts (L2D pins 26 Jul 2024).
    Fixed(CivilDate),
}

impl TemplateDate {
    /// A fixed date.
    ///
    /// # Errors
    /// [`ChatTemplateError::Source`] if the date does not exist.
    pub fn fixed(year: i32, month: u32, day: u32) -> Result<Self, ChatTemplateError> {
        if chrono::NaiveDate::from_ymd_opt(year, month, day).is_none() {
            return Err(ChatTemplateError::Source {
                source_name: "TemplateDate::fixed".into(),
                reason: format!("{year:04}-{month:02}-{day:02} is not a date"),
            });
        }
        Ok(TemplateDate::Fixed(CivilDate { year, month, day }))
    }

    /// The date and time it stands for now.
    fn resolve(self) -> chrono::NaiveDateTime {
        match self {
            TemplateDate::Fixed(d) => chrono::NaiveDate::from_ymd_opt(d.year, d.month, d.day)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                // `CivilDate`'s fields are public: a date built without `fixed` may not exist.
                .unwrap_or_default(),
            TemplateDate::Now => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                chrono::DateTime::from_timestamp(secs, 0)
                    .unwrap_or_default()
                    .naive_utc()
            }
        }
    }
}

/// The execution budget of one render (minijinja's fuel), on top of a quarter of the input's
/// bytes: the released chat templates spend a few thousand on a conversation.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// Python's `datetime.strftime` on a naive date and time, for the directives templates use
/// (`%d %b %Y`, ...), including glibc's `%-d` (no padding), through `chrono`'s formatter. As in
/// Python, `%z` and `%Z` of a naive time are empty. Unknown directives are errors.
pub fn strftime(date: TemplateDate, format: &str) -> Result<String, String> {
    use std::fmt::Write as _;
    let naive = format.replace("%z", "").replace("%Z", "");
    let items = chrono::format::StrftimeItems::new(&naive)
        .parse()
        .map_err(|e| format!("unsupported strftime format {format:?}: {e}"))?;
    let mut out = String::new();
    write!(out, "{}", date.resolve().format_with_items(items.iter()))
        .map_err(|_| format!("strftime format {format:?} needs a time zone"))?;
    Ok(out)
}

/// Options of one rendering.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Append the header that starts the assistant's reply.
    pub add_generation_prompt: bool,
    /// Tool (function) schemas, passed as `tools` (`none` when absent).
    pub tools: Option<serde_json::Value>,
    /// Documents for retrieval templates, passed as `documents` (`none` when absent).
    pub documents: Option<serde_json::Value>,
    /// Which named template to use (default: `tool_use` when tools are given and it exists,
    /// else `default`).
    pub template_name: Option<String>,
    /// Further template variables; they override the special tokens.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A chat template with the special tokens it may print.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    /// `(name, source)`; a single template has the name `None`.
    templates: Vec<(Option<String>, String)>,
    source_name: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    unk_token: Option<String>,
    pad_token: Option<String>,
    date: TemplateDate,
}

impl ChatTemplate {
    /// One template from its Jinja source; `source_name` names it in errors.
    pub fn new(template: impl Into<String>, source_name: impl Into<String>) -> Self {
        ChatTemplate {
            templates: vec![(None, template.into())],
            source_name: source_name.into(),
            bos_token: None,
            eos_token: None,
            unk_token: None,
            pad_token: None,
            date: TemplateDate::Now,
        }
    }

    fn from_spec(spec: ChatTemplateSpec, source_name: String) -> Self {
        let mut t = Self::new(String::new(), source_name);
        t.templates = match spec {
            ChatTemplateSpec::Single(s) => vec![(None, s)],
            ChatTemplateSpec::Named(list) => list
                .into_iter()
                .map(|n| (Some(n.name), n.template))
                .collect(),
        };
        t
    }

    /// The template of a `tokenizer_config.json` (a string or a list of `{name, template}`),
    /// with its BOS / EOS / UNK / PAD tokens (strings or `{content}` objects).
    ///
    /// # Errors
    /// [`ChatTemplateError::Source`] if the file cannot be read or parsed,
    /// [`ChatTemplateError::NoTemplate`] if it has no `chat_template`.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self, ChatTemplateError> {
        let path = path.as_ref();
        let config = TokenizerConfig::from_file(path).map_err(|e| ChatTemplateError::Source {
            source_name: format!("`{}`", path.display()),
            reason: e.to_string(),
        })?;
        let name = format!("`{}`", path.display());
        let spec = config
            .chat_template
            .clone()
            .ok_or_else(|| ChatTemplateError::NoTemplate {
                source_name: name.clone(),
            })?;
        Ok(Self::from_spec(spec, name).with_tokens_of(&config))
    }

    /// The template of a `chat_template.jinja` file (no special tokens: see
    /// [`ChatTemplate::from_model_dir`]).
    ///
    /// # Errors
    /// [`ChatTemplateError::Source`] if the file cannot be read.
    pub fn from_jinja_file(path: impl AsRef<Path>) -> Result<Self, ChatTemplateError> {
        let path = path.as_ref();
        let text = read_text(path).map_err(|e| ChatTemplateError::Source {
            source_name: format!("`{}`", path.display()),
            reason: e.to_string(),
        })?;
        Ok(Self::new(text, format!("`{}`", path.display())))
    }

    /// The template of a Hugging Face model folder: `chat_template.jinja` if present (newer
    /// layout, which takes precedence as in transformers), else `tokenizer_config.json`'s
    /// `chat_template`; special tokens from `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`ChatTemplateError::NoTemplate`] for a base model without a template; read errors.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self, ChatTemplateError> {
        let dir = dir.as_ref();
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.exists() {
            Some(TokenizerConfig::from_file(&config_path).map_err(|e| {
                ChatTemplateError::Source {
                    source_name: format!("`{}`", config_path.display()),
                    reason: e.to_string(),
                }
            })?)
        } else {
            None
        };
        let jinja = dir.join("chat_template.jinja");
        let template = if jinja.exists() {
            Self::from_jinja_file(&jinja)?
        } else {
            match config.as_ref().and_then(|c| c.chat_template.clone()) {
                Some(spec) => Self::from_spec(spec, format!("`{}`", config_path.display())),
                None => {
                    return Err(ChatTemplateError::NoTemplate {
                        source_name: format!("`{}`", dir.display()),
                    });
                }
            }
        };
        Ok(match &config {
            Some(c) => template.with_tokens_of(c),
            None => template,
        })
    }

    fn with_tokens_of(mut self, config: &TokenizerConfig) -> Self {
        let text = |t: &Option<crate::tokenizer::TokenSpec>| t.as_ref().map(|t| t.content().into());
        self.bos_token = text(&config.bos_token);
        self.eos_token = text(&config.eos_token);
        self.unk_token = text(&config.unk_token);
        self.pad_token = text(&config.pad_token);
        self
    }

    /// Sets `bos_token` (`None`: undefined in the template).
    pub fn with_bos_token(mut self, token: Option<String>) -> Self {
        self.bos_token = token;
        self
    }

    /// Sets `eos_token`.
    pub fn with_eos_token(mut self, token: Option<String>) -> Self {
        self.eos_token = token;
        self
    }

    /// Sets `unk_token`.
    pub fn with_unk_token(mut self, token: Option<String>) -> Self {
        self.unk_token = token;
        self
    }

    /// Sets `pad_token`.
    pub fn with_pad_token(mut self, token: Option<String>) -> Self {
        self.pad_token = token;
        self
    }

    /// Sets what `strftime_now` reports (pin it for reproducible prompts).
    pub fn with_date(mut self, date: TemplateDate) -> Self {
        self.date = date;
        self
    }

    /// The names of the templates (empty for a single unnamed template).
    pub fn names(&self) -> Vec<String> {
        self.templates
            .iter()
            .filter_map(|(n, _)| n.clone())
            .collect()
    }

    /// The BOS text the template sees.
    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    /// The EOS text the template sees.
    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// Picks the template source as transformers' `get_chat_template` does.
    ///
    /// # Errors
    /// [`ChatTemplateError::UnknownName`], [`ChatTemplateError::NoDefault`].
    pub fn select(&self, name: Option<&str>, with_tools: bool) -> Result<&str, ChatTemplateError> {
        if let [(None, source)] = self.templates.as_slice() {
            return match name {
                None => Ok(source),
                Some(n) => Err(self.unknown(n)),
            };
        }
        let find = |n: &str| {
            self.templates
                .iter()
                .find(|(k, _)| k.as_deref() == Some(n))
                .map(|(_, s)| s.as_str())
        };
        match name {
            Some(n) => find(n).ok_or_else(|| self.unknown(n)),
            None => {
                let tool_use = if with_tools { find("tool_use") } else { None };
                tool_use
                    .or_else(|| find("default"))
                    .ok_or_else(|| ChatTemplateError::NoDefault {
                        source_name: self.source_name.clone(),
                        available: self.names(),
                    })
            }
        }
    }

    fn unknown(&self, name: &str) -> ChatTemplateError {
        ChatTemplateError::UnknownName {
            name: name.into(),
            source_name: self.source_name.clone(),
            available: self.names(),
        }
    }

    /// Renders a conversation.
    ///
    /// # Errors
    /// [`ChatTemplateError::Syntax`], [`ChatTemplateError::Raised`] (the template's
    /// `raise_exception`), [`ChatTemplateError::Render`], template selection errors.
    pub fn render<M: Serialize>(
        &self,
        messages: &[M],
        options: &RenderOptions,
    ) -> Result<String, ChatTemplateError> {
        let source = self.select(options.template_name.as_deref(), options.tools.is_some())?;
        let source = rewrite_generation_tags(source);
        let raised: Arc<Mutex<Option<String>>> = Arc::default();
        let mut env = Environment::new();
        // A template is code from the model's files: it runs on a budget that a real
        // conversation never comes near but that stops a runaway loop (or a template building
        // huge strings) in well under a second. Fuel also bounds memory, at about 64 bytes each.
        let input_bytes = [
            serde_json::to_string(messages).map_or(0, |s| s.len()),
            options.tools.as_ref().map_or(0, |v| v.to_string().len()),
            options
                .documents
                .as_ref()
                .map_or(0, |v| v.to_string().len()),
        ]
        .iter()
        .sum::<usize>() as u64;
        env.set_fuel(Some(TEMPLATE_FUEL + input_bytes / 4));
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| ChatTemplateError::Syntax {
                source_name: self.source_name.clone(),
                reason: e.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_filter);
        {
            let raised = raised.clone();
            env.add_function(
                "raise_exception",
                move |message: String| -> Result<Value, Error> {
                    *raised.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
                    Err(Error::new(ErrorKind::InvalidOperation, message))
                },
            );
        }
        let date = self.date;
        env.add_function(
            "strftime_now",
            move |format: String| -> Result<String, Error> {
                strftime(date, &format).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
            },
        );
        let template = env
            .template_from_named_str("chat_template", &source)
            .map_err(|e| ChatTemplateError::Syntax {
                source_name: self.source_name.clone(),
                reason: format!("{e:#}"),
            })?;

        let mut ctx = serde_json::Map::new();
        for (key, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("pad_token", &self.pad_token),
        ] {
            if let Some(t) = token {
                ctx.insert(key.into(), t.clone().into());
            }
        }
        let to_json = |v: &Option<serde_json::Value>| v.clone().unwrap_or(serde_json::Value::Null);
        ctx.insert("tools".into(), to_json(&options.tools));
        ctx.insert("documents".into(), to_json(&options.documents));
        ctx.insert(
            "add_generation_prompt".into(),
            options.add_generation_prompt.into(),
        );
        for (k, v) in &options.extra {
            ctx.insert(k.clone(), v.clone());
        }
        let messages = serde_json::to_value(messages).map_err(|e| ChatTemplateError::Render {
            source_name: self.source_name.clone(),
            reason: format!("messages cannot be serialized: {e}"),
        })?;
        ctx.insert("messages".into(), messages);
        let ctx = Value::from_pairs(ctx.iter().map(|(k, v)| (k.as_str(), json_to_value(v))));
        template.render(ctx).map_err(|e| {
            let message = raised.lock().unwrap_or_else(|p| p.into_inner()).take();
            if e.kind() == ErrorKind::OutOfFuel {
                return ChatTemplateError::Render {
                    source_name: self.source_name.clone(),
                    reason: format!(
                        "the template ran out of its execution budget ({} steps plus a quarter \
                         of the input's bytes): it loops or builds far more text than a \
                         conversation needs",
                        TEMPLATE_FUEL
                    ),
                };
            }
            match message {
                Some(message) => ChatTemplateError::Raised {
                    source_name: self.source_name.clone(),
                    message,
                },
                None => ChatTemplateError::Render {
                    source_name: self.source_name.clone(),
                    reason: format!("{e:#}"),
                },
            }
        })
    }

    /// Renders a conversation and encodes it as transformers' `apply_chat_template` does:
    /// without adding special tokens, so a BOS written by the template is the only BOS.
    ///
    /// # Errors
    /// As [`ChatTemplate::render`], and [`ChatTemplateError::Tokenizer`].
    pub fn encode<M: Serialize>(
        &self,
        tokenizer: &Tokenizer,
        messages: &[M],
        options: &RenderOptions,
    ) -> Result<Vec<u32>, ChatTemplateError> {
        let text = self.render(messages, options)?;
        Ok(encode_rendered(tokenizer, &text)?)
    }
}

/// Encodes a rendered chat prompt with at most one BOS: the post-processor's special tokens
/// are never added (the template is responsible for BOS, as in transformers), so a prompt
/// that starts with the BOS text gets exactly that one BOS id.
///
/// # Errors
/// [`TokenizerError::Encode`].
pub fn encode_rendered(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, TokenizerError> {
    tokenizer.encode(text, false)
}

/// A JSON value as a template value (objects keep their key order).
fn json_to_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::from(s.as_str()),
        J::Array(items) => Value::from(items.iter().map(json_to_value).collect::<Vec<_>>()),
        J::Object(map) => {
            Value::from_pairs(map.iter().map(|(k, v)| (k.as_str(), json_to_value(v))))
        }
    }
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (transformers' assistant-mask block,
/// unknown to minijinja) as `{% if true %}` / `{% endif %}`, keeping whitespace control.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let (left, inner) = match inner.strip_prefix(['-', '+']) {
            Some(r) => (&inner[..1], r),
            None => ("", inner),
        };
        let (inner, right) = match inner.strip_suffix(['-', '+']) {
            Some(r) => (r, &inner[inner.len() - 1..]),
            None => (inner, ""),
        };
        let replacement = match inner.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{left} {r} {right}%}}")),
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)` as transformers' `tojson` filter.
fn tojson_filter(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_str() {
            Some(s) => s.to_string(),
            None => {
                let n = v.as_i64().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: indent must be an int or a string",
                    )
                })?;
                " ".repeat(n.max(0) as usize)
            }
        }),
    };
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() => {
            let a = v.get_item_by_index(0)?;
            let b = v.get_item_by_index(1)?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be two strings",
                    ));
                }
            }
        }
        _ if indent.is_some() => (",".into(), ": ".into()),
        _ => (", ".into(), ": ".into()),
    };
    let opts = JsonOpts {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    dump(value, &opts, 0, &mut out)?;
    Ok(out)
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn newline(opts: &JsonOpts, level: usize, out: &mut String) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn dump(value: &Value, opts: &JsonOpts, level: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float_repr(f));
            }
        }
        ValueKind::String => dump_str(value.as_str().unwrap_or_default(), opts, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(opts, level + 1, out);
                dump(item, opts, level + 1, out)?;
            }
            newline(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(opts, level + 1, out);
                let key_text = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None => "null".into(),
                    ValueKind::Bool => (if key.is_true() { "true" } else { "false" }).into(),
                    _ => key.to_string(),
                };
                dump_str(&key_text, opts, out);
                out.push_str(&opts.key_sep);
                dump(&value.get_item(key)?, opts, level + 1, out)?;
            }
            newline(opts, level, out);
            out.push('}');
        }
        ValueKind::Undefined => {
            return Err(Error::new(
                ErrorKind::UndefinedError,
                "tojson: the value is undefined",
            ));
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: a {other} is not JSON serializable"),
            ));
        }
    }
    Ok(())
}

fn dump_str(s: &str, opts: &JsonOpts, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (opts.ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest round-trip digits, in fixed notation for decimal
/// exponents in [-4, 16) (with `.0` when integral), else `1.5e-05` / `1e+16` style.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{f:e}"); // shortest digits: "1.5e-5", "-2.5e300"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr_matches_python() {
        // Values and reprs as Python 3 prints them.
        for (f, s) in [
            (2.5, "2.5"),
            (1.0, "1.0"),
            (1e-5, "1e-05"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (123456789012345.0, "123456789012345.0"),
            (-2.5e-300, "-2.5e-300"),
            (0.1, "0.1"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn strftime_formats_a_pinned_date() {
        let d = TemplateDate::fixed(2024, 7, 26).unwrap();
        // 26 Jul 2024 was a Friday, day 208 of a leap year.
        assert_eq!(strftime(d, "%d %b %Y").unwrap(), "26 Jul 2024");
        assert_eq!(
            strftime(d, "%A %B %-d, %y (%j) %H:%M %%").unwrap(),
            "Friday July 26, 24 (208) 00:00 %"
        );
        assert_eq!(
            strftime(d, "%e|%-m|%u %w|%I%p|%F %T|%z%Z").unwrap(),
            "26|7|5 5|12AM|2024-07-26 00:00:00|"
        );
        assert!(strftime(d, "%Q").is_err());
        assert!(strftime(d, "%").is_err());
        assert!(TemplateDate::fixed(2023, 2, 29).is_err());
        assert!(TemplateDate::fixed(2024, 2, 29).is_ok());
        assert!(TemplateDate::fixed(2024, 13, 1).is_err());
    }

    #[test]
    fn generation_tags_become_if_blocks() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation -%}b{% endgeneration %}c{% if x %}"),
            "a{%- if true -%}b{% endif %}c{% if x %}"
        );
    }
}
