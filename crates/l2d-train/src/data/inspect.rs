//! The listing of `l2d data inspect`: every token of a sequence with its loss mask.

use std::fmt::Write as _;

use l2d_models::tokenizer::Tokenizer;

use super::encode::TokenizedExample;

/// How tokens are shown.
///
/// Parses from and prints as `text` and `table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InspectFormat {
    /// The decoded text with scored spans marked (`[[...]]`, or green on a terminal).
    #[default]
    Text,
    /// One line per token: position, id, token text, and `*` when scored.
    Table,
}

impl std::str::FromStr for InspectFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(InspectFormat::Text),
            "table" => Ok(InspectFormat::Table),
            other => Err(format!("{other:?} is not a format (text, table)")),
        }
    }
}

impl std::fmt::Display for InspectFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InspectFormat::Text => "text",
            InspectFormat::Table => "table",
        })
    }
}

/// Escapes control characters of a token so a listing stays one line per token.
fn escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '\n' => "\\n".chars().collect::<Vec<_>>(),
            '\t' => "\\t".chars().collect(),
            '\r' => "\\r".chars().collect(),
            c => vec![c],
        })
        .collect()
}

/// The text of one token as the tokenizer decodes it alone (special tokens kept).
fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer
        .decode(&[id], false)
        .unwrap_or_else(|_| format!("<id {id}>"))
}

/// Renders one sequence: a header with counts, then its tokens.
///
/// With `color`, scored tokens are green (ANSI) instead of bracketed.
pub fn render_example(
    tokenizer: &Tokenizer,
    example: &TokenizedExample,
    format: InspectFormat,
    color: bool,
) -> String {
    let tokens = example.tokens_with_mask();
    let mut out = String::new();
    match format {
        InspectFormat::Table => {
            for (i, (id, scored)) in tokens.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{i:>5} {mark} {id:>7}  {text}",
                    mark = if *scored { '*' } else { ' ' },
                    text = escape(&token_text(tokenizer, *id)),
                );
            }
        }
        InspectFormat::Text => {
            let (open, close) = if color {
                ("\x1b[1;32m", "\x1b[0m")
            } else {
                ("[[", "]]")
            };
            // Decode runs of equal mask together so multi-byte characters split over
            // tokens decode correctly.
            let mut i = 0;
            while i < tokens.len() {
                let scored = tokens[i].1;
                let mut j = i;
                while j < tokens.len() && tokens[j].1 == scored {
                    j += 1;
                }
                let ids: Vec<u32> = tokens[i..j].iter().map(|t| t.0).collect();
                let text = tokenizer
                    .decode(&ids, false)
                    .unwrap_or_else(|_| format!("<ids {ids:?}>"));
                if scored {
                    let _ = write!(out, "{open}{text}{close}");
                } else {
                    out.push_str(&text);
                }
                i = j;
            }
            out.push('\n');
        }
    }
    out
}
