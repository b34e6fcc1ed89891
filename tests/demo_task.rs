//! The synthetic tasks: exact answers (checked against independent computations), the held-out
//! split, the tokenizer and batches.

use std::collections::HashSet;

use burn::tensor::Device;
use l2d::demo::task::{
    DigitTask, DigitTokenizer, HOLDOUT_MODULUS, Problem, TaskKind, VOCAB_SIZE, s3_compose,
};
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
        let task = DigitTask::addition(digits).unwrap();
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
        }
    }
    // 6 digits: the largest sum needs the seventh digit.
    let task = DigitTask::addition(6).unwrap();
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
        let err = DigitTask::addition(digits).unwrap_err().to_string();
        assert!(err.contains("digits"), "{err}");
    }
}

#[test]
fn operands_are_uniform_over_all_digits() {
    // Leading digits of a uniform 3-digit operand: each of 0..9 about 10% of the time.
    let task = DigitTask::addition(3).unwrap();
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
    let task = DigitTask::addition(2).unwrap();
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
    let task = DigitTask::addition(6).unwrap();
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
    let alphabet = [
        '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '=', '*',
    ];
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
        assert!(ids.iter().all(|&i| (i as usize) <= VOCAB_SIZE));
        assert_eq!(DigitTokenizer::decode(&ids).unwrap(), s);
        assert_eq!(
            DigitTokenizer::encode(&DigitTokenizer::decode(&ids).unwrap()).unwrap(),
            ids
        );
    }
    let err = DigitTokenizer::encode("12+x").unwrap_err().to_string();
    assert!(err.contains("'x'") && err.contains("byte 3"), "{err}");
    let err = DigitTokenizer::decode(&[1, 14]).unwrap_err().to_string();
    assert!(err.contains("id 14") && err.contains("position 1"), "{err}");
}

#[test]
fn batches_hold_the_sequence_shifted_for_next_token_training() {
    let task = DigitTask::addition(4).unwrap();
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

#[test]
fn multiplication_spells_the_exact_products() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for digits in [1, 2, 5, 9] {
        let task = DigitTask::new(TaskKind::Multiplication, digits).unwrap();
        let m = 10u64.pow(digits as u32);
        let mut problems = vec![Problem { a: m - 1, b: m - 1 }, Problem { a: 0, b: 7 % m }];
        problems.extend((0..200).map(|_| task.sample_train(&mut rng)));
        for p in &problems {
            let prompt = format!("<s>{:0w$}*{:0w$}=", p.a, p.b, w = digits);
            let answer = format!("{:0w$}", p.a * p.b, w = 2 * digits);
            assert_eq!(
                DigitTokenizer::decode(&task.prompt_tokens(p)).unwrap(),
                prompt
            );
            assert_eq!(
                DigitTokenizer::decode(&task.answer_tokens(p)).unwrap(),
                answer
            );
            assert!(
                task.prompt_tokens(p)
                    .iter()
                    .all(|&t| (t as usize) < task.vocab_size())
            );
        }
    }
    assert_eq!(TaskKind::Multiplication.vocab_size(), VOCAB_SIZE + 1);
    let err = DigitTask::new(TaskKind::Multiplication, 10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("digits") && err.contains("multiplication"),
        "{err}"
    );
}

#[test]
fn the_modular_sum_is_the_digit_sum_modulo_ten() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for digits in [1, 3, 8, 18] {
        let task = DigitTask::new(TaskKind::ModularSum, digits).unwrap();
        assert_eq!(task.prompt_len(), digits + 2);
        assert_eq!(task.answer_len(), 1);
        for _ in 0..300 {
            let p = task.sample_train(&mut rng);
            assert_eq!(p.b, 0);
            let text = format!("{:0w$}", p.a, w = digits);
            assert_eq!(text.len(), digits);
            let sum: u32 = text.chars().map(|c| c.to_digit(10).unwrap()).sum();
            assert_eq!(
                DigitTokenizer::decode(&task.prompt_tokens(&p)).unwrap(),
                format!("<s>{text}=")
            );
            assert_eq!(task.answer_tokens(&p), vec![sum % 10]);
        }
    }
}

/// `S₃` as permutations of `"abc"` in lexicographic order, composed as functions on
/// positions: independent of the task's table.
fn s3_by_strings(g: u32, h: u32) -> u32 {
    let perms = ["abc", "acb", "bac", "bca", "cab", "cba"];
    let image = |p: &str, x: usize| (p.as_bytes()[x] - b'a') as usize;
    let (g, h) = (perms[g as usize], perms[h as usize]);
    let composed: String = (0..3)
        .map(|x| char::from(b'a' + image(g, image(h, x)) as u8))
        .collect();
    perms.iter().position(|p| *p == composed).unwrap() as u32
}

#[test]
fn s3_is_a_non_commutative_group() {
    for g in 0..6 {
        assert_eq!(s3_compose(0, g), g);
        assert_eq!(s3_compose(g, 0), g);
        assert_eq!(
            (0..6).filter(|&h| s3_compose(g, h) == 0).count(),
            1,
            "inverse of {g}"
        );
        for h in 0..6 {
            assert_eq!(s3_compose(g, h), s3_by_strings(g, h), "{g} o {h}");
            for k in 0..6 {
                assert_eq!(
                    s3_compose(s3_compose(g, h), k),
                    s3_compose(g, s3_compose(h, k))
                );
            }
        }
    }
    let commuting = (0..36).filter(|i| s3_compose(i / 6, i % 6) == s3_compose(i % 6, i / 6));
    assert!(commuting.count() < 36);
    // Three transpositions (order 2), two 3-cycles (order 3).
    let order2 = (1..6).filter(|&g| s3_compose(g, g) == 0).count();
    assert_eq!(order2, 3);
}

#[test]
fn the_permutation_task_composes_its_prompt_in_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    for digits in [1, 4, 10] {
        let task = DigitTask::new(TaskKind::Permutation, digits).unwrap();
        for _ in 0..300 {
            let p = task.sample_train(&mut rng);
            let prompt = task.prompt_tokens(&p);
            let elements = &prompt[1..=digits];
            assert!(elements.iter().all(|&g| g < 6), "{prompt:?}");
            let product = elements.iter().fold(0, |acc, &g| s3_by_strings(acc, g));
            assert_eq!(task.answer_tokens(&p), vec![product]);
        }
    }
    // Every element appears about equally often.
    let task = DigitTask::new(TaskKind::Permutation, 5).unwrap();
    let mut counts = [0usize; 6];
    for _ in 0..6000 {
        for &g in &task.prompt_tokens(&task.sample_train(&mut rng))[1..6] {
            counts[g as usize] += 1;
        }
    }
    assert!(
        counts.iter().all(|&c| (4500..5500).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn one_token_tasks_split_their_whole_space() {
    // 6^4 = 1296 permutation problems: the held-out side is about a tenth, never trained on.
    let task = DigitTask::new(TaskKind::Permutation, 4).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let seen: HashSet<Problem> = (0..100_000).map(|_| task.sample_train(&mut rng)).collect();
    let held = 1296 - seen.len();
    assert!((100..160).contains(&held), "{held} held out");
    let test = task.test_set(held, &mut rng).unwrap();
    assert!(
        test.iter()
            .all(|p| !seen.contains(p) && task.is_held_out(p))
    );
    assert_eq!(test.iter().collect::<HashSet<_>>().len(), held);
    let err = task.test_set(held + 1, &mut rng).unwrap_err().to_string();
    assert!(err.contains("S3") && err.contains("test_size"), "{err}");
}

#[test]
fn task_names_parse_and_print() {
    for kind in TaskKind::ALL {
        assert_eq!(kind.to_string().parse::<TaskKind>().unwrap(), kind);
    }
    let err = "division".parse::<TaskKind>().unwrap_err().to_string();
    assert!(
        err.contains("division") && err.contains("modular-sum"),
        "{err}"
    );
}
