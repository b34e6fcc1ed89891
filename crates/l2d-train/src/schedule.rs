//! The learning-rate schedule: a warmup from the minimum to the peak rate, then a decay back
//! to the minimum at the last step.
//!
//! With `warmup = "log"` and `decay = "linear"` this is DeepSpeed's `WarmupDecayLR`, the
//! reference's scheduler (`scheduler_type = warmup_decay`, peak 1e-4, minimum 1e-6, 100
//! warmup steps): `lr = min + (peak - min)·γ` with `γ = ln(step + 1)/ln(warmup)` during the
//! warmup and `γ = (total - step)/(total - warmup)` after it.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The shape of the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Warmup {
    /// `γ = step / warmup`.
    #[default]
    Linear,
    /// `γ = ln(step + 1) / ln(warmup)` (DeepSpeed's default `warmup_type = "log"`).
    Log,
}

/// The shape of the decay after the warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// `γ = 1 - p` with `p` the fraction of post-warmup steps done.
    #[default]
    Linear,
    /// `γ = (1 + cos(π p)) / 2`.
    Cosine,
    /// `γ = 1`: the peak rate until the end.
    Constant,
}

/// A learning-rate schedule over a run of `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The rate at the end of the warmup.
    pub peak_lr: f64,
    /// The rate at step 0 and at the last step.
    pub min_lr: f64,
    /// Warmup steps.
    pub warmup_steps: usize,
    /// Warmup shape.
    pub warmup: Warmup,
    /// Decay shape.
    pub decay: Decay,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
}

impl LrSchedule {
    /// Checks the rates.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming `optim.peak_lr` / `optim.min_lr` for a negative,
    /// non-finite or inverted pair.
    pub fn validate(&self) -> Result<()> {
        if !(self.peak_lr.is_finite() && self.peak_lr > 0.0) {
            return Err(TrainError::config(
                "optim.peak_lr",
                format!("must be finite and positive, got {}", self.peak_lr),
            ));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.peak_lr) {
            return Err(TrainError::config(
                "optim.min_lr",
                format!(
                    "must be in [0, peak_lr = {}], got {}",
                    self.peak_lr, self.min_lr
                ),
            ));
        }
        Ok(())
    }

    /// The rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        let w = self.warmup_steps;
        let gamma = if step < w {
            match self.warmup {
                Warmup::Linear => step as f64 / w as f64,
                Warmup::Log if w > 1 => ((step + 1) as f64).ln() / (w as f64).ln(),
                Warmup::Log => 1.0,
            }
        } else {
            let span = self.total_steps.saturating_sub(w).max(1) as f64;
            let p = ((step - w) as f64 / span).clamp(0.0, 1.0);
            match self.decay {
                Decay::Linear => 1.0 - p,
                Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
                Decay::Constant => 1.0,
            }
        };
        self.min_lr + (self.peak_lr - self.min_lr) * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(warmup: Warmup, decay: Decay) -> LrSchedule {
        LrSchedule {
            peak_lr: 1e-4,
            min_lr: 1e-6,
            warmup_steps: 100,
            warmup,
            decay,
            total_steps: 1000,
        }
    }

    #[test]
    fn deepspeed_warmup_decay_values() {
        // DeepSpeed WarmupDecayLR(warmup_min_lr=1e-6, warmup_max_lr=1e-4, warmup_num_steps=100,
        // total_num_steps=1000), by its formulas.
        let s = schedule(Warmup::Log, Decay::Linear);
        let delta = 1e-4 - 1e-6;
        assert_eq!(s.lr(0), 1e-6);
        let at9 = 1e-6 + delta * (10f64).ln() / (100f64).ln();
        assert!((s.lr(9) - at9).abs() < 1e-18);
        assert!((s.lr(100) - 1e-4).abs() < 1e-18);
        let at550 = 1e-6 + delta * (1000.0 - 550.0) / 900.0;
        assert!((s.lr(550) - at550).abs() < 1e-18);
        assert!((s.lr(1000) - 1e-6).abs() < 1e-18);
        assert!((s.lr(5000) - 1e-6).abs() < 1e-18);
    }

    #[test]
    fn linear_warmup_cosine_decay() {
        let s = schedule(Warmup::Linear, Decay::Cosine);
        assert_eq!(s.lr(0), 1e-6);
        assert!((s.lr(50) - (1e-6 + 0.5 * (1e-4 - 1e-6))).abs() < 1e-18);
        assert!((s.lr(100) - 1e-4).abs() < 1e-18);
        assert!((s.lr(550) - (1e-6 + 0.5 * (1e-4 - 1e-6))).abs() < 1e-15);
        assert!((s.lr(1000) - 1e-6).abs() < 1e-18);
        let mut prev = f64::INFINITY;
        for step in 100..=1000 {
            assert!(s.lr(step) <= prev);
            prev = s.lr(step);
        }
        let c = schedule(Warmup::Linear, Decay::Constant);
        assert_eq!(c.lr(999), 1e-4);
    }

    #[test]
    fn invalid_rates_are_rejected() {
        let mut s = schedule(Warmup::Linear, Decay::Linear);
        s.min_lr = 1.0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("optim.min_lr")
        );
        s.peak_lr = f64::NAN;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("optim.peak_lr")
        );
    }
}
