//! The synthetic addition task: exact answers, the held-out split, the tokenizer and batches.

use std::collections::HashSet;

use burn::tensor::Device;
use l2d::demo::task::{AdditionTask, DigitTokenizer, HOLDOUT_MODULUS, Problem, VOCAB_SIZE};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The problem as text, built with `format!` only (independent of the task's code).
fn reference_text(p: &Problem, digits: usize) -> (String, String) {
    (
        format!("<s>{:0w$}+{:0w$}=", p.a, p.b, w = digits),
        format!("{:0w$}", p.a + p.b, w = digits + 1),
    )
}

#[test]
fn prompts_and_answers_spell_the_exact_sums() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for digits in [1, 2, 3, 6, 9, 18] {
        let task = AdditionTask::new(digits).unwrap();
        let m = 10u64.pow(digits as u32);
        let mut problems = vec![
            Problem { a: 0, b: 0 },
            Problem { a: m - 1, b: m - 1 },
            Problem { a: m - 1, b: 1 },
        ];
        problems.extend((0..200).map(|_| task.sample_train(&mut rng)));
        for p in &problems {
            assert!(p.a < m && p.b < m);
            let (prompt, answer) = reference_text(p, digits);
            let got_prompt = DigitTokenizer::decode(&task.prompt_tokens(p)).unwrap();
            let got_answer = DigitTokenizer::decode(&task.answer_tokens(p)).unwrap();
            assert_eq!(got_prompt, prompt);
            assert_eq!(got_answer, answer);
            assert_eq!(task.prompt_tokens(p).len(), task.prompt_len());
            assert_eq!(task.answer_tokens(p).len(), task.answer_len());
            assert_eq!(task.parse_answer(&task.answer_tokens(p)), Some(p.a + p.b));
        }
    }
    // 6 digits: the largest sum needs the seventh digit.
    let task = AdditionTask::new(6).unwrap();
    let p = Problem {
        a: 999_999,
        b: 999_999,
    };
    assert_eq!(task.answer_tokens(&p), vec![1, 9, 9, 9, 9, 9, 8]);
    assert_eq!(task.seq_len(), 22);
}

#[test]
fn bad_digit_counts_are_typed_errors() {
    for digits in [0, 19, 100] {
        let err = AdditionTask::new(digits).unwrap_err().to_string();
        assert!(err.contains("digits"), "{err}");
    }
}

#[test]
fn operands_are_uniform_over_all_digits() {
    // Leading digits of a uniform 3-digit operand: each of 0..9 about 10% of the time.
    let task = AdditionTask::new(3).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut counts = [0usize; 10];
    let n = 20_000;
    for _ in 0..n {
        counts[(task.sample_train(&mut rng).a / 100) as usize] += 1;
    }
    for (d, &c) in counts.iter().enumerate() {
        let f = c as f64 / n as f64;
        assert!((0.085..0.115).contains(&f), "leading digit {d}: {f}");
    }
}

#[test]
fn held_out_problems_never_appear_in_training() {
    // 2 digits: 10^4 pairs, so the training stream covers every training pair many times.
    let task = AdditionTask::new(2).unwrap();
    let all: Vec<Problem> = (0..100)
        .flat_map(|a| (0..100).map(move |b| Problem { a, b }))
        .collect();
    let held: HashSet<Problem> = all
        .iter()
        .copied()
        .filter(|p| task.is_held_out(p))
        .collect();
    let frac = held.len() as f64 / all.len() as f64;
    let expected = 1.0 / HOLDOUT_MODULUS as f64;
    assert!((frac - expected).abs() < 0.02, "held-out fraction {frac}");

    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let seen: HashSet<Problem> = (0..200_000).map(|_| task.sample_train(&mut rng)).collect();
    assert!(seen.is_disjoint(&held));
    // And training covers the rest: the split does not starve training of problems.
    assert_eq!(seen.len(), all.len() - held.len());

    let test = task
        .test_set(held.len(), &mut ChaCha8Rng::seed_from_u64(9))
        .unwrap();
    let distinct: HashSet<Problem> = test.iter().copied().collect();
    assert_eq!(distinct, held, "the whole held-out side, each once");
    let err = task
        .test_set(held.len() + 1, &mut ChaCha8Rng::seed_from_u64(9))
        .unwrap_err()
        .to_string();
    assert!(err.contains("test_size"), "{err}");
}

#[test]
fn large_test_sets_are_distinct_held_out_and_seeded() {
    let task = AdditionTask::new(6).unwrap();
    let a = task
        .test_set(1000, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let b = task
        .test_set(1000, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();
    let c = task
        .test_set(1000, &mut ChaCha8Rng::seed_from_u64(2))
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|p| task.is_held_out(p)));
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 1000);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for _ in 0..20_000 {
        assert!(!task.is_held_out(&task.sample_train(&mut rng)));
    }
}

#[test]
fn tokenizer_round_trips() {
    let alphabet = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '='];
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..200 {
        let len = rng.random_range(0..30);
        let mut s = String::new();
        for _ in 0..len {
            if rng.random_range(0..8) == 0 {
                s.push_str("<s>");
            } else {
                s.push(alphabet[rng.random_range(0..alphabet.len())]);
            }
        }
        let ids = DigitTokenizer::encode(&s).unwrap();
        assert!(ids.iter().all(|&i| (i as usize) < VOCAB_SIZE));
        assert_eq!(DigitTokenizer::decode(&ids).unwrap(), s);
        assert_eq!(
            DigitTokenizer::encode(&DigitTokenizer::decode(&ids).unwrap()).unwrap(),
            ids
        );
    }
    let err = DigitTokenizer::encode("12+x").unwrap_err().to_string();
    assert!(err.contains("'x'") && err.contains("byte 3"), "{err}");
    let err = DigitTokenizer::decode(&[1, 13]).unwrap_err().to_string();
    assert!(err.contains("id 13") && err.contains("position 1"), "{err}");
}

#[test]
fn batches_hold_the_sequence_shifted_for_next_token_training() {
    let task = AdditionTask::new(4).unwrap();
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let problems: Vec<Problem> = (0..5).map(|_| task.sample_train(&mut rng)).collect();
    let batch = task.batch(&problems, &device);
    assert_eq!(batch.inputs.dims(), [5, task.seq_len() - 1]);
    assert_eq!(batch.answers.dims(), [5, task.answer_len()]);
    let inputs: Vec<i64> = batch.inputs.into_data().iter::<i64>().collect();
    let answers: Vec<i64> = batch.answers.into_data().iter::<i64>().collect();
    for (i, p) in problems.iter().enumerate() {
        let (prompt, answer) = reference_text(p, 4);
        let full = DigitTokenizer::encode(&(prompt + &answer)).unwrap();
        let row: Vec<u32> = inputs[i * 15..(i + 1) * 15]
            .iter()
            .map(|&t| t as u32)
            .collect();
        assert_eq!(row, full[..15]);
        let ans: Vec<u32> = answers[i * 5..(i + 1) * 5]
            .iter()
            .map(|&t| t as u32)
            .collect();
        // The last N + 1 input positions predict the answer digits.
        assert_eq!(ans, full[11..]);
    }
    let prompts = task.prompts(&problems, &device);
    assert_eq!(prompts.dims(), [5, task.prompt_len()]);
    let ids: Vec<i64> = prompts.into_data().iter::<i64>().collect();
    assert_eq!(
        ids[..task.prompt_len()]
            .iter()
            .map(|&t| t as u32)
            .collect::<Vec<_>>(),
        task.prompt_tokens(&problems[0])
    );
}
