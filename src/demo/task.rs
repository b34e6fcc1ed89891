//! The synthetic tasks, all over one digit vocabulary: `N`-digit addition `a+b=` (the
//! quickstart's), `N`-digit multiplication `a*b=`, and two one-token tasks that need serial
//! computation along the prompt: the sum of `N` digits modulo 10 (the composition of `N`
//! maps `x ↦ x + d mod 10`) and the product of `N` elements of the permutation group `S₃`.
//!
//! A sequence is `BOS prompt = answer`. Problems are drawn in code from a seed; a hash of the
//! problem puts one in [`HOLDOUT_MODULUS`] on the held-out side, so the training stream never
//! contains a test problem, whatever the seeds.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::DemoError;

/// Stream of the finetuning runs' data generator.
const FINETUNE_DATA_STREAM: u64 = 0x6c6f_7261;

/// The generator of the finetuning problems for `seed`: the LoRA baseline and the diffusion
/// path given the same seed see the same problems in the same order.
pub fn finetune_data_rng(seed: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    ChaCha8Rng::seed_from_u64(seed ^ FINETUNE_DATA_STREAM)
}

/// Number of tokens of the addition task (and of the one-token tasks): the ten digits, `+`,
/// `=` and BOS. Multiplication adds `*` ([`TaskKind::vocab_size`]).
pub const VOCAB_SIZE: usize = 13;

/// One problem in `HOLDOUT_MODULUS` (by hash) is reserved for evaluation.
pub const HOLDOUT_MODULUS: u64 = 10;

/// The largest supported number of digits (the answer must fit a `u64`).
pub const MAX_DIGITS: usize = 18;

/// The task's character-level tokenizer: `0`–`9` are ids 0–9, `+` is 10, `=` is 11, BOS
/// (written `<s>`) is 12 and `*` is 13.
///
/// ```
/// use l2d::demo::task::DigitTokenizer;
///
/// let ids = DigitTokenizer::encode("<s>07+35=042")?;
/// assert_eq!(ids, vec![12, 0, 7, 10, 3, 5, 11, 0, 4, 2]);
/// assert_eq!(DigitTokenizer::decode(&ids)?, "<s>07+35=042");
/// assert_eq!(DigitTokenizer::encode("3*4")?, vec![3, 13, 4]);
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
    /// The id of `*`.
    pub const TIMES: u32 = 13;
    /// How BOS is written in text.
    pub const BOS_TEXT: &'static str = "<s>";

    /// Token ids of `text` (digits, `+`, `*`, `=` and `<s>`).
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
                '*' => Self::TIMES,
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
                Self::TIMES => s.push('*'),
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

/// Which task: what the prompt holds and what the answer is.
///
/// The names parse from and print as `addition`, `multiplication`, `modular-sum` and
/// `permutation`.
///
/// ```
/// use l2d::demo::task::TaskKind;
///
/// let kind: TaskKind = "modular-sum".parse()?;
/// assert_eq!(kind, TaskKind::ModularSum);
/// assert_eq!(kind.to_string(), "modular-sum");
/// # Ok::<(), l2d::demo::DemoError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// `a+b=` with `N`-digit operands, answered by the `N + 1` digits of the sum.
    #[default]
    Addition,
    /// `a*b=` with `N`-digit operands, answered by the `2N` digits of the product
    /// (`N` ≤ 9).
    Multiplication,
    /// `d₁…d_N=`, answered by one digit: `(d₁ + … + d_N) mod 10`, the composition of the
    /// maps `x ↦ x + dᵢ mod 10`.
    ModularSum,
    /// `g₁…g_N=` with each `gᵢ` one of the six elements of `S₃` (digits 0–5, see
    /// [`s3_compose`]), answered by one digit: the product `g₁ ∘ … ∘ g_N`.
    Permutation,
}

impl TaskKind {
    /// Every task.
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Addition,
        TaskKind::Multiplication,
        TaskKind::ModularSum,
        TaskKind::Permutation,
    ];

    /// The name as parsed and printed.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Addition => "addition",
            TaskKind::Multiplication => "multiplication",
            TaskKind::ModularSum => "modular-sum",
            TaskKind::Permutation => "permutation",
        }
    }

    /// Tokens of the task's model: 14 with `*` for multiplication, [`VOCAB_SIZE`] otherwise.
    pub fn vocab_size(self) -> usize {
        match self {
            TaskKind::Multiplication => VOCAB_SIZE + 1,
            _ => VOCAB_SIZE,
        }
    }

    /// The largest number of digits (prompt elements) the task supports.
    pub fn max_digits(self) -> usize {
        match self {
            TaskKind::Multiplication => MAX_DIGITS / 2,
            _ => MAX_DIGITS,
        }
    }

    /// Symbols per prompt element of a one-token task (10 digits, 6 permutations); `None`
    /// for the two-operand tasks.
    fn alphabet(self) -> Option<u64> {
        match self {
            TaskKind::ModularSum => Some(10),
            TaskKind::Permutation => Some(6),
            TaskKind::Addition | TaskKind::Multiplication => None,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = DemoError;

    fn from_str(s: &str) -> Result<Self, DemoError> {
        TaskKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TaskKind::ALL.iter().map(|k| k.name()).collect();
                DemoError::invalid("task", format!("{s:?} is not one of {}", names.join(", ")))
            })
    }
}

/// The product `g ∘ h` in `S₃` of two elements numbered 0–5: element `i` is the permutation
/// `[0, 1, 2]` ↦ the `i`-th of `012, 021, 102, 120, 201, 210` (lexicographic order), and
/// `(g ∘ h)(x) = g(h(x))`. The group is not commutative, so the order of a prompt matters.
///
/// ```
/// use l2d::demo::task::s3_compose;
///
/// assert_eq!(s3_compose(0, 4), 4); // the identity
/// assert_eq!(s3_compose(1, 2), 4); // two transpositions make a 3-cycle
/// assert_eq!(s3_compose(2, 1), 3); // and in the other order, the other 3-cycle
/// assert_eq!(s3_compose(3, 4), 0); // inverse 3-cycles
/// ```
pub fn s3_compose(g: u32, h: u32) -> u32 {
    const PERMS: [[u8; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let (g, h) = (PERMS[g as usize % 6], PERMS[h as usize % 6]);
    let product = [g[h[0] as usize], g[h[1] as usize], g[h[2] as usize]];
    PERMS.iter().position(|p| *p == product).unwrap_or(0) as u32
}

/// One problem: two operands, or (for a one-token task) the prompt's `N` elements as the
/// decimal digits of `a`, most significant first, with `b = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Problem {
    /// The first operand, or the prompt's elements.
    pub a: u64,
    /// The second operand (0 for a one-token task).
    pub b: u64,
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
    /// Every token but the last, `[batch, seq_len - 1]`.
    pub inputs: Tensor<2, Int>,
    /// The answer digits, `[batch, answer_len]`: the targets of the last `answer_len` input
    /// positions.
    pub answers: Tensor<2, Int>,
}

/// A task of [`TaskKind`] at `N` digits: problem generation, tokenisation, the held-out split
/// and batches.
///
/// ```
/// use l2d::demo::task::{DigitTask, Problem, TaskKind};
///
/// let task = DigitTask::addition(3)?;
/// let p = Problem { a: 999, b: 1 };
/// assert_eq!(task.prompt_tokens(&p), vec![12, 9, 9, 9, 10, 0, 0, 1, 11]);
/// assert_eq!(task.answer_tokens(&p), vec![1, 0, 0, 0]);
///
/// let task = DigitTask::new(TaskKind::Multiplication, 2)?;
/// assert_eq!(task.answer_tokens(&Problem { a: 99, b: 12 }), vec![1, 1, 8, 8]);
///
/// let task = DigitTask::new(TaskKind::ModularSum, 4)?;
/// let p = Problem { a: 9_385, b: 0 };
/// assert_eq!(task.prompt_tokens(&p), vec![12, 9, 3, 8, 5, 11]);
/// assert_eq!(task.answer_tokens(&p), vec![5]);
/// # Ok::<(), l2d::demo::DemoError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitTask {
    kind: TaskKind,
    digits: usize,
}

impl DigitTask {
    /// The task `kind` with `digits`-digit operands or prompts (1 to
    /// [`TaskKind::max_digits`]).
    ///
    /// # Errors
    /// [`DemoError::InvalidConfig`] for `digits` out of range.
    pub fn new(kind: TaskKind, digits: usize) -> Result<Self, DemoError> {
        let max = kind.max_digits();
        if !(1..=max).contains(&digits) {
            return Err(DemoError::invalid(
                "digits",
                format!("{digits} is outside 1..={max} for {kind}"),
            ));
        }
        Ok(Self { kind, digits })
    }

    /// `N`-digit addition, the quickstart's task.
    ///
    /// # Errors
    /// [`DemoError::InvalidConfig`] for `digits` out of range.
    pub fn addition(digits: usize) -> Result<Self, DemoError> {
        Self::new(TaskKind::Addition, digits)
    }

    /// Which task.
    pub fn kind(&self) -> TaskKind {
        self.kind
    }

    /// Digits per operand, or prompt elements (`N`).
    pub fn digits(&self) -> usize {
        self.digits
    }

    /// Tokens of the task's model.
    pub fn vocab_size(&self) -> usize {
        self.kind.vocab_size()
    }

    /// Prompt length: BOS, the operands with their operator or the `N` elements, `=`.
    pub fn prompt_len(&self) -> usize {
        match self.kind.alphabet() {
            None => 2 * self.digits + 3,
            Some(_) => self.digits + 2,
        }
    }

    /// Answer length: `N + 1` for addition, `2N` for multiplication, 1 otherwise.
    pub fn answer_len(&self) -> usize {
        match self.kind {
            TaskKind::Addition => self.digits + 1,
            TaskKind::Multiplication => 2 * self.digits,
            TaskKind::ModularSum | TaskKind::Permutation => 1,
        }
    }

    /// Full sequence length.
    pub fn seq_len(&self) -> usize {
        self.prompt_len() + self.answer_len()
    }

    /// A one-line description, e.g. ``6-digit addition `a+b=` (answer: 7 digits)``.
    pub fn describe(&self) -> String {
        let (n, a) = (self.digits, self.answer_len());
        match self.kind {
            TaskKind::Addition => format!("{n}-digit addition `a+b=` (answer: {a} digits)"),
            TaskKind::Multiplication => {
                format!("{n}-digit multiplication `a*b=` (answer: {a} digits)")
            }
            TaskKind::ModularSum => {
                format!("sum of {n} digits modulo 10 `d1..d{n}=` (answer: 1 digit)")
            }
            TaskKind::Permutation => {
                format!("product of {n} elements of S3 `g1..g{n}=` (answer: 1 digit)")
            }
        }
    }

    /// The number of distinct problems.
    fn space(&self) -> u64 {
        match self.kind.alphabet() {
            None => {
                let m = 10u64.pow(self.digits as u32);
                m.saturating_mul(m)
            }
            Some(k) => k.saturating_pow(self.digits as u32),
        }
    }

    /// The `index`-th problem of the space (`index < space()`).
    fn nth(&self, index: u64) -> Problem {
        match self.kind.alphabet() {
            None => {
                let m = 10u64.pow(self.digits as u32);
                Problem {
                    a: index / m,
                    b: index % m,
                }
            }
            Some(k) => {
                let (mut rest, mut a, mut scale) = (index, 0u64, 1u64);
                for _ in 0..self.digits {
                    a += (rest % k) * scale;
                    rest /= k;
                    scale *= 10;
                }
                Problem { a, b: 0 }
            }
        }
    }

    /// The answer as a number (the sum, the product, or the one digit).
    fn answer_value(&self, p: &Problem) -> u64 {
        match self.kind {
            TaskKind::Addition => p.a + p.b,
            TaskKind::Multiplication => p.a * p.b,
            TaskKind::ModularSum => {
                let mut digits = Vec::with_capacity(self.digits);
                digits_of(p.a, self.digits, &mut digits);
                digits.iter().map(|&d| u64::from(d)).sum::<u64>() % 10
            }
            TaskKind::Permutation => {
                let mut digits = Vec::with_capacity(self.digits);
                digits_of(p.a, self.digits, &mut digits);
                u64::from(digits.iter().fold(0, |acc, &g| s3_compose(acc, g)))
            }
        }
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
        match self.kind {
            TaskKind::Addition | TaskKind::Multiplication => {
                t.push(if self.kind == TaskKind::Addition {
                    DigitTokenizer::PLUS
                } else {
                    DigitTokenizer::TIMES
                });
                digits_of(p.b, self.digits, t);
            }
            TaskKind::ModularSum | TaskKind::Permutation => {}
        }
        t.push(DigitTokenizer::EQUALS);
    }

    fn push_answer(&self, p: &Problem, t: &mut Vec<u32>) {
        digits_of(self.answer_value(p), self.answer_len(), t);
    }

    /// The answer's token ids (the digits of the answer, zero-padded to
    /// [`answer_len`](Self::answer_len)).
    pub fn answer_tokens(&self, p: &Problem) -> Vec<u32> {
        let mut t = Vec::with_capacity(self.answer_len());
        self.push_answer(p, &mut t);
        t
    }

    /// Whether `p` belongs to the held-out side of the split (one problem in
    /// [`HOLDOUT_MODULUS`], by a hash of `(a, b)`).
    pub fn is_held_out(&self, p: &Problem) -> bool {
        splitmix64(splitmix64(p.a ^ 0x6c32_645f_7370_6c74) ^ p.b).is_multiple_of(HOLDOUT_MODULUS)
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> Problem {
        match self.kind.alphabet() {
            None => {
                let m = 10u64.pow(self.digits as u32);
                Problem {
                    a: rng.random_range(0..m),
                    b: rng.random_range(0..m),
                }
            }
            Some(k) => {
                let a = (0..self.digits).fold(0u64, |a, _| a * 10 + rng.random_range(0..k));
                Problem { a, b: 0 }
            }
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
        let total = self.space();
        // Small tasks: enumerate the held-out side and draw without replacement.
        if total <= 4_000_000 {
            let mut all: Vec<Problem> = (0..total)
                .map(|k| self.nth(k))
                .filter(|p| self.is_held_out(p))
                .collect();
            if all.len() < n {
                return Err(DemoError::invalid(
                    "test_size",
                    format!(
                        "{n} held-out problems requested but {} has only {}",
                        self.describe(),
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
    /// - `inputs`: `[size, seq_len - 1]`; `answers`: `[size, answer_len]`
    pub fn train_batch(&self, size: usize, rng: &mut ChaCha8Rng, device: &Device) -> Batch {
        let problems: Vec<Problem> = (0..size).map(|_| self.sample_train(rng)).collect();
        self.batch(&problems, device)
    }

    /// A finetuning batch of `size` training problems drawn from `rng`, as `l2d train`'s
    /// collated [`l2d_train::data::Batch`] of [`DigitTask::examples`] (padding never occurs:
    /// every sequence has the task's length).
    pub fn finetune_batch(
        &self,
        size: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> l2d_train::data::Batch {
        let problems: Vec<Problem> = (0..size).map(|_| self.sample_train(rng)).collect();
        let examples = self.examples(&problems);
        let refs: Vec<&l2d_train::data::TokenizedExample> = examples.iter().collect();
        l2d_train::data::collate(&refs, 0, device)
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
                self.push_answer(p, &mut row);
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
    /// - `inputs`: `[problems.len(), seq_len - 1]`; `answers`: `[problems.len(), answer_len]`
    pub fn batch(&self, problems: &[Problem], device: &Device) -> Batch {
        let (len, ans) = (self.seq_len() - 1, self.answer_len());
        let mut inputs = Vec::with_capacity(problems.len() * len);
        let mut answers = Vec::with_capacity(problems.len() * ans);
        let mut row = Vec::with_capacity(self.seq_len());
        for p in problems {
            row.clear();
            self.push_prompt(p, &mut row);
            self.push_answer(p, &mut row);
            inputs.extend(row[..len].iter().map(|&t| t as i64));
            answers.extend(row[self.prompt_len()..].iter().map(|&t| t as i64));
        }
        let n = problems.len();
        Batch {
            inputs: Tensor::from_data(TensorData::new(inputs, [n, len]), device),
            answers: Tensor::from_data(TensorData::new(answers, [n, ans]), device),
        }
    }

    /// The prompts of `problems` as a tensor on `device`.
    ///
    /// # Shapes
    /// - output: `[problems.len(), prompt_len]`
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
