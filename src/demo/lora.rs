//! The paper's baseline: the frozen base finetuned with plain LoRA (rank `R`, alpha `R`) on
//! the q/o/gate/up/down projections, with `R` chosen for a trainable-parameter count close to
//! the diffusion path's, and the same optimizer, data and steps as the diffusion path.
//!
//! Unlike L2D, the adapters here change the base path itself: that is what the baseline is.
//! They are attached with burn's reparameterization (`base + (alpha/R)·A·B`, `B = 0` at start).
//! `A` is drawn as the authors' `LoRA` module draws the diffusion path's (`N(0, 1)/R`), so the
//! baseline differs from L2D only in where its adapters sit, or as PEFT draws it
//! ([`LoraInit`]); on the host, so the same seed gives the same adapters on every device.
//!
//! The diffusion path's size is computed by [`ToyDiffusionPath::param_count`] from the
//! breakdown of the authors' code (paper notes §2.7); it gives the toy reference's 58,592 at
//! the default configuration.

use std::time::Instant;

use burn::module::{LoraAdapter, Module, ModuleVisitor, Param, Reparameterizer};
use burn::tensor::{Device, Tensor, TensorData};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{ParamCount, diffusion_param_count};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::DemoError;
use super::pretrain::answer_loss;
use super::task::DigitTask;

/// The projections L2D adapts, and so does the baseline.
pub const LORA_TARGETS: [&str; 5] = ["q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Stream of the finetuning runs' data generator.
const DATA_STREAM: u64 = 0x6c6f_7261;

/// The generator of the finetuning problems for `seed`: the LoRA baseline and the diffusion
/// path given the same seed see the same problems in the same order.
pub fn finetune_data_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ DATA_STREAM)
}

/// `(d_in, d_out)` of each of [`LORA_TARGETS`] in one layer of `config`.
fn target_shapes(config: &ModelConfig) -> [(usize, usize); 5] {
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let q = config.num_attention_heads * config.head_dim;
    [(h, q), (q, h), (h, i), (h, i), (i, h)]
}

/// Trainable parameters of rank-`rank` LoRA on [`LORA_TARGETS`] of every layer:
/// `layers · rank · Σ (d_in + d_out)`.
///
/// ```
/// use l2d::demo::{lora::lora_param_count, TinyLlama};
///
/// let config = TinyLlama::default().model_config()?;
/// // The toy reference's 6-digit baseline: rank 40, 49,920 parameters.
/// assert_eq!(lora_param_count(&config, 40), 49_920);
/// # Ok::<(), l2d::demo::DemoError>(())
/// ```
pub fn lora_param_count(config: &ModelConfig, rank: usize) -> usize {
    let per_rank: usize = target_shapes(config).iter().map(|(a, b)| a + b).sum();
    config.num_hidden_layers * rank * per_rank
}

/// The rank whose [`lora_param_count`] is closest to `budget` (at least 1; ties go to the
/// smaller rank).
pub fn rank_for_budget(config: &ModelConfig, budget: usize) -> usize {
    let per_rank = lora_param_count(config, 1).max(1);
    let lo = (budget / per_rank).max(1);
    let hi = lo + 1;
    let d = |r: usize| lora_param_count(config, r).abs_diff(budget);
    if d(hi) < d(lo) { hi } else { lo }
}

/// The diffusion path's sizes at toy scale, in the authors' configuration vocabulary. The
/// default is the toy reference's: mapping dim 32, flow-to-LM encoder depth 2 of width
/// `hidden`, DiT modulation hidden `hidden` with a 64-frequency timestep embedding, LoRA rank 8
/// on q/o/gate/up/down; the training noise of the paper (`t ~ U[0, 1]`, σ = 64).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ToyDiffusionPath {
    /// Width of the flow (mapping) space.
    pub mapping_dim: usize,
    /// Width of the flow-to-LM encoder (`None`: the model's hidden size).
    pub flow_width: Option<usize>,
    /// Depth of the flow-to-LM encoder (linear layers).
    pub flow_depth: usize,
    /// Hidden width of the DiT modulation (`None`: the model's hidden size).
    pub modulation_hidden: Option<usize>,
    /// Sinusoidal frequency-embedding width of the timestep.
    pub frequency_dim: usize,
    /// LoRA rank of the diffusion path's projections.
    pub lora_rank: usize,
    /// How training timesteps are drawn: `u ~ U[0, 1]` through this schedule (`identity`,
    /// `cosmap`, `shifted_<s>`; the reference's `noise_schedule`).
    #[serde(default = "default_noise_schedule")]
    pub noise_schedule: l2d_core::NoiseSchedule,
    /// The noise's standard deviation σ (the reference's `noise_rescaling`, 64).
    #[serde(default = "default_noise_scale")]
    pub noise_scale: f64,
    /// Training timesteps are drawn in `[0, 1 - minimum_training_noise]` (the reference's
    /// `minimum_training_noise`, 0).
    #[serde(default)]
    pub minimum_training_noise: f64,
}

fn default_noise_schedule() -> l2d_core::NoiseSchedule {
    l2d_core::NoiseSchedule::Identity
}

fn default_noise_scale() -> f64 {
    64.0
}

impl Default for ToyDiffusionPath {
    fn default() -> Self {
        Self {
            mapping_dim: 32,
            flow_width: None,
            flow_depth: 2,
            modulation_hidden: None,
            frequency_dim: 64,
            lora_rank: 8,
            noise_schedule: l2d_core::NoiseSchedule::Identity,
            noise_scale: default_noise_scale(),
            minimum_training_noise: 0.0,
        }
    }
}

impl ToyDiffusionPath {
    /// The diffusion path's trainable parameters on a base of `config`, by part: the count of
    /// [`l2d_models::diffusion::diffusion_param_count`] for [`ToyDiffusionPath::l2d_config`].
    ///
    /// ```
    /// use l2d::demo::{lora::ToyDiffusionPath, TinyLlama};
    ///
    /// let config = TinyLlama::default().model_config()?;
    /// // The toy reference's 6-digit row.
    /// assert_eq!(ToyDiffusionPath::default().param_count(&config)?.total(), 58_592);
    /// # Ok::<(), l2d::demo::DemoError>(())
    /// ```
    ///
    /// # Errors
    /// [`DemoError::Diffusion`] for sizes the path cannot have on this base.
    pub fn param_count(&self, config: &ModelConfig) -> Result<ParamCount, DemoError> {
        Ok(diffusion_param_count(&self.l2d_config(), config)?)
    }
}

/// How the `A` factor is initialised (`B` is always zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LoraInit {
    /// `N(0, 1) / rank`, as the authors' `LoRA` module (`flow_llms/base_components.py`) and
    /// this project's diffusion path.
    #[default]
    Reference,
    /// PEFT's default: Kaiming-uniform with `a = sqrt(5)`, i.e. `U(-1/sqrt(d_in), 1/sqrt(d_in))`.
    Peft,
}

impl LoraInit {
    /// How a table row names it: `authors'` or `PEFT`.
    pub fn label(&self) -> &'static str {
        match self {
            LoraInit::Reference => "authors'",
            LoraInit::Peft => "PEFT",
        }
    }
}

/// Settings of the LoRA baseline. Defaults: the diffusion path's optimizer in the toy
/// reference (AdamW lr 1e-3, β (0.9, 0.95), ε 1e-8, weight decay 0.01, constant lr, batch
/// 128, 3000 steps), rank matched to [`ToyDiffusionPath::default`], alpha = rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// LoRA rank; `None` picks [`rank_for_budget`] of `match_params`'s size.
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
            init: LoraInit::Reference,
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
    /// The rank this configuration trains on a base of `config`.
    ///
    /// # Errors
    /// [`DemoError::Diffusion`] when the rank is matched to a path that cannot be built on
    /// this base.
    pub fn resolved_rank(&self, config: &ModelConfig) -> Result<usize, DemoError> {
        match self.rank {
            Some(rank) => Ok(rank),
            None => Ok(rank_for_budget(
                config,
                self.match_params.param_count(config)?.total(),
            )),
        }
    }

    fn validate(&self) -> Result<(), DemoError> {
        if self.rank == Some(0) {
            return Err(DemoError::invalid("rank", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(DemoError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(DemoError::invalid(
                "lr",
                format!("{} is not positive", self.lr),
            ));
        }
        if let Some(a) = self.alpha
            && !(a.is_finite() && a > 0.0)
        {
            return Err(DemoError::invalid("alpha", format!("{a} is not positive")));
        }
        Ok(())
    }
}

/// burn reparameterizer: freezes every parameter and attaches PEFT-initialised LoRA factors
/// to the weights of [`LORA_TARGETS`].
struct AttachLora {
    rank: usize,
    scale: f64,
    init: LoraInit,
    rng: ChaCha8Rng,
}

fn is_target(path: &str) -> bool {
    LORA_TARGETS
        .iter()
        .any(|t| path.ends_with(&format!(".{t}.weight")))
}

impl Reparameterizer for AttachLora {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let base = param.set_require_grad(false);
        if D != 2 || !is_target(path) {
            return (base, None);
        }
        let weight = base.base();
        let device = weight.device();
        let dtype = weight.dtype();
        let [d_in, d_out] = [weight.dims()[0], weight.dims()[1]];
        let n = d_in * self.rank;
        let values: Vec<f32> = match self.init {
            LoraInit::Reference => {
                let std = 1.0 / self.rank as f32;
                (0..n)
                    .map(|_| Distribution::<f32>::sample(&StandardNormal, &mut self.rng) * std)
                    .collect()
            }
            // kaiming_uniform_(A, a=sqrt(5)) on the [rank, d_in] torch weight.
            LoraInit::Peft => {
                let bound = 1.0 / (d_in as f32).sqrt();
                (0..n)
                    .map(|_| self.rng.random_range(-bound..bound))
                    .collect()
            }
        };
        let a =
            Tensor::<2>::from_data(TensorData::new(values, [d_in, self.rank]), (&device, dtype));
        let b = Tensor::<2>::zeros([self.rank, d_out], (&device, dtype));
        let adapter = LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale: self.scale,
        };
        (base, Some(adapter))
    }
}

/// `model` with every parameter frozen and rank-`rank` LoRA (scale `alpha / rank`) on
/// [`LORA_TARGETS`], `A` drawn by `init` from `seed`. Put `model` on an autodiff device
/// first to train the adapters.
pub fn apply_lora(model: CausalLm, rank: usize, alpha: f64, init: LoraInit, seed: u64) -> CausalLm {
    model.apply_reparameterization(AttachLora {
        rank,
        scale: alpha / rank as f64,
        init,
        rng: ChaCha8Rng::seed_from_u64(seed),
    })
}

/// Every float parameter's module path with its raw stored value (`Param::base`, without
/// reparameterization) and whether it requires a gradient. Adapter factors appear as
/// `<weight path>.lora.a` / `.lora.b`.
pub fn parameters(model: &impl Module) -> Vec<(String, Tensor<2>, bool)> {
    struct Collect {
        stack: Vec<String>,
        out: Vec<(String, Tensor<2>, bool)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.base();
            let grad = t.is_require_grad();
            let n = t.shape().num_elements();
            self.out
                .push((self.stack.join("."), t.reshape([1, n]), grad));
        }
    }
    let mut c = Collect {
        stack: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// Number of parameters that require a gradient (on an autodiff device).
pub fn trainable_param_count(model: &impl Module) -> usize {
    parameters(model)
        .iter()
        .filter(|(_, _, grad)| *grad)
        .map(|(_, t, _)| t.shape().num_elements())
        .sum()
}

/// A trained LoRA baseline.
#[derive(Debug, Clone)]
pub struct LoraBaseline {
    /// The adapted model on the plain device (adapters not merged).
    pub model: CausalLm,
    /// The rank trained.
    pub rank: usize,
    /// The alpha trained.
    pub alpha: f64,
    /// Trainable parameters (the adapters).
    pub trainable_params: usize,
    /// The training loss of every step.
    pub losses: Vec<f32>,
    /// Wall time of the training, in seconds.
    pub seconds: f64,
}

/// Finetunes a copy of the frozen `base` with LoRA on `task` (answer digits only) on
/// `device` with autodiff. `on_step(step, loss)` is called after every step; `base` is left
/// as it is.
///
/// # Errors
/// [`DemoError`] for an invalid configuration or a non-finite loss.
pub fn train_lora(
    base: &CausalLm,
    task: &DigitTask,
    config: &LoraConfig,
    device: &Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<LoraBaseline, DemoError> {
    config.validate()?;
    let rank = config.resolved_rank(base.config())?;
    let alpha = config.alpha.unwrap_or(rank as f64);
    let start = Instant::now();
    let train_device = device.clone().autodiff();
    let mut model = apply_lora(
        base.clone().fork(&train_device).train(),
        rank,
        alpha,
        config.init,
        config.seed,
    );
    let trainable_params = trainable_param_count(&model);
    let mut optim = super::adamw(config.beta_1, config.beta_2, config.weight_decay);
    let mut rng = finetune_data_rng(config.seed);
    let mut losses = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let batch = task.train_batch(config.batch_size, &mut rng, &train_device);
        let loss = answer_loss(model.forward(batch.inputs, None), batch.answers);
        let value;
        (model, value) = super::descend("lora", step, loss, model, &mut optim, config.lr)?;
        losses.push(value);
        on_step(step, value);
    }
    Ok(LoraBaseline {
        model: model.valid(),
        rank,
        alpha,
        trainable_params,
        losses,
        seconds: start.elapsed().as_secs_f64(),
    })
}
