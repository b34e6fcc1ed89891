//! The synthetic task: `a+b=` with `a, b` uniform in `[0, 10^N)`, both zero-padded to `N`
//! digits, answered by the `N + 1` digits of the sum, most significant first.
//!
//! A sequence is `BOS a₁…a_N + b₁…b_N = s₀…s_N` (`3N + 4` tokens). Problems are drawn in code
//! from a seed; a hash of `(a, b)` puts one pair in [`HOLDOUT_MODULUS`] on the held-out side,
//! so the training stream never contains a test problem, whatever the seeds.

use std::collections::HashSet;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::DemoError;

/// Number of tokens: the ten digits, `+`, `=` and BOS.
pub const VOCAB_SIZE: usize = 13;

/// One pair in `HOLDOUT_MODULUS` (by hash) is reserved for evaluation.
pub const HOLDOUT_MODULUS: u64 = 10;

/// The largest supported number of digits (the sum must fit a `u64`).
pub const MAX_DIGITS: usize = 18;

/// The task's character-level tokenizer: `0`–`9` are ids 0–9, `+` is 10, `=` is 11 and BOS
/// (written `<s>`) is 12.
///
/// ```
/// use l2d::demo::task::DigitTokenizer;
///
/// let ids = DigitTokenizer::encode("<s>07+35=042")?;
/// assert_eq!(ids, vec![12, 0, 7, 10, 3, 5, 11, 0, 4, 2]);
/// assert_eq!(DigitTokenizer::decode(&ids)?, "<s>07+35=042");
/// # Ok::<(), l2d::demo::DemoError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigitTokenizer;

impl DigitTokenizer {
    /// The id of `+`.
    pub const PLUS: u32 = 10;
    /// The id of `=`.
    pub const EQUALS: u32 = 11;
    /// The id of the beginning-of-sequence token.
    pub const BOS: u32 = 12;
    /// How BOS is written in text.
    pub const BOS_TEXT: &'static str = "<s>";

    /// Token ids of `text` (digits, `+`, `=` and `<s>`).
    ///
    /// # Errors
    /// [`DemoError::Tokenize`] naming the first character outside the vocabulary.
    pub fn encode(text: &str) -> Result<Vec<u32>, DemoError> {
        let mut ids = Vec::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(tail) = rest.strip_prefix(Self::BOS_TEXT) {
                ids.push(Self::BOS);
                rest = tail;
                continue;
            }
            let id = match c {
                '0'..='9' => c as u32 - '0' as u32,
                '+' => Self::PLUS,
                '=' => Self::EQUALS,
                _ => {
                    return Err(DemoError::Tokenize {
                        what: format!("character {c:?} at byte {}", text.len() - rest.len()),
                    });
                }
            };
            ids.push(id);
            rest = &rest[c.len_utf8()..];
        }
        Ok(ids)
    }

    /// The text of `ids`.
    ///
    /// # Errors
    /// [`DemoError::Tokenize`] naming the first id outside the vocabulary.
    pub fn decode(ids: &[u32]) -> Result<String, DemoError> {
        let mut s = String::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            match id {
                0..=9 => s.push(char::from(b'0' + id as u8)),
                Self::PLUS => s.push('+'),
                Self::EQUALS => s.push('='),
                Self::BOS => s.push_str(Self::BOS_TEXT),
                _ => {
                    return Err(DemoError::Tokenize {
                        what: format!("id {id} at position {i}"),
                    });
                }
            }
        }
        Ok(s)
    }
}

/// One addition problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The first operand.
    pub a: u64,
    /// The second operand.
    pub b: u64,
}

impl Problem {
    /// The exact sum.
    pub fn sum(&self) -> u64 {
        self.a + self.b
    }
}

fn digits_of(mut x: u64, width: usize, out: &mut Vec<u32>) {
    let start = out.len();
    out.resize(start + width, 0);
    for slot in out[start..].iter_mut().rev() {
        *slot = (x % 10) as u32;
        x /= 10;
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A training batch in the layout of a next-token model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Every token but the last, `[batch, 3N + 3]`.
    pub inputs: Tensor<2, Int>,
    /// The answer digits, `[batch, N + 1]`: the targets of the last `N + 1` input positions.
    pub answers: Tensor<2, Int>,
}

/// `N`-digit addition: problem generation, tokenisation, the held-out split and batches.
///
/// ```
/// use l2d::demo::task::{AdditionTask, Problem};
///
/// let task = AdditionTask::new(3)?;
/// let p = Problem { a: 999, b: 1 };
/// assert_eq!(task.prompt_tokens(&p), vec![12, 9, 9, 9, 10, 0, 0, 1, 11]);
/// assert_eq!(task.answer_tokens(&p), vec![1, 0, 0, 0]);
/// assert_eq!(task.parse_answer(&[1, 0, 0, 0]), Some(1000));
/// # Ok::<(), l2d::demo::DemoError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdditionTask {
    digits: usize,
}

impl AdditionTask {
    /// The task with `digits`-digit operands (1 to [`MAX_DIGITS`]).
    ///
    /// # Errors
    /// [`DemoError::InvalidConfig`] for `digits` out of range.
    pub fn new(digits: usize) -> Result<Self, DemoError> {
        if !(1..=MAX_DIGITS).contains(&digits) {
            return Err(DemoError::invalid(
                "digits",
                format!("{digits} is outside 1..={MAX_DIGITS}"),
            ));
        }
        Ok(Self { digits })
    }

    /// Digits per operand (`N`).
    pub fn digits(&self) -> usize {
        self.digits
    }

    /// Operands are drawn from `0..modulus()` (`10^N`).
    pub fn modulus(&self) -> u64 {
        10u64.pow(self.digits as u32)
    }

    /// Prompt length: BOS, `N` digits, `+`, `N` digits, `=` (`2N + 3`).
    pub fn prompt_len(&self) -> usize {
        2 * self.digits + 3
    }

    /// Answer length (`N + 1`).
    pub fn answer_len(&self) -> usize {
        self.digits + 1
    }

    /// Full sequence length (`3N + 4`).
    pub fn seq_len(&self) -> usize {
        self.prompt_len() + self.answer_len()
    }

    /// The prompt's token ids.
    pub fn prompt_tokens(&self, p: &Problem) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.seq_len());
        self.push_prompt(p, &mut t);
        t
    }

    fn push_prompt(&self, p: &Problem, t: &mut Vec<u32>) {
        t.push(DigitTokenizer::BOS);
        digits_of(p.a, self.digits, t);
        t.push(DigitTokenizer::PLUS);
        digits_of(p.b, self.digits, t);
        t.push(DigitTokenizer::EQUALS);
    }

    /// The answer's token ids (`N + 1` digits of the sum, zero-padded).
    pub fn answer_tokens(&self, p: &Problem) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.answer_len());
        digits_of(p.sum(), self.answer_len(), &mut t);
        t
    }

    /// The number an answer spells, `None` if `tokens` is not `N + 1` digits.
    pub fn parse_answer(&self, tokens: &[u32]) -> Option<u64> {
        if tokens.len() != self.answer_len() {
            return None;
        }
        tokens
            .iter()
            .try_fold(0u64, |acc, &d| (d < 10).then(|| acc * 10 + d as u64))
    }

    /// Whether `p` belongs to the held-out side of the split (one pair in
    /// [`HOLDOUT_MODULUS`], by a hash of `(a, b)`).
    pub fn is_held_out(&self, p: &Problem) -> bool {
        splitmix64(splitmix64(p.a ^ 0x6c32_645f_7370_6c74) ^ p.b).is_multiple_of(HOLDOUT_MODULUS)
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> Problem {
        let m = self.modulus();
        Problem {
            a: rng.random_range(0..m),
            b: rng.random_range(0..m),
        }
    }

    /// A training problem (never a held-out one).
    pub fn sample_train(&self, rng: &mut ChaCha8Rng) -> Problem {
        loop {
            let p = self.draw(rng);
            if !self.is_held_out(&p) {
                return p;
            }
        }
    }

    /// `n` distinct held-out problems drawn with `rng`.
    ///
    /// # Errors
    /// [`DemoError::InvalidConfig`] when the held-out side has fewer than `n` problems.
    pub fn test_set(&self, n: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Problem>, DemoError> {
        let m = self.modulus();
        let total = m.saturating_mul(m);
        // Small tasks: enumerate the held-out side and draw without replacement.
        if total <= 4_000_000 {
            let mut all: Vec<Problem> = (0..total)
                .map(|k| Problem { a: k / m, b: k % m })
                .filter(|p| self.is_held_out(p))
                .collect();
            if all.len() < n {
                return Err(DemoError::invalid(
                    "test_size",
                    format!(
                        "{n} held-out problems requested but {}-digit addition has only {}",
                        self.digits,
                        all.len()
                    ),
                ));
            }
            for i in 0..n {
                let j = rng.random_range(i..all.len());
                all.swap(i, j);
            }
            all.truncate(n);
            return Ok(all);
        }
        let mut seen = HashSet::with_capacity(n);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let p = self.draw(rng);
            if self.is_held_out(&p) && seen.insert(p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// A batch of `size` training problems on `device`.
    ///
    /// # Shapes
    /// - `inputs`: `[size, 3N + 3]`; `answers`: `[size, N + 1]`
    pub fn train_batch(&self, size: usize, rng: &mut ChaCha8Rng, device: &Device) -> Batch {
        let problems: Vec<Problem> = (0..size).map(|_| self.sample_train(rng)).collect();
        self.batch(&problems, device)
    }

    /// `problems` as `l2d train`'s examples: the whole sequence but its last token as input,
    /// labels shifted to the next token and scored on the answer digits only.
    pub fn examples(&self, problems: &[Problem]) -> Vec<l2d_train::data::TokenizedExample> {
        let (len, prompt) = (self.seq_len() - 1, self.prompt_len());
        problems
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut row = Vec::with_capacity(self.seq_len());
                self.push_prompt(p, &mut row);
                digits_of(p.sum(), self.answer_len(), &mut row);
                let labels = (1..=len)
                    .map(|j| {
                        if j >= prompt {
                            i64::from(row[j])
                        } else {
                            l2d_train::data::encode::IGNORE_INDEX
                        }
                    })
                    .collect();
                l2d_train::data::TokenizedExample {
                    input_ids: row[..len].to_vec(),
                    labels,
                    class_id: None,
                    conversation: i,
                }
            })
            .collect()
    }

    /// The batch of the given problems on `device`.
    ///
    /// # Shapes
    /// - `inputs`: `[problems.len(), 3N + 3]`; `answers`: `[problems.len(), N + 1]`
    pub fn batch(&self, problems: &[Problem], device: &Device) -> Batch {
        let (len, ans) = (self.seq_len() - 1, self.answer_len());
        let mut inputs = Vec::with_capacity(problems.len() * len);
        let mut answers = Vec::with_capacity(problems.len() * ans);
        let mut row = Vec::with_capacity(self.seq_len());
        for p in problems {
            row.clear();
            self.push_prompt(p, &mut row);
            digits_of(p.sum(), ans, &mut row);
            inputs.extend(row[..len].iter().map(|&t| t as i64));
            answers.extend(row[self.prompt_len()..].iter().map(|&t| t as i64));
        }
        let n = problems.len();
        Batch {
            inputs: Tensor::from_data(TensorData::new(inputs, [n, len]), device),
            answers: Tensor::from_data(TensorData::new(answers, [n, ans]), device),
        }
    }

    /// The prompts of `problems` as a `[problems.len(), 2N + 3]` tensor on `device`.
    ///
    /// # Shapes
    /// - output: `[problems.len(), 2N + 3]`
    pub fn prompts(&self, problems: &[Problem], device: &Device) -> Tensor<2, Int> {
        let mut ids = Vec::with_capacity(problems.len() * self.prompt_len());
        let mut row = Vec::with_capacity(self.prompt_len());
        for p in problems {
            row.clear();
            self.push_prompt(p, &mut row);
            ids.extend(row.iter().map(|&t| t as i64));
        }
        Tensor::from_data(
            TensorData::new(ids, [problems.len(), self.prompt_len()]),
            device,
        )
    }
}
