//! Bad training input never crashes: 2,000 seeded mutations each of a training configuration
//! (TOML values) and of chat data (JSONL records), read, validated and encoded the way
//! `l2d train` does before it trains. Every one must end in `Ok` or a typed error: no panic,
//! no single allocation above 1 GiB, and no case slower than 5 s (the harness of
//! `l2d-models/tests/mutation.rs`).

use std::path::{Path, PathBuf};

use l2d_models::pretrained::{LoadOptions, Pretrained};
use l2d_train::TrainConfig;
use l2d_train::data::encode::{ExampleEncoder, Layout};
use l2d_train::data::read_chat_file;
use l2d_train::trainer::total_steps;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "../../l2d-models/tests/support/mutation.rs"]
mod harness;

use harness::{Bounded, run_cases};

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// TOML values no field expects.
const ODD_TOML: [&str; 16] = [
    "0",
    "-1",
    "1",
    "18446744073709551615",
    "9223372036854775807",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "0.0",
    "\"x\"",
    "\"\"",
    "[]",
    "[1, 2]",
    "{}",
    "true",
];

#[test]
fn mutated_training_configurations_are_accepted_or_refused_cleanly() {
    // The fixture with its data path made absolute (tests run in the crate's folder).
    let good = std::fs::read_to_string(root().join("fixtures/train/smollm2-arithmetic.toml"))
        .unwrap()
        .replace(
            "\"fixtures/train/arithmetic.jsonl\"",
            &format!("{:?}", root().join("fixtures/train/arithmetic.jsonl")),
        );
    let parsed = TrainConfig::from_toml_str(&good, Path::new("good.toml")).unwrap();
    parsed.validate().unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let assignments: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(" = ") && !lines[i].starts_with('#'))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x746f_6d6c);
    run_cases("training configuration", |_| {
        let mut lines = lines.clone();
        let mut owned = Vec::new();
        for _ in 0..rng.random_range(1..3) {
            let i = assignments[rng.random_range(0..assignments.len())];
            let key = lines[i].split(" = ").next().unwrap_or_default();
            owned.push((
                i,
                format!("{key} = {}", ODD_TOML[rng.random_range(0..ODD_TOML.len())]),
            ));
        }
        for (i, line) in &owned {
            lines[*i] = line;
        }
        let text = lines.join("\n");
        let config = TrainConfig::from_toml_str(&text, Path::new("mutated.toml"))
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        config.l2d_config().map_err(|e| e.to_string())?;
        let total = total_steps(&config, 1000);
        let schedule = config.schedule_shape(total);
        for step in [0, 1, total / 2, total.saturating_sub(1), total] {
            let lr = schedule.lr(step);
            if !lr.is_finite() {
                return Err(format!("lr {lr} at step {step}"));
            }
        }
        Ok(())
    });
}

#[test]
fn mutated_chat_data_is_encoded_or_refused_cleanly() {
    let lm = Pretrained::open(
        root()
            .join("fixtures/gguf/tiny-llama.gguf")
            .to_str()
            .unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let template = lm.chat_template.clone().unwrap();
    let good = std::fs::read_to_string(root().join("fixtures/train/conversations.jsonl")).unwrap();
    let odd_json = [
        "null",
        "0",
        "-1",
        "\"\"",
        "[]",
        "{}",
        "true",
        "1e400",
        "\"\\ud800\"",
        "[[[]]]",
        "{\"role\": 5}",
        "\"x\"",
    ];
    let dir = std::env::temp_dir().join(format!("l2d-train-mutation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("data.jsonl");
    let mut rng = ChaCha8Rng::seed_from_u64(0x6a73_6f6e);
    run_cases("chat data", |i| {
        let mut text = good.clone().into_bytes();
        if i % 2 == 0 {
            // Byte flips anywhere.
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..text.len());
                text[at] = rng.random();
            }
        } else {
            // A JSON value replaced by an odd one.
            let s = String::from_utf8_lossy(&text).into_owned();
            let spots: Vec<usize> = s.match_indices(": ").map(|(k, _)| k + 2).collect();
            let at = spots[rng.random_range(0..spots.len())];
            let end = s[at..]
                .find([',', '}', ']'])
                .map_or(s.len(), |e| at + e.max(1));
            let value = odd_json[rng.random_range(0..odd_json.len())];
            text = format!("{}{value}{}", &s[..at], &s[end..]).into_bytes();
        }
        std::fs::write(&file, &text).unwrap();
        let conversations = read_chat_file(&file).map_err(|e| e.to_string())?;
        let encoder = ExampleEncoder::new(&lm.tokenizer, &template, 256, Layout::default());
        encoder
            .encode_all(&conversations)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    std::fs::remove_dir_all(&dir).ok();
}
