//! The paper's baseline: the frozen base finetuned with plain LoRA (rank `R`, alpha `R`) on
//! the q/o/gate/up/down projections, with `R` chosen for a trainable-parameter count close to
//! the diffusion path's, and the same optimizer, data and steps as the diffusion path.
//!
//! Unlike L2D, the adapters here change the base path itself: that is what the baseline is.
//! The adapter is `l2d train --method lora`'s ([`DecoderLora`]), trained by the same
//! `l2d-train` `Stepper` as the diffusion path; `A` is drawn as the authors' `LoRA` module draws the
//! diffusion path's ([`LoraInit::Gaussian`], `N(0, 1)/R`), so the baseline differs from L2D
//! only in where its adapters sit, or as PEFT draws it by default
//! ([`LoraInit::KaimingUniform`]).

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use l2d_core::HostRng;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, Projection};
use l2d_models::lora::{DecoderLora, LoraInit};
use serde::{Deserialize, Serialize};

use super::DemoError;
use super::diffusion::ToyDiffusionPath;
use super::task::{DigitTask, finetune_data_rng};

/// The projections L2D adapts, and so does the baseline.
pub const LORA_TARGETS: [Projection; 5] = [
    Projection::Q,
    Projection::O,
    Projection::Gate,
    Projection::Up,
    Projection::Down,
];

/// How a table row names an initialisation: `authors'` for [`LoraInit::Gaussian`], `PEFT`
/// for PEFT's default.
pub fn init_label(init: LoraInit) -> &'static str {
    match init {
        LoraInit::Gaussian => "authors'",
        LoraInit::KaimingUniform => "PEFT",
    }
}

/// Settings of the LoRA baseline. Defaults: the diffusion path's optimizer in the toy
/// reference (AdamW lr 1e-3, β (0.9, 0.95), ε 1e-8, weight decay 0.01, constant lr, batch
/// 128, 3000 steps), rank matched to [`ToyDiffusionPath::default`], alpha = rank, the authors'
/// initialisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// LoRA rank; `None` picks the rank whose parameter count is closest to `match_params`'s
    /// ([`l2d_models::lora::LoraConfig::rank_for_params`]).
    pub rank: Option<usize>,
    /// LoRA alpha; `None` means alpha = rank (scale 1).
    pub alpha: Option<f64>,
    /// Initialisation of the `A` factors.
    pub init: LoraInit,
    /// The diffusion path whose parameter count the rank matches when `rank` is `None`.
    pub match_params: ToyDiffusionPath,
    /// Optimizer steps.
    pub steps: usize,
    /// Problems per step.
    pub batch_size: usize,
    /// Learning rate (constant).
    pub lr: f64,
    /// Adam's β₁.
    pub beta_1: f32,
    /// Adam's β₂.
    pub beta_2: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Seed of the adapters' initial values and of the training problems.
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: None,
            alpha: None,
            init: LoraInit::Gaussian,
            match_params: ToyDiffusionPath::default(),
            steps: 3000,
            batch_size: 128,
            lr: 1e-3,
            beta_1: 0.9,
            beta_2: 0.95,
            weight_decay: 0.01,
            seed: 1,
        }
    }
}

impl LoraConfig {
    /// The adapter this configuration trains on a base of `config`: its rank, alpha, targets
    /// ([`LORA_TARGETS`]) and initialisation.
    ///
    /// ```
    /// use l2d::demo::{LoraConfig, TinyLlama};
    ///
    /// let config = TinyLlama::default().model_config()?;
    /// // The default's rank matches the toy reference's 58,592-parameter path.
    /// let lora = LoraConfig::default().adapter_config(&config)?;
    /// assert_eq!((lora.rank, lora.num_params(&config)), (47, 58_656));
    /// // The toy reference's 6-digit baseline: rank 40, 49,920 parameters.
    /// let r40 = LoraConfig { rank: Some(40), ..LoraConfig::default() };
    /// assert_eq!(r40.adapter_config(&config)?.num_params(&config), 49_920);
    /// # Ok::<(), l2d::demo::DemoError>(())
    /// ```
    ///
    /// # Errors
    /// [`DemoError::Diffusion`] when the rank is matched to a path that cannot be built on
    /// this base; [`DemoError::InvalidConfig`] for an invalid rank or alpha.
    pub fn adapter_config(
        &self,
        config: &ModelConfig,
    ) -> Result<l2d_models::lora::LoraConfig, DemoError> {
        let rank = match self.rank {
            Some(rank) => rank,
            None => l2d_models::lora::LoraConfig::rank_for_params(
                config,
                &LORA_TARGETS,
                self.match_params.param_count(config)?.total(),
            ),
        };
        let alpha = self.alpha.unwrap_or(rank as f64);
        let lora = l2d_models::lora::LoraConfig::new(rank, alpha, LORA_TARGETS.to_vec())
            .with_init(self.init);
        lora.validate().map_err(|e| match e {
            l2d_models::lora::LoraError::Config { field, reason } => {
                DemoError::invalid(field, reason)
            }
            other => DemoError::invalid("lora", other.to_string()),
        })?;
        Ok(lora)
    }

    fn validate(&self) -> Result<(), DemoError> {
        if self.batch_size == 0 {
            return Err(DemoError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(DemoError::invalid(
                "lr",
                format!("{} is not positive", self.lr),
            ));
        }
        Ok(())
    }
}

/// A trained LoRA baseline.
#[derive(Debug, Clone)]
pub struct LoraBaseline {
    /// The adapter on the plain device.
    pub lora: DecoderLora,
    /// The base with the adapter merged into its weights (what the baseline's rows score).
    pub model: CausalLm,
    /// Trainable parameters (the adapters).
    pub trainable_params: usize,
    /// The training loss of every step.
    pub losses: Vec<f32>,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// Finetunes LoRA adapters of the frozen `base` on `task` (answer digits only) on `device`
/// with autodiff: the problems the diffusion path with the same data seed sees, one
/// `l2d-train` `Stepper` step per batch. `on_step(step, loss)` is called after every step; `base` is
/// left as it is.
///
/// # Errors
/// [`DemoError`] for an invalid configuration or a non-finite loss.
pub fn train_lora(
    base: &CausalLm,
    task: &DigitTask,
    config: &LoraConfig,
    device: &Device,
    on_step: impl FnMut(usize, f32),
) -> Result<LoraBaseline, DemoError> {
    config.validate()?;
    let adapter = config.adapter_config(base.config())?;
    let start = Instant::now();
    let lora = DecoderLora::init(&adapter, base, config.seed)
        .map_err(|e| DemoError::invalid("lora", e.to_string()))?;
    let trainable_params = lora.num_params();
    let (lora, losses) = super::Finetune {
        phase: "lora",
        task,
        steps: config.steps,
        batch_size: config.batch_size,
        lr: config.lr,
        data: finetune_data_rng(config.seed),
        // LoRA's loss draws nothing; the generator is there for the objective's signature.
        rng: HostRng::new(config.seed),
    }
    .run(
        lora,
        super::adamw(config.beta_1, config.beta_2, config.weight_decay),
        base,
        device,
        on_step,
    )?;
    Ok(LoraBaseline {
        model: lora.merge_into(base),
        lora,
        trainable_params,
        losses,
        seconds: start.elapsed().as_secs_f64(),
    })
}
