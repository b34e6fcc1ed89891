//! Readers of chat files: JSONL (one record per line) and Parquet (feature `parquet`, the
//! layout of SmolTalk's files: a `messages` list of `{role, content}` structs and an optional
//! `class` column).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use l2d_models::chat_template::ChatMessage;
use serde_json::Value;

use super::{ClassLabel, Conversation, Origin};
use crate::error::{Result, TrainError};

/// Reads every conversation of a chat file, choosing the reader by extension: `.jsonl` /
/// `.json` (JSON Lines) or `.parquet`.
///
/// # Errors
/// [`TrainError::Io`] if the file cannot be read, [`TrainError::Data`] naming the line or row
/// of a malformed record, [`TrainError::Format`] for an unknown extension or an unsupported
/// Parquet codec.
pub fn read_chat_file(path: impl AsRef<Path>) -> Result<Vec<Conversation>> {
    let path = path.as_ref();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "jsonl" | "json" | "ndjson" => read_jsonl(path),
        "parquet" => read_parquet(path),
        _ => Err(TrainError::Format {
            path: path.to_path_buf(),
            reason: "unknown chat-file extension: use .jsonl (JSON Lines) or .parquet".into(),
        }),
    }
}

/// Reads a JSON Lines chat file (blank lines are skipped).
///
/// # Errors
/// As [`read_chat_file`].
pub fn read_jsonl(path: &Path) -> Result<Vec<Conversation>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
    let shared = Arc::new(path.to_path_buf());
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            path: shared.clone(),
            record: i + 1,
            parquet: false,
        };
        let value: Value = serde_json::from_str(line).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            location: origin.location(),
            reason: format!("invalid JSON: {e}"),
        })?;
        out.push(conversation_from_json(&value, origin)?);
    }
    Ok(out)
}

/// A conversation from one JSON record (`messages` and optional `class`).
///
/// # Errors
/// [`TrainError::Data`] naming `origin` and the field at fault.
pub fn conversation_from_json(value: &Value, origin: Origin) -> Result<Conversation> {
    let bad = |reason: String| TrainError::Data {
        path: origin.path.as_ref().clone(),
        location: origin.location(),
        reason,
    };
    let obj = value
        .as_object()
        .ok_or_else(|| bad("a record must be a JSON object".into()))?;
    let messages = obj
        .get("messages")
        .ok_or_else(|| bad("missing field `messages`".into()))?
        .as_array()
        .ok_or_else(|| bad("`messages` must be a list".into()))?;
    let mut out = Vec::with_capacity(messages.len());
    for (j, m) in messages.iter().enumerate() {
        let field = |name: &str| -> Result<String> {
            match m.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!(
                    "`messages[{j}].{name}` must be a string, found {other}"
                ))),
                None => Err(bad(format!("missing field `messages[{j}].{name}`"))),
            }
        };
        out.push(ChatMessage::new(field("role")?, field("content")?));
    }
    let class = match obj.get("class") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(ClassLabel::Name(s.clone())),
        Some(Value::Number(n)) => Some(ClassLabel::Index(n.as_u64().ok_or_else(|| {
            bad(format!(
                "`class` must be a name or a non-negative integer, found {n}"
            ))
        })?)),
        Some(other) => {
            return Err(bad(format!(
                "`class` must be a name or a non-negative integer, found {other}"
            )));
        }
    };
    Ok(Conversation {
        messages: out,
        class,
        origin,
    })
}

/// Reads a Parquet chat file.
///
/// # Errors
/// As [`read_chat_file`]; without the `parquet` feature, [`TrainError::Format`].
#[cfg(feature = "parquet")]
pub fn read_parquet(path: &Path) -> Result<Vec<Conversation>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    let format = |reason: String| TrainError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| TrainError::io("read", path, e))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| format(format!("not a readable Parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr();
    let has = |name: &str| {
        schema
            .root_schema()
            .get_fields()
            .iter()
            .any(|f| f.name() == name)
    };
    if !has("messages") {
        return Err(format("no `messages` column".into()));
    }
    let shared = Arc::new(path.to_path_buf());
    let mut out = Vec::new();
    for (i, row) in reader.into_iter().enumerate() {
        let origin = Origin {
            path: shared.clone(),
            record: i + 1,
            parquet: true,
        };
        let row = row.map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            location: origin.location(),
            reason: format!("cannot decode the row: {e}"),
        })?;
        let mut record = serde_json::Map::new();
        for (name, field) in row.get_column_iter() {
            if name == "messages" || name == "class" {
                record.insert(name.clone(), parquet_json::field_to_json(field));
            }
        }
        out.push(conversation_from_json(&Value::Object(record), origin)?);
    }
    Ok(out)
}

/// Reads a Parquet chat file.
///
/// # Errors
/// Always [`TrainError::Format`]: this build has no Parquet support.
#[cfg(not(feature = "parquet"))]
pub fn read_parquet(path: &Path) -> Result<Vec<Conversation>> {
    Err(TrainError::Format {
        path: path.to_path_buf(),
        reason: "this build of l2d-train has no Parquet support (feature `parquet`)".into(),
    })
}

#[cfg(feature = "parquet")]
mod parquet_json {
    use parquet::record::Field;
    use serde_json::Value;

    /// The JSON value of a Parquet field, for the kinds a chat record holds (strings, integers,
    /// lists, structs, null); others become their display string.
    pub(super) fn field_to_json(field: &Field) -> Value {
        match field {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(*b),
            Field::Byte(n) => Value::from(*n),
            Field::Short(n) => Value::from(*n),
            Field::Int(n) => Value::from(*n),
            Field::Long(n) => Value::from(*n),
            Field::UByte(n) => Value::from(*n),
            Field::UShort(n) => Value::from(*n),
            Field::UInt(n) => Value::from(*n),
            Field::ULong(n) => Value::from(*n),
            Field::Str(s) => Value::String(s.clone()),
            Field::Bytes(b) => match std::str::from_utf8(b.data()) {
                Ok(s) => Value::String(s.to_string()),
                Err(_) => Value::String(format!("{b:?}")),
            },
            Field::Group(row) => Value::Object(
                row.get_column_iter()
                    .map(|(k, v)| (k.clone(), field_to_json(v)))
                    .collect(),
            ),
            Field::ListInternal(list) => {
                Value::Array(list.elements().iter().map(field_to_json).collect())
            }
            other => Value::String(other.to_string()),
        }
    }
}

/// Reads several chat files in order.
///
/// # Errors
/// As [`read_chat_file`].
pub fn read_chat_files(paths: &[PathBuf]) -> Result<Vec<Conversation>> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(read_chat_file(p)?);
    }
    Ok(out)
}
