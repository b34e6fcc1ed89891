//! Chat data: reading conversations (JSONL, Parquet), encoding them with the model's chat
//! template into token sequences whose loss covers only the assistant's tokens, splitting off
//! a validation set, and batching with right padding in a seeded order.
//!
//! The record layout is SmolTalk's: `{"messages": [{"role": .., "content": ..}, ..],
//! "class": ..}` where `class` is optional (a class name from the configured list, or its
//! index) and other fields are ignored.
//!
//! | module | what |
//! | --- | --- |
//! | [`read`] | JSONL and Parquet readers giving [`Conversation`]s |
//! | [`encode`] | template rendering, assistant spans, shifted labels, truncation |
//! | [`batch`] | right-padded [`Batch`]es, the seeded epoch order and the data position |
//! | [`split`] | the validation split |
//! | [`inspect`] | the token / loss-mask listing of `l2d data inspect` |

pub mod batch;
pub mod encode;
pub mod inspect;
pub mod read;
pub mod split;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use l2d_models::chat_template::ChatMessage;

pub use batch::{Batch, DataPosition, EpochOrder, collate};
pub use encode::{EncodeStats, ExampleEncoder, Layout, TokenizedExample};
pub use read::read_chat_file;
pub use split::{ValidationSplit, split_conversations};

use crate::error::{Result, TrainError};

/// Where a conversation came from, for error messages and `data inspect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The data file.
    pub path: Arc<PathBuf>,
    /// 1-based line (JSONL) or row (Parquet) number.
    pub record: usize,
    /// Whether `record` counts lines or rows.
    pub parquet: bool,
}

impl Origin {
    /// `line N` or `row N`.
    pub fn location(&self) -> String {
        if self.parquet {
            format!("row {}", self.record)
        } else {
            format!("line {}", self.record)
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.path.display(), self.location())
    }
}

/// A class label as written in the data: a name or an index into the class list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassLabel {
    /// A class name, looked up in the configured list.
    Name(String),
    /// An index into the configured list.
    Index(u64),
}

impl fmt::Display for ClassLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassLabel::Name(n) => write!(f, "{n:?}"),
            ClassLabel::Index(i) => write!(f, "{i}"),
        }
    }
}

/// One conversation of a chat file.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The messages, in order.
    pub messages: Vec<ChatMessage>,
    /// The class label, if the record has one.
    pub class: Option<ClassLabel>,
    /// Where it came from.
    pub origin: Origin,
}

/// The classes of classifier-free guidance: names in order; the null (unconditional) class
/// is the index after the last one, as in the reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassList {
    names: Vec<String>,
}

impl ClassList {
    /// A class list from names (empty: no guidance classes).
    ///
    /// # Errors
    /// [`TrainError::Config`] for a duplicate or empty name.
    pub fn new(names: Vec<String>) -> Result<Self> {
        for (i, n) in names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err(TrainError::config("data.classes", "a class name is empty"));
            }
            if names[..i].contains(n) {
                return Err(TrainError::config(
                    "data.classes",
                    format!("class {n:?} is listed twice"),
                ));
            }
        }
        Ok(ClassList { names })
    }

    /// The names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The number of real classes (the null class not counted).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no class is configured.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The null class's id (`len()`).
    pub fn null_id(&self) -> usize {
        self.names.len()
    }

    /// The id of a conversation's label: `None` when no classes are configured; the null
    /// class when the conversation has no label.
    ///
    /// # Errors
    /// [`TrainError::UnknownClass`] for a name not in the list or an index out of range.
    pub fn resolve(&self, conversation: &Conversation) -> Result<Option<usize>> {
        if self.names.is_empty() {
            return Ok(None);
        }
        let unknown = |class: String| TrainError::UnknownClass {
            path: conversation.origin.path.as_ref().clone(),
            location: conversation.origin.location(),
            class,
            known: self.names.clone(),
        };
        match &conversation.class {
            None => Ok(Some(self.null_id())),
            Some(ClassLabel::Name(n)) => self
                .names
                .iter()
                .position(|k| k == n)
                .map(Some)
                .ok_or_else(|| unknown(format!("{n:?}"))),
            Some(ClassLabel::Index(i)) => {
                let i = usize::try_from(*i).unwrap_or(usize::MAX);
                if i < self.names.len() {
                    Ok(Some(i))
                } else {
                    Err(unknown(i.to_string()))
                }
            }
        }
    }
}
