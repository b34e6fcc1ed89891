//! The test-time scaling curve of a demo run: exact match against the solver's steps (and NFE
//! per answer token) for one x1 estimate, beside the frozen base, the LoRA baselines and the
//! adaptive solver. `examples/test_time_scaling.rs` prints it and writes it as JSON.

use serde::{Deserialize, Serialize};

use super::pipeline::{QuickstartReport, RowKind};
use super::task::DigitTask;

/// The x1 estimate of the curve: the shipped default, `sample` at temperature 0.
pub const CURVE_ESTIMATE: &str = "sample T=0";

/// One point of the curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Euler grid intervals (`None` for the adaptive solver).
    pub steps: Option<usize>,
    /// Exact match over the answer.
    pub accuracy: f64,
    /// Mean NFE per answer token (the paper's count: steps + 1 on a fixed grid).
    pub nfe: f64,
}

/// A baseline drawn as a horizontal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// The row's name.
    pub name: String,
    /// Exact match.
    pub accuracy: f64,
}

/// Accuracy against test-time compute of one trained diffusion path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingCurve {
    /// The task, as [`DigitTask::describe`] writes it.
    pub task: String,
    /// The frozen base's layers.
    pub layers: usize,
    /// The frozen base, then the LoRA baselines.
    pub baselines: Vec<Baseline>,
    /// The Euler rows of [`CURVE_ESTIMATE`], by steps.
    pub curve: Vec<CurvePoint>,
    /// The adaptive solver's row, when the run had one.
    pub adaptive: Option<CurvePoint>,
    /// The adaptive row's method and tolerance, as the table names it.
    pub adaptive_method: Option<String>,
}

impl ScalingCurve {
    /// The curve of `report`.
    ///
    /// ```
    /// use l2d::demo::pipeline::QuickstartReport;
    /// use l2d::demo::scaling::ScalingCurve;
    ///
    /// let report: QuickstartReport =
    ///     serde_json::from_str(include_str!("../../docs/quickstart.json"))?;
    /// let curve = ScalingCurve::from_report(&report);
    /// assert_eq!(curve.curve.len(), report.config.euler_steps.len());
    /// assert!(curve.curve.iter().all(|p| p.nfe == p.steps.unwrap() as f64 + 1.0));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn from_report(report: &QuickstartReport) -> Self {
        let config = &report.config;
        let task = DigitTask::new(config.task, config.digits)
            .map_or_else(|e| e.to_string(), |t| t.describe());
        let baselines = report
            .rows
            .iter()
            .filter(|r| matches!(r.kind, RowKind::Base | RowKind::Lora))
            .map(|r| Baseline {
                name: r.method.clone(),
                accuracy: r.accuracy,
            })
            .collect();
        let mut curve: Vec<CurvePoint> = report
            .rows
            .iter()
            .filter(|r| {
                r.kind == RowKind::L2dFixed && r.x1_estimate.as_deref() == Some(CURVE_ESTIMATE)
            })
            .map(|r| CurvePoint {
                steps: r.steps,
                accuracy: r.accuracy,
                nfe: r.nfe_per_token,
            })
            .collect();
        curve.sort_by_key(|p| p.steps);
        let adaptive_row = report.rows.iter().find(|r| r.kind == RowKind::L2dAdaptive);
        Self {
            task,
            layers: config.base.model.layers,
            baselines,
            curve,
            adaptive: adaptive_row.map(|r| CurvePoint {
                steps: None,
                accuracy: r.accuracy,
                nfe: r.nfe_per_token,
            }),
            adaptive_method: adaptive_row.map(|r| r.method.clone()),
        }
    }

    /// Exact match at `steps` Euler steps, if the curve has that point.
    pub fn at(&self, steps: usize) -> Option<f64> {
        self.curve
            .iter()
            .find(|p| p.steps == Some(steps))
            .map(|p| p.accuracy)
    }

    /// Exact match at 16 steps minus exact match at 2 (the issue's test of "more steps
    /// pay"), if the curve has both points.
    pub fn gain_2_to_16(&self) -> Option<f64> {
        Some(self.at(16)? - self.at(2)?)
    }

    /// The curve as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from("| row | steps | NFE / token | exact match |\n");
        s.push_str("| --- | ---: | ---: | ---: |\n");
        for b in &self.baselines {
            s.push_str(&format!("| {} | - | - | {:.3} |\n", b.name, b.accuracy));
        }
        for p in &self.curve {
            let steps = p.steps.map_or_else(|| "-".into(), |k| k.to_string());
            s.push_str(&format!(
                "| L2D Euler ({CURVE_ESTIMATE}) | {steps} | {:.0} | {:.3} |\n",
                p.nfe, p.accuracy
            ));
        }
        if let (Some(p), Some(name)) = (&self.adaptive, &self.adaptive_method) {
            s.push_str(&format!(
                "| {name} | - | {:.2} | {:.3} |\n",
                p.nfe, p.accuracy
            ));
        }
        s
    }
}
