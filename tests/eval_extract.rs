//! Answer extraction, task files and sweep settings on hand-made cases.

use std::path::Path;

use l2d::eval::EvalError;
use l2d::eval::extract::{Extraction, first_choice, last_number};
use l2d::eval::setting::Setting;
use l2d::eval::task_file::{load_tasks, parse_tasks};
use l2d_models::generation::{BudgetPolicy, DiffusionMode};
use l2d_solvers::tableau::Method;

#[test]
fn exact_match_compares_trimmed_text() {
    let e = Extraction::ExactMatch;
    assert!(e.is_correct("  Paris\n", "Paris"));
    assert!(e.is_correct("Paris", " Paris "));
    assert!(!e.is_correct("Paris.", "Paris"));
    assert!(!e.is_correct("paris", "Paris"));
    assert_eq!(e.extract(" a b "), Some("a b".into()));
}

#[test]
fn number_takes_the_last_number_with_commas_stripped() {
    let cases: [(&str, Option<&str>); 14] = [
        ("The answer is 42.", Some("42")),
        ("12 + 30 = 42", Some("42")),
        ("1,234 apples and 5,678,901 pears", Some("5678901")),
        ("It costs 3.50 dollars.", Some("3.50")),
        ("Temperature: -7 degrees", Some("-7")),
        ("(-12)", Some("-12")),
        ("12-5=7", Some("7")),
        ("x-3", Some("3")),
        ("1, 2, 3", Some("3")),
        ("version 2.", Some("2")),
        ("no digits here", None),
        ("", None),
        ("#### 1,000\n", Some("1000")),
        ("5,", Some("5")),
    ];
    for (text, expected) in cases {
        assert_eq!(last_number(text).as_deref(), expected, "{text:?}");
    }
    let e = Extraction::Number;
    assert!(e.is_correct("So the total is 1,235.", "1235"));
    assert!(e.is_correct("= 1235", "1,235"));
    assert!(e.is_correct("3.50", "3.5"));
    assert!(e.is_correct("answer: 42.0", "42"));
    assert!(e.is_correct("-7", "-7"));
    assert!(!e.is_correct("7", "-7"));
    assert!(
        !e.is_correct("41 or 42? 41", "42"),
        "the last number counts"
    );
    assert!(!e.is_correct("no idea", "42"));
    assert!(e.check_answer("12,000").is_ok());
    assert!(e.check_answer("twelve").unwrap_err().contains("twelve"));
}

#[test]
fn choice_takes_the_first_letter_in_range_before_a_boundary() {
    // Cases of the authors' regex `([ABCD])(?:[^a-zA-Z0-9]|$)`, worked by hand.
    let cases: [(&str, Option<char>); 11] = [
        ("B", Some('B')),
        ("The answer is (C).", Some('C')),
        ("Answer: D", Some('D')),
        ("A. Paris", Some('A')),
        ("I think B, not C", Some('B')),
        ("ABC D", Some('C')), // `A` and `B` are followed by letters; `C` by a space.
        ("E is wrong; so B", Some('B')), // `E` is out of range for 4 choices.
        ("Both are fine", None), // `B` followed by `o`.
        ("B2 C", Some('C')),  // a digit is not a boundary.
        ("answer: c", None),  // lower case never counts.
        ("Bé", Some('B')),    // a non-ASCII letter is a boundary, as in the regex.
    ];
    for (text, expected) in cases {
        assert_eq!(first_choice(text, 4), expected, "{text:?}");
    }
    assert_eq!(first_choice("E", 5), Some('E'));
    let e = Extraction::Choice { choices: 4 };
    assert!(e.is_correct("The answer is (C).", "C"));
    assert!(!e.is_correct("The answer is (C).", "B"));
    assert!(e.check_answer("D").is_ok());
    assert!(e.check_answer("E").is_err());
    assert!(e.check_answer("AB").is_err());
}

#[test]
fn extraction_modes_parse_and_print() {
    assert_eq!("exact".parse::<Extraction>(), Ok(Extraction::ExactMatch));
    assert_eq!("number".parse::<Extraction>(), Ok(Extraction::Number));
    assert_eq!(
        "choice".parse::<Extraction>(),
        Ok(Extraction::Choice { choices: 4 })
    );
    assert_eq!(
        "choice:10".parse::<Extraction>(),
        Ok(Extraction::Choice { choices: 10 })
    );
    assert!("choice:0".parse::<Extraction>().is_err());
    assert!("choice:27".parse::<Extraction>().is_err());
    assert!("regex".parse::<Extraction>().unwrap_err().contains("regex"));
    for e in [
        Extraction::ExactMatch,
        Extraction::Number,
        Extraction::Choice { choices: 5 },
    ] {
        assert_eq!(e.to_string().parse::<Extraction>(), Ok(e));
    }
}

#[test]
fn task_files_are_read_with_line_numbered_errors() {
    let p = Path::new("tasks.jsonl");
    let items = parse_tasks(
        "{\"prompt\": \"1+1?\", \"answer\": \"2\"}\n\n{\"prompt\": \"2+2?\", \"answer\": 4}\n",
        p,
        Extraction::Number,
    )
    .unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1].answer, "4");

    let err = |text: &str, e: Extraction| match parse_tasks(text, p, e) {
        Err(EvalError::TaskFile { line, reason, path }) => {
            assert_eq!(path, p);
            (line, reason)
        }
        other => panic!("expected a task-file error, got {other:?}"),
    };
    let (line, reason) = err(
        "{\"prompt\": \"a\", \"answer\": \"1\"}\n{\"prompt\": \"b\"}\n",
        Extraction::Number,
    );
    assert_eq!(line, 2);
    assert!(reason.contains("answer"), "{reason}");
    let (line, reason) = err("{\"prompt\": \"a\", \"answer\": \"x\"}", Extraction::Number);
    assert_eq!(line, 1);
    assert!(reason.contains("not a number"), "{reason}");
    let (line, _) = err("not json", Extraction::ExactMatch);
    assert_eq!(line, 1);
    let (_, reason) = err(
        "{\"prompt\": \"a\", \"answer\": \"1\", \"extra\": 1}",
        Extraction::ExactMatch,
    );
    assert!(reason.contains("extra"), "{reason}");
    let (_, reason) = err(
        "{\"prompt\": \"a\", \"answer\": [1]}",
        Extraction::ExactMatch,
    );
    assert!(reason.contains("string or a number"), "{reason}");
    let (_, reason) = err(
        "{\"prompt\": \"a\", \"answer\": \"F\"}",
        Extraction::Choice { choices: 4 },
    );
    assert!(reason.contains("A..=D"), "{reason}");
    let (line, _) = err("\n\n", Extraction::ExactMatch);
    assert_eq!(line, 0);

    match load_tasks(Path::new("/no/such/tasks.jsonl"), Extraction::Number) {
        Err(EvalError::Io { path, .. }) => assert_eq!(path, Path::new("/no/such/tasks.jsonl")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_committed_arithmetic_task_file_is_exact() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eval/arithmetic.jsonl");
    let items = load_tasks(&path, Extraction::Number).unwrap();
    assert_eq!(items.len(), 64);
    // Recompute every answer from the prompt's own numbers.
    for item in &items {
        let nums: Vec<i64> = item
            .prompt
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        let p = &item.prompt;
        let expected = if p.contains(" + ") {
            nums[0] + nums[1]
        } else if p.contains(" - ") {
            nums[0] - nums[1]
        } else if p.contains(" times ") {
            nums[0] * nums[1]
        } else {
            assert!(p.contains("gets") && p.contains("gives away"), "{p}");
            nums[0] + nums[1] - nums[2]
        };
        assert_eq!(item.answer, expected.to_string(), "{p}");
        assert!(expected >= 0);
    }
}

#[test]
fn settings_parse_print_and_reject_bad_input() {
    assert_eq!("base".parse::<Setting>(), Ok(Setting::Base));
    assert_eq!(
        "sde:8".parse::<Setting>(),
        Ok(Setting::Sde {
            steps: 8,
            diffusion: l2d_solvers::Diffusion::Sigma { norm: 1.0 }
        })
    );
    assert_eq!(
        "8".parse::<Setting>(),
        Ok(Setting::Fixed {
            steps: 8,
            solver: Method::Midpoint
        })
    );
    assert_eq!(
        "steps=16:euler".parse::<Setting>(),
        Ok(Setting::Fixed {
            steps: 16,
            solver: Method::Euler
        })
    );
    assert_eq!(
        "4:rk4".parse::<Setting>(),
        Ok(Setting::Fixed {
            steps: 4,
            solver: Method::Rk4ThreeEighths
        })
    );
    assert_eq!(
        "adaptive".parse::<Setting>(),
        Ok(Setting::Adaptive {
            solver: Method::Dopri5,
            rtol: 1e-5,
            atol: 1e-5,
            max_nfe: None,
            fallback: None
        })
    );
    let s: Setting = "adaptive:bosh3:rtol=1e-3:atol=1e-4:max-nfe=64"
        .parse()
        .unwrap();
    assert_eq!(
        s,
        Setting::Adaptive {
            solver: Method::Bosh3,
            rtol: 1e-3,
            atol: 1e-4,
            max_nfe: Some(64),
            fallback: None
        }
    );
    // A budget with a fixed-grid fallback: a token over budget is solved again on the grid.
    let bounded: Setting = "adaptive:bosh3:rtol=1e-3:max-nfe=64:fallback=7"
        .parse()
        .unwrap();
    assert_eq!(
        bounded.mode(),
        DiffusionMode::Adaptive {
            method: Method::Bosh3,
            rtol: 1e-3,
            atol: 1e-5,
            max_nfe: Some(64),
            on_budget: BudgetPolicy::FixedGrid { steps: 7 }
        }
    );
    // A report written before `fallback` existed still reads.
    let old = r#"{"kind":"adaptive","solver":"bosh3","rtol":0.001,"atol":0.001,"max_nfe":null}"#;
    assert_eq!(
        serde_json::from_str::<Setting>(old).unwrap(),
        "adaptive:bosh3:rtol=1e-3:atol=1e-3".parse().unwrap()
    );
    // Text and JSON forms round-trip.
    for s in [
        Setting::Base,
        "12:heun2".parse().unwrap(),
        s,
        bounded,
        "adaptive:tsit5:rtol=0.5".parse().unwrap(),
        "sde:6".parse().unwrap(),
        "sde:steps=3:decreasing=0.25".parse().unwrap(),
    ] {
        assert_eq!(s.to_string().parse::<Setting>(), Ok(s));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Setting>(&json).unwrap(), s);
    }
    for (bad, needle) in [
        ("0", "at least 1"),
        ("steps=x", "unknown setting"),
        ("8:foo", "unknown solver"),
        ("adaptive:midpoint", "no error estimate"),
        ("adaptive:rtol=-1", "rtol"),
        ("adaptive:max-nfe=0", "max-nfe"),
        ("adaptive:fallback=3", "needs a `max-nfe`"),
        ("adaptive:speed=2", "speed"),
        ("base:8", "no options"),
        ("8:euler:extra", "extra"),
        ("sde", "needs its steps"),
        ("sde:4:brownian", "unknown diffusion coefficient"),
    ] {
        let err = bad.parse::<Setting>().unwrap_err();
        assert!(err.contains(needle), "{bad}: {err}");
    }
}
