//! Training curves of `l2d train` runs, read from their `metrics.jsonl`, as two SVG plots:
//! the training loss (window means) and the validation loss against the optimizer step.
//!
//! ```sh
//! cargo run --release --example training_curves -- \
//!     --run L2D=runs/smollm2-word-problems/metrics.jsonl \
//!     --run LoRA=runs/smollm2-word-problems-lora/metrics.jsonl \
//!     --out docs/real-model-training
//! ```
//!
//! writes `docs/real-model-training-loss.svg` and `docs/real-model-training-validation.svg`.

use std::path::PathBuf;

use clap::Parser;
use l2d::plot::{LinePlot, Series};

#[derive(Parser)]
#[command(about = "Plot training and validation losses of l2d train runs")]
struct Args {
    /// `LABEL=PATH` of a run's metrics.jsonl (repeat for several runs).
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    /// Output prefix: PREFIX-loss.svg and PREFIX-validation.svg.
    #[arg(long)]
    out: PathBuf,
}

/// `(train, validation)` points `(step, loss)` of one metrics file.
type Curves = (Vec<(f64, f64)>, Vec<(f64, f64)>);

fn read(path: &str) -> Result<Curves, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("`{path}` line {}: not JSON: {e}", n + 1))?;
        let step = v["step"].as_f64().unwrap_or(f64::NAN);
        match v["kind"].as_str() {
            Some("train") => {
                if let Some(loss) = v["loss"].as_f64().filter(|l| l.is_finite()) {
                    train.push((step, loss));
                }
            }
            Some("validation") => {
                if let Some(loss) = v["metrics"]["loss"].as_f64().filter(|l| l.is_finite()) {
                    valid.push((step, loss));
                }
            }
            _ => {}
        }
    }
    Ok((train, valid))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut loss = LinePlot::new("training loss (window means)", "optimizer step", "loss");
    let mut valid = LinePlot::new("validation loss", "optimizer step", "loss");
    for run in &args.runs {
        let (label, path) = run
            .split_once('=')
            .ok_or_else(|| format!("--run {run:?}: expected LABEL=PATH"))?;
        let (train, validation) = read(path)?;
        loss = loss.series(Series::line(label, train));
        valid = valid.series(Series::line(label, validation));
    }
    for (plot, suffix) in [(loss, "loss"), (valid, "validation")] {
        let mut name = args.out.clone().into_os_string();
        name.push(format!("-{suffix}.svg"));
        let file = PathBuf::from(name);
        plot.write(&file)
            .map_err(|e| format!("cannot write `{}`: {e}", file.display()))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}
