//! Encoding conversations into training sequences whose loss covers only the assistant's
//! tokens.
//!
//! Labels are **shifted** as in the reference (`training.py`, `shifted_labels=True`):
//! `labels[i]` is the token at `i + 1` when that token is scored, `-100` otherwise, so the
//! last scored token (the end-of-turn token) is a label but not an input.
//!
//! Two layouts:
//! - [`Layout::Conversation`] (default): one sequence per conversation, every assistant turn
//!   scored. The full conversation is rendered once with the model's chat template and
//!   tokenised once; each assistant turn's characters are found by rendering the prefixes
//!   `messages[..k]` with the generation prompt and `messages[..=k]` without it (both must be
//!   prefixes of the full rendering), and the tokens overlapping that range are the turn's.
//!   They are scored up to and including the first special token (the end-of-turn token:
//!   `<|im_end|>`, `<|eot_id|>`, ...), so a newline the template writes after it is not.
//! - [`Layout::Turn`] (the reference's `SmolTalkDataProcessor`): one example per assistant
//!   turn: the previous messages rendered with the generation prompt, then the turn's content
//!   encoded without special tokens, scored together with the tokenizer's EOS.
//!
//! Truncation follows the reference: a conversation is cut at the first assistant turn that
//! does not fit in `max_seq_len` inputs; later turns are dropped and counted, and a
//! conversation whose first assistant turn does not fit is skipped and counted.

use std::fmt;
use std::str::FromStr;

use l2d_models::chat_template::{ChatMessage, ChatTemplate, RenderOptions, TemplateDate};
use l2d_models::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use super::{ClassList, Conversation};
use crate::error::{Result, TrainError};

/// The label of a position that is not scored (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The date the reference pins its Llama-3 prompts to (`tasks/templates.py`).
pub const PINNED_DATE: TemplateDate = TemplateDate::Fixed(l2d_models::chat_template::CivilDate {
    year: 2024,
    month: 7,
    day: 26,
});

/// Marks the start and end of a `{% generation %}` block in a rendering.
const GEN_START: char = '\u{E000}';
const GEN_END: char = '\u{E001}';

/// The template source with a private-use character printed where each `{% generation %}`
/// block starts and ends; `None` if it has no such block. The whitespace rules that applied
/// around the tags (`trim_blocks`, `lstrip_blocks`, `-` markers) are applied by hand so the
/// rendering is otherwise unchanged.
fn mark_generation_blocks(source: &str) -> Option<String> {
    let mut out = String::with_capacity(source.len() + 64);
    let mut rest = source;
    let mut found = false;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            rest = "";
            break;
        };
        let inner = &tag[2..end];
        let left = inner.chars().next().filter(|c| *c == '-' || *c == '+');
        let right = inner.chars().last().filter(|c| *c == '-' || *c == '+');
        let name = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let mut after = &tag[end + 2..];
        match name {
            "generation" => {
                found = true;
                out.push_str(&tag[..end + 2]);
                // What the tag would have stripped after itself now precedes the marker.
                after = match right {
                    Some('-') => after.trim_start(),
                    Some(_) => after,
                    None => after
                        .strip_prefix("\r\n")
                        .or_else(|| after.strip_prefix('\n'))
                        .unwrap_or(after),
                };
                out.push_str(&format!("{{{{ '{GEN_START}' }}}}"));
            }
            "endgeneration" => {
                // What the tag would have stripped before itself now follows the marker.
                match left {
                    Some('-') => out.truncate(out.trim_end().len()),
                    Some(_) => {}
                    None => {
                        let line_start = out.rfind('\n').map_or(0, |i| i + 1);
                        if out[line_start..].chars().all(|c| c == ' ' || c == '\t') {
                            out.truncate(line_start);
                        }
                    }
                }
                out.push_str(&format!("{{{{ '{GEN_END}' }}}}"));
                out.push_str(&tag[..end + 2]);
            }
            _ => out.push_str(&tag[..end + 2]),
        }
        rest = after;
    }
    out.push_str(rest);
    found.then_some(out)
}

/// Removes the markers of [`mark_generation_blocks`] from a rendering and returns the text
/// with the byte ranges of the blocks; `None` if they do not pair up.
fn strip_generation_marks(rendered: &str) -> Option<(String, Vec<(usize, usize)>)> {
    let mut text = String::with_capacity(rendered.len());
    let mut spans = Vec::new();
    let mut open = None;
    for c in rendered.chars() {
        match c {
            GEN_START if open.is_none() => open = Some(text.len()),
            GEN_END => spans.push((open.take()?, text.len())),
            GEN_START => return None,
            c => text.push(c),
        }
    }
    open.is_none().then_some((text, spans))
}

/// Byte ranges of tokens in a text.
type Offsets = Vec<(usize, usize)>;
/// Token ids, per-token scored flags, and the token index after each scored turn.
type Spans = (Vec<u32>, Vec<bool>, Vec<usize>);
/// `((input_ids, shifted labels), assistant turns kept)`.
type Sequence = ((Vec<u32>, Vec<i64>), usize);

/// How conversations become sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One sequence per conversation, every assistant turn scored.
    #[default]
    Conversation,
    /// One example per assistant turn (context + that turn), as the reference does.
    Turn,
}

impl FromStr for Layout {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "conversation" => Ok(Layout::Conversation),
            "turn" => Ok(Layout::Turn),
            _ => Err(TrainError::config(
                "data.layout",
                format!("unknown layout {s:?}: use `conversation` or `turn`"),
            )),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Conversation => "conversation",
            Layout::Turn => "turn",
        })
    }
}

/// One training sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Input token ids, `[len]`.
    pub input_ids: Vec<u32>,
    /// Shifted labels, `[len]`: the next token where it is scored, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// The class id (the null class for an unlabelled conversation), when classes are
    /// configured.
    pub class_id: Option<usize>,
    /// Index of the conversation it came from (in the list given to the encoder).
    pub conversation: usize,
}

impl TokenizedExample {
    /// The number of inputs.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there is no input.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// The number of scored positions.
    pub fn num_scored(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }

    /// The whole token sequence (inputs then the last label) with, per token, whether it is
    /// scored (predicted with loss). The first token is never scored.
    pub fn tokens_with_mask(&self) -> Vec<(u32, bool)> {
        let mut out: Vec<(u32, bool)> = self.input_ids.iter().map(|&t| (t, false)).collect();
        for (i, &l) in self.labels.iter().enumerate() {
            if l == IGNORE_INDEX {
                continue;
            }
            let token = l as u32;
            if i + 1 < out.len() {
                out[i + 1].1 = true;
            } else {
                out.push((token, true));
            }
        }
        out
    }
}

/// Counts of what encoding kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeStats {
    /// Conversations read.
    pub conversations: usize,
    /// Sequences produced.
    pub examples: usize,
    /// Input tokens of all sequences.
    pub tokens: usize,
    /// Scored positions of all sequences.
    pub scored_tokens: usize,
    /// Conversations without any assistant turn (skipped).
    pub without_assistant: usize,
    /// Conversations whose first assistant turn exceeds `max_seq_len` (skipped).
    pub skipped_too_long: usize,
    /// Conversations cut after some assistant turns.
    pub truncated: usize,
    /// Assistant turns dropped by those cuts.
    pub dropped_turns: usize,
}

impl EncodeStats {
    /// Adds another count.
    pub fn merge(&mut self, other: &EncodeStats) {
        self.conversations += other.conversations;
        self.examples += other.examples;
        self.tokens += other.tokens;
        self.scored_tokens += other.scored_tokens;
        self.without_assistant += other.without_assistant;
        self.skipped_too_long += other.skipped_too_long;
        self.truncated += other.truncated;
        self.dropped_turns += other.dropped_turns;
    }
}

impl fmt::Display for EncodeStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conversations -> {} sequences, {} tokens ({} scored); skipped {} without an \
             assistant turn and {} whose first turn exceeds max_seq_len; cut {} \
             (dropping {} turns)",
            self.conversations,
            self.examples,
            self.tokens,
            self.scored_tokens,
            self.without_assistant,
            self.skipped_too_long,
            self.truncated,
            self.dropped_turns
        )
    }
}

/// Turns conversations into [`TokenizedExample`]s with a model's tokenizer and template.
#[derive(Debug, Clone)]
pub struct ExampleEncoder<'a> {
    tokenizer: &'a Tokenizer,
    template: ChatTemplate,
    /// The selected template with its `{% generation %}` blocks marked, if it has any.
    marked: Option<ChatTemplate>,
    date: TemplateDate,
    classes: ClassList,
    max_seq_len: usize,
    layout: Layout,
    template_name: Option<String>,
}

impl<'a> ExampleEncoder<'a> {
    /// An encoder producing at most `max_seq_len` inputs per sequence. The template's
    /// `strftime_now` is pinned to [`PINNED_DATE`] (26 Jul 2024), as the reference pins its
    /// Llama-3 prompts; see [`ExampleEncoder::with_date`].
    pub fn new(
        tokenizer: &'a Tokenizer,
        template: &ChatTemplate,
        max_seq_len: usize,
        layout: Layout,
    ) -> Self {
        let date = PINNED_DATE;
        let mut encoder = ExampleEncoder {
            tokenizer,
            template: template.clone().with_date(date),
            marked: None,
            date,
            classes: ClassList::default(),
            max_seq_len,
            layout,
            template_name: None,
        };
        encoder.marked = encoder.marked_template();
        encoder
    }

    /// Uses the named template of a model with several (`None`: the default).
    pub fn with_template_name(mut self, name: Option<String>) -> Self {
        self.template_name = name;
        self.marked = self.marked_template();
        self
    }

    /// Sets what the template's `strftime_now` reports.
    pub fn with_date(mut self, date: TemplateDate) -> Self {
        self.date = date;
        self.template = self.template.with_date(date);
        self.marked = self.marked.map(|m| m.with_date(date));
        self
    }

    /// Whether assistant spans come from the template's `{% generation %}` blocks (else from
    /// prefix renderings).
    pub fn uses_generation_blocks(&self) -> bool {
        self.marked.is_some()
    }

    fn marked_template(&self) -> Option<ChatTemplate> {
        let source = self
            .template
            .select(self.template_name.as_deref(), false)
            .ok()?;
        let marked = mark_generation_blocks(source)?;
        Some(
            ChatTemplate::new(marked, "chat template with marked generation blocks")
                .with_bos_token(self.template.bos_token().map(String::from))
                .with_eos_token(self.template.eos_token().map(String::from))
                .with_date(self.date),
        )
    }

    /// Sets the guidance classes that labels are resolved against.
    pub fn with_classes(mut self, classes: ClassList) -> Self {
        self.classes = classes;
        self
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Encodes every conversation, in order.
    ///
    /// # Errors
    /// Template and tokenizer failures naming the conversation, [`TrainError::UnknownClass`],
    /// [`TrainError::TurnSplit`] for a template whose prefixes are not prefixes of the whole.
    pub fn encode_all(
        &self,
        conversations: &[Conversation],
    ) -> Result<(Vec<TokenizedExample>, EncodeStats)> {
        let mut stats = EncodeStats::default();
        let mut out = Vec::new();
        for (i, c) in conversations.iter().enumerate() {
            let (examples, s) = self.encode(c, i)?;
            stats.merge(&s);
            out.extend(examples);
        }
        Ok((out, stats))
    }

    /// Encodes one conversation (`index` is recorded in the examples).
    ///
    /// # Errors
    /// As [`ExampleEncoder::encode_all`].
    pub fn encode(
        &self,
        conversation: &Conversation,
        index: usize,
    ) -> Result<(Vec<TokenizedExample>, EncodeStats)> {
        let class_id = self.classes.resolve(conversation)?;
        let mut stats = EncodeStats {
            conversations: 1,
            ..Default::default()
        };
        let assistant_turns: Vec<usize> = conversation
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == "assistant")
            .map(|(i, _)| i)
            .collect();
        if assistant_turns.is_empty() {
            stats.without_assistant = 1;
            return Ok((Vec::new(), stats));
        }
        let sequences = match self.layout {
            Layout::Conversation => self.encode_conversation(conversation, &assistant_turns)?,
            Layout::Turn => self.encode_turns(conversation, &assistant_turns)?,
        };
        let kept_turns = match self.layout {
            Layout::Conversation => sequences.first().map_or(0, |s| s.1),
            Layout::Turn => sequences.len(),
        };
        if kept_turns == 0 {
            stats.skipped_too_long = 1;
        } else if kept_turns < assistant_turns.len() {
            stats.truncated = 1;
            stats.dropped_turns = assistant_turns.len() - kept_turns;
        }
        let examples: Vec<TokenizedExample> = sequences
            .into_iter()
            .map(|(tokens_and_labels, _)| TokenizedExample {
                input_ids: tokens_and_labels.0,
                labels: tokens_and_labels.1,
                class_id,
                conversation: index,
            })
            .collect();
        stats.examples = examples.len();
        stats.tokens = examples.iter().map(TokenizedExample::len).sum();
        stats.scored_tokens = examples.iter().map(TokenizedExample::num_scored).sum();
        Ok((examples, stats))
    }

    fn options(&self, generation_prompt: bool) -> RenderOptions {
        RenderOptions {
            add_generation_prompt: generation_prompt,
            template_name: self.template_name.clone(),
            ..Default::default()
        }
    }

    fn render(&self, messages: &[ChatMessage], generation_prompt: bool) -> Result<String> {
        Ok(self
            .template
            .render(messages, &self.options(generation_prompt))?)
    }

    /// `((input_ids, labels), kept_turns)` of the whole conversation (empty when no turn fits).
    fn encode_conversation(
        &self,
        conversation: &Conversation,
        turns: &[usize],
    ) -> Result<Vec<Sequence>> {
        let (ids, scored, ends) = match &self.marked {
            Some(marked) => self.spans_from_generation_tags(marked, conversation)?,
            None => self.spans_from_prefixes(conversation, turns)?,
        };
        // Keep turns while the inputs (all tokens before the turn's last scored one) fit.
        let mut kept = 0;
        let mut end = 0;
        for &e in &ends {
            if e - 1 > self.max_seq_len {
                break;
            }
            kept += 1;
            end = e;
        }
        if end == 0 {
            return Ok(Vec::new());
        }
        let input_ids = ids[..end - 1].to_vec();
        let labels = (0..end - 1)
            .map(|i| {
                if scored[i + 1] {
                    i64::from(ids[i + 1])
                } else {
                    IGNORE_INDEX
                }
            })
            .collect();
        Ok(vec![((input_ids, labels), kept)])
    }

    fn tokenize_with_offsets(&self, text: &str) -> Result<(Vec<u32>, Offsets)> {
        let encoding = self
            .tokenizer
            .inner()
            .encode(text, false)
            .map_err(|e| l2d_models::tokenizer::TokenizerError::Encode(e.to_string()))?;
        Ok((encoding.get_ids().to_vec(), encoding.get_offsets().to_vec()))
    }

    /// Token ids, per-token scored flags, and the token index after each scored turn, from
    /// the template's `{% generation %}` blocks: every token overlapping a block is scored
    /// (transformers' `return_assistant_tokens_mask`).
    fn spans_from_generation_tags(
        &self,
        marked: &ChatTemplate,
        conversation: &Conversation,
    ) -> Result<Spans> {
        let rendered = marked.render(&conversation.messages, &RenderOptions::default())?;
        let (text, spans) =
            strip_generation_marks(&rendered).ok_or_else(|| TrainError::TurnSplit {
                what: format!("conversation at {}", conversation.origin),
                reason: "unbalanced {% generation %} blocks in the rendering".into(),
            })?;
        let (ids, offsets) = self.tokenize_with_offsets(&text)?;
        let mut scored = vec![false; ids.len()];
        let mut ends = Vec::new();
        for (a, b) in spans {
            let span: Vec<usize> = (0..ids.len())
                .filter(|&i| offsets[i].1 > a && offsets[i].0 < b)
                .collect();
            for &i in &span {
                scored[i] = true;
            }
            if let Some(&last) = span.last() {
                ends.push(last + 1);
            }
        }
        Ok((ids, scored, ends))
    }

    /// Token ids, per-token scored flags, and the token index after each scored turn, from
    /// prefix renderings: each assistant turn's tokens up to and including the first special
    /// token (its end-of-turn token), or up to its last non-blank token without one.
    fn spans_from_prefixes(&self, conversation: &Conversation, turns: &[usize]) -> Result<Spans> {
        let full = self.render(&conversation.messages, false)?;
        let (ids, offsets) = self.tokenize_with_offsets(&full)?;
        let mut scored = vec![false; ids.len()];
        let mut ends = Vec::with_capacity(turns.len());
        for &k in turns {
            let (a, b) = self.turn_range(conversation, &full, k)?;
            let span: Vec<usize> = (0..ids.len())
                .filter(|&i| offsets[i].1 > a && offsets[i].0 < b)
                .collect();
            let end_of_turn = span
                .iter()
                .copied()
                .find(|&i| self.tokenizer.is_special(ids[i]) && offsets[i].0 >= a);
            let last = end_of_turn.or_else(|| {
                span.iter()
                    .rev()
                    .copied()
                    .find(|&i| !full[offsets[i].0..offsets[i].1].trim().is_empty())
            });
            let Some(last) = last else { continue };
            for &i in span.iter().filter(|&&i| i <= last) {
                scored[i] = true;
            }
            ends.push(last + 1);
        }
        Ok((ids, scored, ends))
    }

    /// The byte range of assistant turn `k` in the rendering `full` of the whole
    /// conversation: from the start of its content to the end of its rendering.
    ///
    /// `messages[..k]` rendered without the generation prompt and `messages[..=k]` rendered
    /// must be prefixes of `full`. The content starts after the generation prompt when the
    /// template writes the same header inside the conversation; otherwise (a template that
    /// indents its generation prompt, say) at the first occurrence of the content.
    fn turn_range(
        &self,
        conversation: &Conversation,
        full: &str,
        k: usize,
    ) -> Result<(usize, usize)> {
        let messages = &conversation.messages;
        let split_error = |reason: String| TrainError::TurnSplit {
            what: format!("conversation at {}", conversation.origin),
            reason: format!("{reason}; use `layout = \"turn\"` for this template"),
        };
        let before = self.render(&messages[..k], false)?;
        let through = self.render(&messages[..=k], false)?;
        if !full.starts_with(&before) || !full.starts_with(&through) || through.len() < before.len()
        {
            return Err(split_error(format!(
                "the chat template's renderings of messages[..{k}] and messages[..={k}] are not \
                 prefixes of the whole conversation's"
            )));
        }
        let turn = &full[before.len()..through.len()];
        let prompted = self.render(&messages[..k], true)?;
        let header = prompted.strip_prefix(before.as_str()).unwrap_or("");
        let offset = if !header.is_empty() && turn.starts_with(header) {
            header.len()
        } else {
            let content = messages[k].content.trim();
            match turn.find(content) {
                Some(i) if !content.is_empty() => i,
                _ => {
                    return Err(split_error(format!(
                        "cannot find where assistant message {k} starts in the rendering"
                    )));
                }
            }
        };
        Ok((before.len() + offset, through.len()))
    }

    /// One `((input_ids, labels), 1)` per assistant turn that fits, stopping at the first
    /// that does not (the reference's `line2data`).
    fn encode_turns(&self, conversation: &Conversation, turns: &[usize]) -> Result<Vec<Sequence>> {
        let eos = self.tokenizer.eos_token().ok_or_else(|| {
            TrainError::config(
                "data.layout",
                format!(
                    "`turn` layout scores the tokenizer's EOS, but {} has none",
                    self.tokenizer.source()
                ),
            )
        })?;
        let mut out = Vec::new();
        for &k in turns {
            let messages = &conversation.messages;
            let context =
                self.template
                    .encode(self.tokenizer, &messages[..k], &self.options(true))?;
            let response = self.tokenizer.encode(&messages[k].content, false)?;
            if context.len() + response.len() > self.max_seq_len {
                break;
            }
            let mut labels = vec![IGNORE_INDEX; context.len().saturating_sub(1)];
            labels.extend(response.iter().map(|&t| i64::from(t)));
            labels.push(i64::from(eos.id));
            let mut input_ids = context;
            input_ids.extend(response);
            if labels.len() > input_ids.len() {
                // An empty context (a template rendering nothing): the first response token
                // cannot be predicted from nothing.
                labels.remove(0);
            }
            out.push(((input_ids, labels), 1));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marking generation blocks changes nothing but the markers, whatever the whitespace
    /// control around the tags.
    #[test]
    fn marked_rendering_equals_the_plain_rendering_without_markers() {
        let sources = [
            "{% for m in messages %}<{{ m.role }}>\n{% if m.role == 'assistant' %}\n{% generation %}\n{{ m.content }}|\n{% endgeneration %}\n{% else %}{{ m.content }}{% endif %}\n{% endfor %}",
            "{%- for m in messages %}<{{ m.role }}>  {%- generation -%}  \n {{ m.content }}  {%- endgeneration -%}\n\n{% endfor -%}",
            "{% for m in messages %}[{{ m.role }}]\n    {% generation %}\n    {{ m.content }}\n    {% endgeneration %}\nX{% endfor %}",
            "{% for m in messages %}{%+ generation +%} {{ m.content }} {%+ endgeneration +%}{% endfor %}",
        ];
        let messages = [
            ChatMessage::user("Hi  there"),
            ChatMessage::assistant("Hello!\nHow can I help?"),
        ];
        for source in sources {
            let plain = ChatTemplate::new(source, "t")
                .render(&messages, &RenderOptions::default())
                .unwrap();
            let marked = mark_generation_blocks(source).expect("has generation blocks");
            let rendered = ChatTemplate::new(marked, "m")
                .render(&messages, &RenderOptions::default())
                .unwrap();
            let (text, spans) = strip_generation_marks(&rendered).unwrap();
            assert_eq!(text, plain, "{source}");
            let last = spans.last().expect("a span");
            assert!(text[last.0..last.1].contains("How can I help?"), "{source}");
        }
        assert!(mark_generation_blocks("{{ messages }}").is_none());
    }
}
