//! Local JSONL task files: one `{"prompt": ..., "answer": ...}` object per line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::extract::Extraction;

/// One problem of a task file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskItem {
    /// What the model is asked.
    pub prompt: String,
    /// The expected answer (a string; a JSON number is read as its text).
    pub answer: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    prompt: String,
    answer: serde_json::Value,
}

/// Reads a JSONL task file: blank lines are skipped, `answer` may be a string or a number,
/// and every answer must be checkable with `extraction` (a number for
/// [`Extraction::Number`], one letter in range for [`Extraction::Choice`]).
///
/// # Errors
/// [`EvalError::Io`] when the file cannot be read; [`EvalError::TaskFile`] naming the file,
/// the 1-based line and what is wrong; an empty file is an error too.
pub fn load_tasks(path: &Path, extraction: Extraction) -> Result<Vec<TaskItem>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_tasks(&text, path, extraction)
}

/// [`load_tasks`] on text already read (`path` names it in errors).
///
/// # Errors
/// As [`load_tasks`].
pub fn parse_tasks(
    text: &str,
    path: &Path,
    extraction: Extraction,
) -> Result<Vec<TaskItem>, EvalError> {
    let err = |line: usize, reason: String| EvalError::TaskFile {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawItem = serde_json::from_str(line).map_err(|e| err(n, e.to_string()))?;
        let answer = match raw.answer {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(x) => x.to_string(),
            other => {
                return Err(err(
                    n,
                    format!("`answer` must be a string or a number, found {other}"),
                ));
            }
        };
        extraction
            .check_answer(&answer)
            .map_err(|reason| err(n, reason))?;
        items.push(TaskItem {
            prompt: raw.prompt,
            answer,
        });
    }
    if items.is_empty() {
        return Err(err(0, "no task items".into()));
    }
    Ok(items)
}
