//! The JSON report of a sweep and its plot.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::setting::Setting;
use crate::plot::{LinePlot, Series};

/// One task item's result under one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Index in the task file (0-based, blank lines not counted).
    pub index: usize,
    /// The generated text.
    pub output: String,
    /// The extracted answer, if any.
    pub extracted: Option<String>,
    /// The expected answer.
    pub expected: String,
    /// Whether it was judged right.
    pub correct: bool,
    /// Tokens generated.
    pub tokens: usize,
}

/// The result of one setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingResult {
    /// The setting.
    pub setting: Setting,
    /// Its text form (`base`, `steps=8:midpoint`, ...).
    pub label: String,
    /// Items answered right.
    pub correct: usize,
    /// Items evaluated.
    pub total: usize,
    /// `correct / total`.
    pub accuracy: f64,
    /// Mean function evaluations of the diffusion path per generated token (0 for `base`,
    /// whose cost is one frozen forward per token).
    pub mean_nfe_per_token: f64,
    /// Tokens generated in all.
    pub generated_tokens: usize,
    /// Wall time of the setting divided by the number of items, in seconds.
    pub seconds_per_answer: f64,
    /// Generated tokens per second of wall time.
    pub tokens_per_second: f64,
    /// Every item's output and verdict.
    pub items: Vec<ItemResult>,
}

/// A sweep's report (`l2d eval` writes it as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The model as given (folder, cache name or GGUF file).
    pub model: String,
    /// The diffusion adapter, if any.
    pub adapter: Option<String>,
    /// The LoRA adapter of the `lora` setting, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<String>,
    /// The task file.
    pub tasks: String,
    /// Items evaluated.
    pub num_items: usize,
    /// The extraction mode (`exact`, `number`, `choice:4`).
    pub extraction: String,
    /// Whether prompts went through the model's chat template.
    pub chat_template: bool,
    /// The system prompt given to the template, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Extra stop strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stops: Vec<String>,
    /// Generation budget per answer.
    pub max_new_tokens: usize,
    /// Seed of the diffusion noise and of sampling.
    pub seed: u64,
    /// The device (`flex` = CPU).
    pub device: String,
    /// The weights' dtype.
    pub dtype: String,
    /// `git rev-parse HEAD` of the working directory, when available.
    pub git_commit: Option<String>,
    /// Seconds since the Unix epoch when the report was made.
    pub created_unix: u64,
    /// One result per setting, in the order given.
    pub settings: Vec<SettingResult>,
}

impl EvalReport {
    /// Writes the report as pretty JSON to `path` (creating parent folders).
    ///
    /// # Errors
    /// [`EvalError::Io`] naming the file.
    pub fn write_json(&self, path: &Path) -> Result<(), EvalError> {
        let io = |source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = serde_json::to_string_pretty(self).expect("a report always serialises");
        l2d_models::weights::write_atomically(path, (text + "\n").as_bytes()).map_err(io)
    }

    /// Reads a report written by [`EvalReport::write_json`].
    ///
    /// # Errors
    /// [`EvalError::Io`]; [`EvalError::Report`] for malformed JSON.
    pub fn read_json(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| EvalError::Report {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A steps-vs-accuracy plot: accuracy against mean NFE per token; the base setting as a
    /// horizontal line, each fixed-grid solver and each SDE coefficient as a line, adaptive
    /// settings as points.
    pub fn plot(&self) -> LinePlot {
        let mut plot = LinePlot::new(
            format!("{} on {}", short(&self.model), short(&self.tasks)),
            "diffusion NFE per token",
            format!("accuracy ({})", self.extraction),
        )
        .with_y_range(0.0, 1.0);
        let fixed: Vec<&SettingResult> = self
            .settings
            .iter()
            .filter(|r| matches!(r.setting, Setting::Fixed { .. }))
            .collect();
        let positive_x = self
            .settings
            .iter()
            .filter(|r| r.setting.is_diffusion())
            .all(|r| r.mean_nfe_per_token > 0.0);
        let any_diffusion = self.settings.iter().any(|r| r.setting.is_diffusion());
        if any_diffusion && positive_x {
            plot = plot.with_log2_x(true);
        }
        for r in self
            .settings
            .iter()
            .filter(|r| matches!(r.setting, Setting::Base | Setting::Lora))
        {
            plot = plot.series(Series::horizontal(
                format!("{} ({:.3})", r.setting, r.accuracy),
                r.accuracy,
            ));
        }
        let mut solvers: Vec<String> = Vec::new();
        for r in &fixed {
            let name = r
                .setting
                .solver()
                .map(|m| m.name().to_string())
                .unwrap_or_default();
            if !solvers.contains(&name) {
                solvers.push(name);
            }
        }
        for name in solvers {
            let mut pts: Vec<(f64, f64)> = fixed
                .iter()
                .filter(|r| r.setting.solver().map(|m| m.name()) == Some(name.as_str()))
                .map(|r| (r.mean_nfe_per_token, r.accuracy))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            plot = plot.series(Series::line(format!("L2D {name}"), pts));
        }
        let mut sde: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &self.settings {
            if let Setting::Sde { diffusion, .. } = r.setting {
                let name = format!("L2D sde {diffusion}");
                let point = (r.mean_nfe_per_token, r.accuracy);
                match sde.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, pts)) => pts.push(point),
                    None => sde.push((name, vec![point])),
                }
            }
        }
        for (name, mut pts) in sde {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            plot = plot.series(Series::line(name, pts));
        }
        for r in self
            .settings
            .iter()
            .filter(|r| matches!(r.setting, Setting::Adaptive { .. }))
        {
            plot = plot.series(Series::points(
                r.label.clone(),
                vec![(r.mean_nfe_per_token, r.accuracy)],
            ));
        }
        if !any_diffusion {
            plot = plot.with_x_range(0.0, 1.0);
        }
        plot
    }

    /// A Markdown table of the settings.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| setting | accuracy | correct | NFE / token | time / answer | tokens / s |\n\
             |---|---|---|---|---|---|\n",
        );
        for r in &self.settings {
            s.push_str(&format!(
                "| {} | {:.3} | {}/{} | {:.2} | {:.3} s | {:.1} |\n",
                r.label,
                r.accuracy,
                r.correct,
                r.total,
                r.mean_nfe_per_token,
                r.seconds_per_answer,
                r.tokens_per_second
            ));
        }
        s
    }
}

fn short(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}
