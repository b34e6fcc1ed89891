//! Greedy decoding of the answers and exact match over all answer digits.

use std::time::Instant;

use burn::tensor::{Int, Tensor};
use l2d_models::decoder::{CausalLm, KvCache};
use serde::{Deserialize, Serialize};

use super::task::{DigitTask, Problem};

/// Exact-match accuracy of one method on a set of problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Problems whose every answer digit was right.
    pub correct: usize,
    /// Problems evaluated.
    pub total: usize,
    /// `correct / total`.
    pub accuracy: f64,
    /// Wall time of the whole evaluation, in seconds.
    pub seconds: f64,
    /// `seconds / total`.
    pub seconds_per_answer: f64,
}

impl EvalResult {
    /// Scores `predicted[i]` (answer tokens) against `problems[i]`; `seconds` is the time it
    /// took to produce them.
    pub fn score(
        task: &DigitTask,
        problems: &[Problem],
        predicted: &[Vec<u32>],
        seconds: f64,
    ) -> Self {
        let correct = problems
            .iter()
            .zip(predicted)
            .filter(|(p, got)| task.answer_tokens(p) == **got)
            .count();
        let total = problems.len();
        Self {
            correct,
            total,
            accuracy: if total == 0 {
                0.0
            } else {
                correct as f64 / total as f64
            },
            seconds,
            seconds_per_answer: if total == 0 {
                0.0
            } else {
                seconds / total as f64
            },
        }
    }
}

/// Greedy (argmax) answers of `model` to `problems`, `batch_size` problems at a time, with a
/// KV cache: one pass over the prompts, then one position per answer digit.
///
/// Returns `N + 1` token ids per problem (the model may emit non-digits; they count as wrong).
pub fn greedy_answers(
    model: &CausalLm,
    task: &DigitTask,
    problems: &[Problem],
    batch_size: usize,
) -> Vec<Vec<u32>> {
    let device = model.device();
    let len = task.answer_len();
    let mut out = Vec::with_capacity(problems.len());
    for chunk in problems.chunks(batch_size.max(1)) {
        let n = chunk.len();
        let mut cache = KvCache::new();
        let mut logits = model.forward(task.prompts(chunk, &device), Some(&mut cache));
        let mut columns: Vec<Tensor<2, Int>> = Vec::with_capacity(len);
        for i in 0..len {
            let seq = logits.dims()[1];
            let next = logits.narrow(1, seq - 1, 1).argmax(2).reshape([n, 1]);
            columns.push(next.clone());
            if i + 1 == len {
                break;
            }
            logits = model.forward(next, Some(&mut cache));
        }
        let ids: Vec<i64> = Tensor::cat(columns, 1).into_data().iter::<i64>().collect();
        out.extend(
            ids.chunks(len)
                .map(|row| row.iter().map(|&t| t as u32).collect::<Vec<_>>()),
        );
    }
    out
}

/// Greedy exact match of `model` on `problems`, timed.
pub fn greedy_exact_match(
    model: &CausalLm,
    task: &DigitTask,
    problems: &[Problem],
    batch_size: usize,
) -> EvalResult {
    let start = Instant::now();
    let answers = greedy_answers(model, task, problems, batch_size);
    EvalResult::score(task, problems, &answers, start.elapsed().as_secs_f64())
}
