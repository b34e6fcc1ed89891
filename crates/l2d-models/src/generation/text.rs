//! The text of one generated sequence as it streams: UTF-8-safe deltas from
//! [`TokenStream`], cut at the first stop string, with any tail that could still become a
//! stop string held back until the next token decides.

use crate::detokenize::TokenStream;
use crate::stops::StopSet;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// What one token added to the visible text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDelta {
    /// Text that is now final (never part of a stop string); may be empty.
    pub text: String,
    /// The stop string that ended the text, if this token completed one.
    pub stop_string: Option<String>,
}

/// Streaming text of one sequence with stop strings.
///
/// Invariant: the text handed out so far never contains the start of a stop string, so a
/// stop string split across tokens (`"\n"` then `"\n"` for `"\n\n"`) is never printed.
///
/// ```
/// use l2d_models::generation::StreamingText;
/// use l2d_models::stops::StopSet;
/// use l2d_models::tokenizer::Tokenizer;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizers/qwen2");
/// let tokenizer = Tokenizer::from_dir(dir)?;
/// let stops = StopSet::new().with_string("END");
/// let mut text = StreamingText::new(&tokenizer, true);
/// let mut shown = String::new();
/// for id in tokenizer.encode("Paris. EN", false)? {
///     shown += &text.push(id, &stops)?.text;
/// }
/// assert_eq!(shown, "Paris. "); // "EN" is held back: it may start "END"
/// for id in tokenizer.encode("D more", false)? {
///     let delta = text.push(id, &stops)?;
///     shown += &delta.text;
///     if delta.stop_string.is_some() {
///         break;
///     }
/// }
/// assert_eq!(shown, "Paris. ");
/// assert_eq!(text.text(), "Paris. ");
/// # Ok::<(), l2d_models::tokenizer::TokenizerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamingText<'t> {
    stream: TokenStream<'t>,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl<'t> StreamingText<'t> {
    /// An empty sequence decoded with `tokenizer` (special tokens left out of the text when
    /// `skip_special_tokens`).
    pub fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool) -> Self {
        StreamingText {
            stream: TokenStream::new(tokenizer, skip_special_tokens),
            text: String::new(),
            emitted: 0,
            stopped: false,
        }
    }

    /// Feeds one generated token. Once a stop string has been found, further tokens add
    /// nothing.
    ///
    /// # Errors
    /// [`TokenizerError::Decode`].
    pub fn push(&mut self, id: u32, stops: &StopSet) -> Result<TextDelta, TokenizerError> {
        if self.stopped {
            return Ok(self.empty());
        }
        if let Some(delta) = self.stream.next_token(id)? {
            self.text.push_str(&delta);
        }
        Ok(self.release(stops, false))
    }

    /// Ends the sequence: flushes an incomplete character (as the full decode shows it) and
    /// releases the held-back tail, still cut at a stop string.
    ///
    /// # Errors
    /// [`TokenizerError::Decode`].
    pub fn finish(&mut self, stops: &StopSet) -> Result<TextDelta, TokenizerError> {
        if self.stopped {
            return Ok(self.empty());
        }
        if let Some(rest) = self.stream.finish()? {
            self.text.push_str(&rest);
        }
        Ok(self.release(stops, true))
    }

    /// The text so far (final once finished), without any stop string.
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }

    /// Consumes the tracker, returning [`StreamingText::text`].
    pub fn into_text(mut self) -> String {
        self.text.truncate(self.emitted);
        self.text
    }

    fn empty(&self) -> TextDelta {
        TextDelta {
            text: String::new(),
            stop_string: None,
        }
    }

    fn release(&mut self, stops: &StopSet, all: bool) -> TextDelta {
        let start = self.emitted;
        // A stop string cannot start inside the emitted part (it would have been held back).
        if let Some((offset, stop)) = stops.find_stop_string(&self.text[start..]) {
            let stop = stop.to_string();
            let end = start + offset;
            self.text.truncate(end);
            self.emitted = end;
            self.stopped = true;
            return TextDelta {
                text: self.text[start..end].to_string(),
                stop_string: Some(stop),
            };
        }
        let hold = if all {
            0
        } else {
            stops
                .pending_prefix_len(&self.text)
                .min(self.text.len() - start)
        };
        let end = self.text.len() - hold;
        self.emitted = end;
        TextDelta {
            text: self.text[start..end].to_string(),
            stop_string: None,
        }
    }
}
