//! Training curves of `l2d train` runs, read from their `metrics.jsonl`, as three SVG plots
//! against the optimizer step: the training loss (window means), the validation loss, and the
//! validation accuracy (a diffusion path's n-step accuracy, a LoRA's teacher-forced one). A
//! step logged twice (a run resumed from an earlier checkpoint) counts once, the later line.
//!
//! ```sh
//! cargo run --release --example training_curves -- \
//!     --run L2D=runs/smollm2-word-problems/metrics.jsonl \
//!     --run LoRA=runs/smollm2-word-problems-lora/metrics.jsonl \
//!     --out docs/real-model-training
//! ```
//!
//! writes `docs/real-model-training-loss.svg`, `docs/real-model-training-validation.svg` and
//! `docs/real-model-training-accuracy.svg`.

use std::path::PathBuf;

use clap::Parser;
use l2d::plot::{LinePlot, Series};

#[derive(Parser)]
#[command(about = "Plot training and validation losses of l2d train runs")]
struct Args {
    /// `LABEL=PATH` of a run's metrics.jsonl (repeat for several runs).
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    /// Output prefix: PREFIX-loss.svg, PREFIX-validation.svg and PREFIX-accuracy.svg.
    #[arg(long)]
    out: PathBuf,
}

/// `(train loss, validation loss, validation accuracy)` points `(step, value)` of one metrics
/// file, one per step (the last line of a step wins), in step order.
type Curves = [Vec<(f64, f64)>; 3];

fn read(path: &str) -> Result<Curves, String> {
    use std::collections::BTreeMap;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let mut curves: [BTreeMap<u64, f64>; 3] = Default::default();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("`{path}` line {}: not JSON: {e}", n + 1))?;
        let Some(step) = v["step"].as_u64() else {
            continue;
        };
        let finite = |x: &serde_json::Value| x.as_f64().filter(|l| l.is_finite());
        let m = &v["metrics"];
        let points = match v["kind"].as_str() {
            Some("train") => [finite(&v["loss"]), None, None],
            Some("validation") => [
                None,
                finite(&m["loss"]),
                finite(&m["nstep_accuracy"]).or_else(|| finite(&m["accuracy"])),
            ],
            _ => [None, None, None],
        };
        for (curve, point) in curves.iter_mut().zip(points) {
            if let Some(y) = point {
                curve.insert(step, y);
            }
        }
    }
    Ok(curves.map(|c| c.into_iter().map(|(s, y)| (s as f64, y)).collect()))
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let mut loss = LinePlot::new("training loss (window means)", "optimizer step", "loss");
    let mut valid = LinePlot::new("validation loss", "optimizer step", "loss");
    let mut accuracy = LinePlot::new(
        "validation accuracy (L2D: n-step solve; LoRA: teacher-forced)",
        "optimizer step",
        "greedy accuracy on the scored tokens",
    )
    .with_y_range(0.0, 1.0);
    for run in &args.runs {
        let (label, path) = run
            .split_once('=')
            .ok_or_else(|| format!("--run {run:?}: expected LABEL=PATH"))?;
        let [train, validation, acc] = read(path)?;
        loss = loss.series(Series::line(label, train));
        valid = valid.series(Series::line(label, validation));
        accuracy = accuracy.series(Series::line(label, acc));
    }
    for (plot, suffix) in [
        (loss, "loss"),
        (valid, "validation"),
        (accuracy, "accuracy"),
    ] {
        let mut name = args.out.clone().into_os_string();
        name.push(format!("-{suffix}.svg"));
        let file = PathBuf::from(name);
        plot.write(&file)
            .map_err(|e| format!("cannot write `{}`: {e}", file.display()))?;
        println!("wrote {}", file.display());
    }
    Ok(())
}
