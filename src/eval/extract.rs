//! Answer extraction: exact match, the last number, or a multiple-choice letter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the answer is read from a model's output and compared with the expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extraction {
    /// The whole output, trimmed, equals the answer, trimmed.
    ExactMatch,
    /// The last number of the output (thousands commas stripped, optional sign and
    /// decimals) equals the answer's number.
    Number,
    /// The first capital letter among the first `choices` letters (`A`, `B`, …) that is
    /// followed by a non-alphanumeric character or the end, as the authors' MMLU extraction
    /// (`([ABCD])(?:[^a-zA-Z0-9]|$)`).
    Choice {
        /// How many options (4 for `A`–`D`), 1 to 26.
        choices: u8,
    },
}

impl fmt::Display for Extraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Extraction::ExactMatch => f.write_str("exact"),
            Extraction::Number => f.write_str("number"),
            Extraction::Choice { choices } => write!(f, "choice:{choices}"),
        }
    }
}

impl FromStr for Extraction {
    type Err = String;

    /// `exact`, `number`, `choice` (4 options) or `choice:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "exact" | "exact-match" | "exact_match" => Ok(Extraction::ExactMatch),
            "number" => Ok(Extraction::Number),
            "choice" | "mc" => Ok(Extraction::Choice { choices: 4 }),
            _ => {
                let n = s
                    .strip_prefix("choice:")
                    .ok_or_else(|| {
                        format!("unknown extraction {s:?}; expected exact, number, choice[:N]")
                    })?
                    .parse::<u8>()
                    .map_err(|e| format!("choice count in {s:?}: {e}"))?;
                if !(1..=26).contains(&n) {
                    return Err(format!("choice count {n} is outside 1..=26"));
                }
                Ok(Extraction::Choice { choices: n })
            }
        }
    }
}

impl Extraction {
    /// The answer read from `output`, normalised (a number without commas; a letter), or
    /// `None` when there is none.
    ///
    /// ```
    /// use l2d::eval::extract::Extraction;
    ///
    /// assert_eq!(Extraction::Number.extract("1,234 + 1 = 1,235."), Some("1235".into()));
    /// let mc = Extraction::Choice { choices: 4 };
    /// assert_eq!(mc.extract("The answer is (C)."), Some("C".into()));
    /// assert_eq!(Extraction::ExactMatch.extract("  42\n"), Some("42".into()));
    /// ```
    pub fn extract(&self, output: &str) -> Option<String> {
        match self {
            Extraction::ExactMatch => Some(output.trim().to_string()),
            Extraction::Number => last_number(output),
            Extraction::Choice { choices } => first_choice(output, *choices).map(String::from),
        }
    }

    /// Whether `output` answers `expected`.
    pub fn is_correct(&self, output: &str, expected: &str) -> bool {
        let Some(got) = self.extract(output) else {
            return false;
        };
        match self {
            Extraction::ExactMatch => got == expected.trim(),
            Extraction::Number => match (got.parse::<f64>(), number_of(expected)) {
                (Ok(a), Some(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => false,
            },
            Extraction::Choice { .. } => got == expected.trim(),
        }
    }

    /// Checks that `answer` can be compared under this extraction.
    ///
    /// # Errors
    /// A message saying why not (no number; not a letter in range).
    pub fn check_answer(&self, answer: &str) -> Result<(), String> {
        match self {
            Extraction::ExactMatch => Ok(()),
            Extraction::Number => number_of(answer)
                .map(|_| ())
                .ok_or_else(|| format!("answer {answer:?} is not a number")),
            Extraction::Choice { choices } => {
                let a = answer.trim();
                let last = (b'A' + choices - 1) as char;
                let ok = a.len() == 1 && a.chars().all(|c| ('A'..=last).contains(&c));
                ok.then_some(())
                    .ok_or_else(|| format!("answer {answer:?} is not a letter A..={last}"))
            }
        }
    }
}

/// The answer's own number: the whole trimmed text with commas stripped, else its last
/// number.
fn number_of(answer: &str) -> Option<f64> {
    let plain = answer.trim().replace(',', "");
    plain
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .or_else(|| last_number(answer).and_then(|s| s.parse().ok()))
}

/// The last number in `text`: an optional `-` (not preceded by a letter or digit), digits
/// with optional thousands commas (a comma between digits), an optional `.digits`.
/// Returned with the commas removed.
pub fn last_number(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let neg = i > 0 && b[i - 1] == b'-' && (i < 2 || !b[i - 2].is_ascii_alphanumeric());
        let mut s = String::new();
        if neg {
            s.push('-');
        }
        while i < b.len() {
            if b[i].is_ascii_digit() {
                s.push(b[i] as char);
                i += 1;
            } else if b[i] == b',' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
                i += 1;
            } else {
                break;
            }
        }
        if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
            s.push('.');
            i += 1;
            while i < b.len() && b[i].is_ascii_digit() {
                s.push(b[i] as char);
                i += 1;
            }
        }
        last = Some(s);
    }
    last
}

/// The first of the first `choices` capital letters followed by a character that is not an
/// ASCII letter or digit, or by the end of `text`.
pub fn first_choice(text: &str, choices: u8) -> Option<char> {
    let last = (b'A' + choices.clamp(1, 26) - 1) as char;
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().find_map(|(i, &c)| {
        let in_range = ('A'..=last).contains(&c);
        let boundary = chars.get(i + 1).is_none_or(|n| !n.is_ascii_alphanumeric());
        (in_range && boundary).then_some(c)
    })
}
