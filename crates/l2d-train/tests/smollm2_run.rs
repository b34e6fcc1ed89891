//! The short SmolLM2-135M-Instruct run of docs/training.md (about 10 minutes on 2 CPU cores,
//! so not part of the default test run):
//!
//! ```text
//! scripts/fetch-smollm2.sh
//! cargo test --release -p l2d-train --test smollm2_run -- --ignored --nocapture
//! ```
//!
//! Trains the released diffusion-path configuration for 40 steps on
//! `fixtures/train/arithmetic.jsonl` and checks that the validation loss falls below the base
//! model's and that n-step accuracy does not fall below the base model's greedy accuracy.

use std::path::Path;

use l2d_train::{RunOptions, TrainConfig, train};

#[path = "../../../tests/support/smollm2.rs"]
mod smollm2;

#[test]
#[ignore = "about 10 minutes on 2 CPU cores; run with --ignored"]
fn smollm2_validation_loss_falls() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::set_current_dir(&root).unwrap();
    let mut config = TrainConfig::from_file("fixtures/train/smollm2-arithmetic.toml").unwrap();
    config.model.path = smollm2::smollm2_gguf().display().to_string();
    config.output.dir = std::env::temp_dir().join(format!("l2d-smollm2-{}", std::process::id()));
    let summary = train(&config, &RunOptions::default()).unwrap();
    let first = &summary.validations.first().unwrap().1;
    let last = &summary.validations.last().unwrap().1;
    println!("validation loss {} -> {}", first.loss, last.loss);
    println!(
        "n-step accuracy {:?} (base {:?})",
        last.nstep_accuracy, last.base_accuracy
    );
    assert!(last.loss < 0.8 * first.loss);
    assert!(last.nstep_accuracy.unwrap() >= last.base_accuracy.unwrap());
    std::fs::remove_dir_all(&config.output.dir).ok();
}
