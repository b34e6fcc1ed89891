//! Streaming detokenisation: text deltas from token ids fed one at a time.
//!
//! Decoding each token alone breaks two things: byte-level / byte-fallback tokens can hold
//! part of a UTF-8 character (decoded alone they give `U+FFFD`), and SentencePiece-style
//! decoders strip the leading space of the first token they see. [`TokenStream`] decodes a
//! short window of ids twice — up to the last emitted token and up to the newest — and emits
//! the difference only once it does not end in an incomplete character; both decodes start
//! at the same token, so the decoder's leading-space rule applies to both alike. The
//! concatenation of the deltas and [`TokenStream::finish`] equals the full decode.
//!
//! ```
//! use l2d_models::detokenize::TokenStream;
//! use l2d_models::tokenizer::Tokenizer;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tokenizers/qwen2");
//! let tokenizer = Tokenizer::from_dir(dir)?;
//! let ids = tokenizer.encode("Crème brûlée 🤗", false)?;
//! let mut stream = TokenStream::new(&tokenizer, true);
//! let mut text = String::new();
//! for &id in &ids {
//!     if let Some(delta) = stream.next_token(id)? {
//!         assert!(!delta.contains('\u{FFFD}'));
//!         text.push_str(&delta);
//!     }
//! }
//! text.push_str(&stream.finish()?.unwrap_or_default());
//! assert_eq!(text, "Crème brûlée 🤗");
//! # Ok::<(), l2d_models::tokenizer::TokenizerError>(())
//! ```

use crate::tokenizer::{Tokenizer, TokenizerError};

/// Incremental decoder of one generated sequence.
#[derive(Debug, Clone)]
pub struct TokenStream<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// Start of the decoding window.
    prefix_offset: usize,
    /// End of what has been emitted (as ids).
    read_offset: usize,
}

impl<'a> TokenStream<'a> {
    /// A stream over `tokenizer`; special tokens are left out of the text when
    /// `skip_special_tokens`.
    pub fn new(tokenizer: &'a Tokenizer, skip_special_tokens: bool) -> Self {
        TokenStream {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Feeds one id; returns the new text, or `None` while it is incomplete (a partial
    /// UTF-8 character) or empty (a skipped special token).
    ///
    /// # Errors
    /// [`TokenizerError::Decode`] (e.g. an id outside the vocabulary).
    pub fn next_token(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let window = &self.ids[self.prefix_offset..];
        let prefix = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = self.decode(window)?;
        if text.len() <= prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        let delta = suffix_after(&text, &prefix);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(Some(delta.to_string()))
    }

    /// Flushes what is still held back (an incomplete character is decoded as `U+FFFD`, as
    /// the full decode does); `None` if nothing is left.
    ///
    /// # Errors
    /// [`TokenizerError::Decode`].
    pub fn finish(&mut self) -> Result<Option<String>, TokenizerError> {
        if self.read_offset == self.ids.len() {
            return Ok(None);
        }
        let prefix = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let text = self.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        let delta = suffix_after(&text, &prefix);
        Ok((!delta.is_empty()).then(|| delta.to_string()))
    }

    /// Every id fed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if ids.is_empty() {
            return Ok(String::new());
        }
        self.tokenizer.decode(ids, self.skip_special_tokens)
    }
}

/// The part of `text` after `prefix`; if a decoder changed the prefix's text (it should
/// not), the cut falls at the next character boundary so no character is split.
fn suffix_after<'t>(text: &'t str, prefix: &str) -> &'t str {
    if let Some(rest) = text.strip_prefix(prefix) {
        return rest;
    }
    let mut cut = prefix.len().min(text.len());
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    &text[cut..]
}
