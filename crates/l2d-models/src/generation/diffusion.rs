//! Diffusion generation: the L2D [`Generator`] and its per-token [`DiffusionStep`].
//!
//! Per new token ([`DiffusionStep::next_logits`]):
//! 1. the **frozen path** runs once over the new input tokens (the whole prompt at prefill,
//!    then the token just chosen), extending the key/value cache and giving the last
//!    position's pre-norm hidden state;
//! 2. the new position's **flow state** starts from noise `x₀ = σ·ε` (σ = the adapter's
//!    `noise_rescaling`, 64) and is integrated from `t = 0` to `t = 1` (the adapter's
//!    `nstep_final_timestep`) by an `l2d-solvers` method, each evaluation a
//!    **diffusion-only forward** over the cached keys/values and hidden state
//!    ([`FlowVelocityField`]);
//! 3. one more diffusion forward at the final time gives the **logits**, from which
//!    [`generate`] draws the token with the [`GenerationConfig`]'s sampling.
//!
//! With [`DiffusionMode::Base`] (or `Fixed { steps: 0 }`, or no adapter) step 2 and 3 are
//! skipped and the logits are exactly the frozen model's: generation equals
//! [`BaseStep`](super::BaseStep)'s token for token.
//!
//! # Steps and NFE
//! `Fixed { steps: N, method }` takes `N` solver steps over the uniform grid of `N + 1`
//! points `0, 1/N, …, 1` (the reference's `ode_steps` / `--compute_nstep_loss` counts the
//! *points*, `N + 1`). The NFE of a token, as the paper counts it, is the solver's
//! evaluations plus the final one: `N·stages + 1`, so midpoint with 7 steps (8 points) is the
//! paper's 15 NFE. [`TokenStats`] reports it next to the diffusion forwards actually run,
//! which are fewer:
//! - **fused first evaluation**: at `t = 0` the gate `head(t) − head(0)` is exactly zero, so
//!   the logits there are the frozen pass's; the first stage of every solve reuses them (one
//!   LM head on the frozen hidden state instead of a diffusion forward);
//! - evaluations at `t ≥ 1` of methods that reach the end point get a zero velocity without a
//!   forward (the reference's guard).
//!
//! # Efficiency the reference lacks
//! - The vocabulary's flow table (`[vocab, d]`) is computed once per [`Generator`], not per
//!   evaluation.
//! - The diffusion forward skips everything the frozen path has (k/v projections, the frozen
//!   MLP, the frozen final state), and with a fixed grid every time's modulations are
//!   computed once per generation call ([`TimeConditioningCache`]), not per evaluation.
//! - No host read per solver stage: fixed grids skip the solver's per-step finiteness check
//!   (one check of the final state per token instead); adaptive solvers read only their error
//!   norm.
//!
//! # Noise and batches
//! Row `r`'s generator for its `k`-th new token (`k = 0` at prefill) is
//! `HostRng::new(seed).derive(row_key).derive(k)`, where `row_key` is the 64-bit FNV-1a hash
//! of the row's prompt ids (padding excluded) unless given ([`DiffusionStep::with_row_keys`]).
//! The noise `x₀` is its first `d` normal draws times σ; the `sample` estimator's uniforms
//! follow from the same generator. A row's noise therefore depends only on the seed, its
//! prompt and the token index, never on the other rows: batched output equals one-prompt
//! output. Adaptive solves run row by row for the same reason (the error norm of a batch
//! would couple the rows' step sizes). Identical prompts in one batch get identical noise;
//! give row keys (or seeds) to make them differ. The final token itself is chosen by
//! [`generate`]'s sampler, whose seeded stream is shared by the batch when
//! sampling at a positive temperature (greedy choice is row-independent).
//!
//! ```
//! use burn::tensor::{DType, Device};
//! use l2d_models::config::ModelConfig;
//! use l2d_models::decoder::CausalLm;
//! use l2d_models::diffusion::DiffusionPath;
//! use l2d_models::generation::{DiffusionOptions, Flow, GenerationConfig, Generator};
//! use l2d_models::l2d_config::L2dConfig;
//!
//! let config = ModelConfig::from_json_str(r#"{"model_type": "llama", "hidden_size": 32,
//!     "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "vocab_size": 50}"#)?;
//! let base = CausalLm::random(&config, &Device::flex(), DType::F32, 0);
//! let l2d = L2dConfig { flow_representation_dim: Some(8), flow_lora_rank: 4,
//!     timestep_modulation_hidden_size: Some(16), flow_to_lm_hidden_size: Some(16),
//!     timestep_modulation_freq_embedding_size: Some(16), ..L2dConfig::default() };
//! let path = DiffusionPath::init(&l2d, &base, 1)?.with_random_parameters(2, 0.05);
//!
//! // Midpoint over 8 grid points: 15 NFE per token.
//! let generator = Generator::new(&base, Some(&path), DiffusionOptions::fixed(7))?;
//! let out = generator.generate(None, &[vec![1, 5, 7]], &GenerationConfig::greedy(4), |_| {
//!     Flow::Continue
//! })?;
//! assert_eq!(out.generation.sequences[0].tokens.len(), 4);
//! assert_eq!(out.diffusion.mean_nfe_per_token(), 15.0);
//! // The first stage is fused into the frozen pass: 14 diffusion forwards per token.
//! assert_eq!(out.diffusion.tokens[0].diffusion_forwards, 14);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::OnceCell;
use std::time::Instant;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_core::{HostRng, TemperatureSchedule, X1Estimation, X1Estimator};
use l2d_guidance::Guidance;
use l2d_solvers::{
    AdaptiveController, EndpointPolicy, FlowSdeSampler, Method, Noise, Solver, SolverError,
    StepController,
};

use super::step::TokenStep;
use super::{Flow, GenerationConfig, GenerationError, TokenEvent, generate};
use crate::decoder::{CausalLm, ForwardOptions, KvCache};
use crate::diffusion::{
    ClassLabels, DiffusionError, DiffusionPath, FlowContext, FlowVelocityField,
    TimeConditioningCache, reference_temperature_offset,
};
use crate::tokenizer::Tokenizer;

pub use super::diffusion_error::DiffusionGenerationError;
pub use super::options::{
    BudgetPolicy, DEFAULT_ADAPTIVE_METHOD, DEFAULT_FIXED_METHOD, DEFAULT_TOLERANCE, DiffusionMode,
    DiffusionOptions, GuidanceOptions, InvalidDiffusionMode, MAX_NFE_PER_TOKEN, MAX_SOLVER_STEPS,
    TemperatureOffset,
};
pub use super::stats::{DiffusionOutput, DiffusionStats, TokenStats};

/// A frozen model with an optional diffusion path and the options of generating with it.
///
/// Without a path, or in [`DiffusionMode::Base`], it is the frozen model
/// ([`Generator::is_diffusion`] is false) and its steps return exactly [`BaseStep`]'s logits.
/// The vocabulary's flow table is computed on first use and kept.
///
/// [`BaseStep`]: super::BaseStep
#[derive(Debug)]
pub struct Generator<'m> {
    base: &'m CausalLm,
    path: Option<&'m DiffusionPath>,
    options: DiffusionOptions,
    estimation: X1Estimation,
    temperature: TemperatureSchedule,
    guidance: Guidance,
    state_dtype: DType,
    fused: bool,
    table: OnceCell<Tensor<2>>,
}

impl<'m> Generator<'m> {
    /// A generator over `base` and `path`, checking the options against them.
    ///
    /// # Errors
    /// [`DiffusionGenerationError::Diffusion`] for a path built for another base, an
    /// invalid adapter configuration or class labels;
    /// [`DiffusionGenerationError::Invalid`] for invalid options (a method without error
    /// estimate in adaptive mode, tolerances, a budget, steps above [`MAX_SOLVER_STEPS`] or
    /// [`MAX_NFE_PER_TOKEN`], temperature, guidance weight or interval, a state dtype the
    /// device lacks).
    pub fn new(
        base: &'m CausalLm,
        path: Option<&'m DiffusionPath>,
        options: DiffusionOptions,
    ) -> Result<Self, DiffusionGenerationError> {
        let invalid = |field, reason: String| DiffusionGenerationError::Invalid { field, reason };
        if let Some(p) = path {
            p.check_base(base)?;
        }
        options.mode.validate()?;
        if let DiffusionMode::Adaptive { rtol, atol, .. } = options.mode {
            AdaptiveController::new(rtol, atol)
                .with_step_bounds(options.adaptive_min_step, f64::INFINITY)
                .validate()
                .map_err(|e| invalid("adaptive_min_step", e.to_string()))?;
        }
        let config = path.map(|p| p.config().clone()).unwrap_or_default();
        let mut estimation = config.x1_estimation().map_err(DiffusionError::from)?;
        let mut temperature = options
            .temperature
            .unwrap_or(config.nstep_temperature_schedule);
        temperature
            .validate()
            .map_err(|e| invalid("temperature", e.to_string()))?;
        match options.x1_estimate {
            None => {}
            Some(X1Estimator::Argmax) => temperature = TemperatureSchedule::Constant(0.0),
            Some(e) => {
                estimation.estimator = e;
                if estimation.estimator == X1Estimator::Clamp {
                    estimation.renormalize = None;
                } else if config.nstep_normalize_x1_predictions {
                    estimation.renormalize = Some(config.rescaling());
                }
            }
        }
        let mut guidance = Guidance::disabled();
        if let Some(g) = options.guidance {
            guidance = Guidance::new(g.weight).map_err(|e| invalid("guidance", e.to_string()))?;
            if let Some((a, b)) = g.interval {
                guidance = guidance
                    .with_interval(a, b)
                    .map_err(|e| invalid("guidance", e.to_string()))?;
            }
            if let Some(p) = path {
                let null = p.null_class().ok_or_else(|| {
                    DiffusionError::ClassLabels(
                        "this adapter has no guidance classes \
                         (guidance_modulation_num_classes is unset)"
                            .into(),
                    )
                })?;
                if g.class > null {
                    return Err(DiffusionError::ClassLabels(format!(
                        "class {} is outside 0..={null} ({null} = null class)",
                        g.class
                    ))
                    .into());
                }
            }
        }
        let device = base.device();
        let state_dtype = match options.state_dtype {
            Some(d) => {
                if !d.is_float() || !device.supports_dtype(d) {
                    return Err(invalid(
                        "state_dtype",
                        format!("{d:?} is not a float dtype of this device"),
                    ));
                }
                d
            }
            // The reference's f64 on the CPU; GPU backends lack or emulate f64.
            None if device == Device::flex() => DType::F64,
            None => DType::F32,
        };
        let fused = options.fused_first_evaluation
            && path.is_some_and(|p| p.config().preserve_behavior_at_flow_start);
        Ok(Self {
            base,
            path,
            options,
            estimation,
            temperature,
            guidance,
            state_dtype,
            fused,
            table: OnceCell::new(),
        })
    }

    /// The frozen model alone.
    pub fn base_only(base: &'m CausalLm) -> Self {
        Self::new(base, None, DiffusionOptions::base()).expect("base options are valid")
    }

    /// The frozen model.
    pub fn base(&self) -> &'m CausalLm {
        self.base
    }

    /// The diffusion path, if any.
    pub fn path(&self) -> Option<&'m DiffusionPath> {
        self.path
    }

    /// The options.
    pub fn options(&self) -> &DiffusionOptions {
        &self.options
    }

    /// Whether tokens come from diffusion (a path and a mode with steps).
    pub fn is_diffusion(&self) -> bool {
        self.active_path().is_some()
    }

    /// Whether evaluations at `t = 0` are answered from the frozen pass.
    pub fn fuses_first_evaluation(&self) -> bool {
        self.fused
    }

    /// The ODE state's dtype.
    pub fn state_dtype(&self) -> DType {
        self.state_dtype
    }

    /// The x1 estimation rule in use.
    pub fn estimation(&self) -> X1Estimation {
        self.estimation
    }

    /// The temperature schedule in use.
    pub fn temperature(&self) -> TemperatureSchedule {
        self.temperature
    }

    fn active_path(&self) -> Option<&'m DiffusionPath> {
        self.path.filter(|_| self.options.is_diffusion())
    }

    /// The vocabulary's flow table `[vocab, d]` (computed on first use), if there is a path.
    pub fn vocabulary_table(&self) -> Option<Tensor<2>> {
        let path = self.path?;
        Some(
            self.table
                .get_or_init(|| path.vocabulary_table(self.base))
                .clone(),
        )
    }

    /// A new per-token step (its noise streams and statistics start empty).
    pub fn step(&self) -> DiffusionStep<'_> {
        DiffusionStep {
            generator: self,
            cache: TimeConditioningCache::default(),
            cache_batch: 0,
            stats: DiffusionStats::default(),
            token: 0,
            row_keys: Vec::new(),
            given_keys: None,
            noise: None,
        }
    }

    /// Generates continuations of `prompts` (see [`generate`]) and returns
    /// them with the diffusion statistics.
    ///
    /// # Errors
    /// As [`generate`]; diffusion failures are
    /// [`GenerationError::Step`] holding a [`DiffusionGenerationError`].
    pub fn generate<F>(
        &self,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerationConfig,
        on_token: F,
    ) -> Result<DiffusionOutput, GenerationError>
    where
        F: FnMut(&TokenEvent<'_>) -> Flow,
    {
        let mut step = self.step();
        let generation = generate(&mut step, tokenizer, prompts, config, on_token)?;
        Ok(DiffusionOutput {
            generation,
            diffusion: step.into_stats(),
        })
    }
}

/// The [`TokenStep`] of a [`Generator`]: the frozen pass, then the flow state's ODE for the
/// new position, then the logits at the final time.
///
/// Keep one step per generation call (the generation loop's first call, with an empty cache,
/// restarts its token counter and noise streams).
#[derive(Debug)]
pub struct DiffusionStep<'g> {
    generator: &'g Generator<'g>,
    cache: TimeConditioningCache,
    cache_batch: usize,
    stats: DiffusionStats,
    token: usize,
    row_keys: Vec<u64>,
    given_keys: Option<Vec<u64>>,
    noise: Option<Tensor<3>>,
}

/// The 64-bit FNV-1a hash of token ids (little-endian bytes), the default row key.
pub fn prompt_key(ids: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for byte in id.to_le_bytes() {
            h ^= byte as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Row `row_key`'s generator for its `token`-th new token under `seed` (see the module docs).
pub fn token_rng(seed: u64, row_key: u64, token: usize) -> HostRng {
    HostRng::new(seed).derive(row_key).derive(token as u64)
}

/// The child of a row's token generator ([`token_rng`]) that draws an SDE's step noise.
pub const SDE_NOISE_STREAM: u64 = 0x5de;

/// The step noise of an SDE solve, row by row: row `r` draws from its own generator (the
/// [`SDE_NOISE_STREAM`] child of its token generator), so a row's noise does not depend on
/// the batch it is in.
struct RowNoise {
    rngs: Vec<HostRng>,
}

impl RowNoise {
    fn new(token_rngs: &[HostRng]) -> Self {
        Self {
            rngs: token_rngs
                .iter()
                .map(|r| r.derive(SDE_NOISE_STREAM))
                .collect(),
        }
    }
}

impl Noise<Tensor<3>> for RowNoise {
    /// # Shapes
    /// - `like`: `[batch, n, d]` with one generator per batch row; output: the same
    fn standard_normal_like(&mut self, like: &Tensor<3>) -> Tensor<3> {
        let [b, n, d] = like.dims();
        debug_assert_eq!(b, self.rngs.len(), "one noise generator per row");
        let mut values = Vec::with_capacity(b * n * d);
        for rng in &mut self.rngs {
            values.extend(rng.normal_vec(n * d));
        }
        Tensor::from_data(
            TensorData::new(values, [b, n, d]),
            (&like.device(), like.dtype()),
        )
    }
}

impl<'g> DiffusionStep<'g> {
    /// Uses `noise` as the initial flow states: token `k` of row `r` starts at
    /// `noise[k, r]` (already scaled: these are the `x₀`, not unit normals).
    ///
    /// # Shapes
    /// - `noise`: `[tokens, batch, d]`
    ///
    /// # Errors
    /// [`DiffusionGenerationError::Invalid`] if the flow dimension differs from the path's or
    /// there is no path.
    pub fn with_initial_noise(
        mut self,
        noise: Tensor<3>,
    ) -> Result<Self, DiffusionGenerationError> {
        let Some(path) = self.generator.path else {
            return Err(DiffusionGenerationError::Invalid {
                field: "initial noise",
                reason: "the generator has no diffusion path".into(),
            });
        };
        let d = path.flow_dim();
        if noise.dims()[2] != d {
            return Err(DiffusionGenerationError::Invalid {
                field: "initial noise",
                reason: format!("shape {:?}, expected [tokens, batch, {d}]", noise.dims()),
            });
        }
        self.noise = Some(noise);
        Ok(self)
    }

    /// Uses these row keys instead of the prompts' hashes (one per row; e.g. distinct keys
    /// for identical prompts).
    pub fn with_row_keys(mut self, keys: Vec<u64>) -> Self {
        self.given_keys = Some(keys);
        self
    }

    /// The statistics so far.
    pub fn stats(&self) -> &DiffusionStats {
        &self.stats
    }

    /// The statistics, consuming the step.
    pub fn into_stats(self) -> DiffusionStats {
        self.stats
    }

    /// The conditioning cache (for inspection: entries and hits).
    pub fn conditioning_cache(&self) -> &TimeConditioningCache {
        &self.cache
    }

    /// Starts a generation call: resets the token counter and derives the row keys.
    fn begin(
        &mut self,
        input_ids: &Tensor<2, Int>,
        options: &ForwardOptions,
    ) -> Result<(), DiffusionGenerationError> {
        let [b, seq] = input_ids.dims();
        self.token = 0;
        if b != self.cache_batch {
            self.cache.clear();
            self.cache_batch = b;
        }
        self.row_keys = match &self.given_keys {
            Some(keys) => {
                if keys.len() != b {
                    return Err(DiffusionGenerationError::Invalid {
                        field: "row keys",
                        reason: format!("{} keys for a batch of {b}", keys.len()),
                    });
                }
                keys.clone()
            }
            None if self.generator.active_path().is_none() => Vec::new(),
            None => {
                let ids: Vec<i64> = int_vec(input_ids.clone());
                let mask: Option<Vec<i64>> = options.attention_mask.clone().map(|m| {
                    let len = m.dims()[1];
                    int_vec(m.narrow(1, len - seq, seq))
                });
                (0..b)
                    .map(|r| {
                        let row: Vec<u32> = (0..seq)
                            .filter(|&j| mask.as_ref().is_none_or(|m| m[r * seq + j] != 0))
                            .map(|j| ids[r * seq + j] as u32)
                            .collect();
                        prompt_key(&row)
                    })
                    .collect()
            }
        };
        Ok(())
    }

    /// The initial states `[batch, 1, d]` and the rows' generators for the current token.
    fn initial_states(
        &self,
        path: &DiffusionPath,
        batch: usize,
        device: &Device,
    ) -> Result<(Tensor<3>, Vec<HostRng>), DiffusionGenerationError> {
        let gen_ = self.generator;
        let d = path.flow_dim();
        let mut rngs: Vec<HostRng> = (0..batch)
            .map(|r| {
                let key = self.row_keys.get(r).copied().unwrap_or(r as u64);
                token_rng(gen_.options.seed, key, self.token)
            })
            .collect();
        let x0 = match &self.noise {
            Some(noise) => {
                let [tokens, rows, _] = noise.dims();
                if self.token >= tokens {
                    return Err(DiffusionGenerationError::NoiseExhausted {
                        given: tokens,
                        token: self.token,
                    });
                }
                if rows != batch {
                    return Err(DiffusionGenerationError::Invalid {
                        field: "initial noise",
                        reason: format!("noise for {rows} rows, the batch has {batch}"),
                    });
                }
                noise
                    .clone()
                    .narrow(0, self.token, 1)
                    .reshape([batch, 1, d])
                    .to_device(device)
                    .cast(gen_.state_dtype)
            }
            None => {
                let sigma = path.config().noise_rescaling;
                let mut values = Vec::with_capacity(batch * d);
                for rng in &mut rngs {
                    values.extend(rng.normal_vec(d).into_iter().map(|z| z * sigma));
                }
                Tensor::from_data(
                    TensorData::new(values, [batch, 1, d]),
                    (device, gen_.state_dtype),
                )
            }
        };
        Ok((x0, rngs))
    }

    /// A velocity field over `context` with the generator's options.
    fn field<'f>(
        &'f self,
        path: &'f DiffusionPath,
        context: FlowContext,
        initial_logits: Option<Tensor<3>>,
        rngs: Vec<HostRng>,
        times: &[f64],
        cached: bool,
    ) -> Result<FlowVelocityField<'f>, DiffusionGenerationError> {
        let gen_ = self.generator;
        let rows = context.batch();
        let method = method_of(gen_.options.mode);
        let offset = match gen_.options.temperature_offset {
            TemperatureOffset::Reference => reference_temperature_offset(method, times),
            TemperatureOffset::None => 0.0,
            TemperatureOffset::Fixed(o) => o,
        };
        let final_time = times[times.len() - 1];
        let table = gen_
            .vocabulary_table()
            .expect("a diffusion step has a path");
        let mut field = FlowVelocityField::new(path, gen_.base, context, table)?
            .with_estimation(gen_.estimation)
            .with_temperature(gen_.temperature)
            .with_temperature_offset(offset)
            .with_endpoint(
                gen_.options
                    .endpoint
                    .unwrap_or(EndpointPolicy::ZeroAtOrAfter(final_time)),
            )
            .with_row_rngs(rngs)?;
        if let Some(g) = gen_.options.guidance {
            let labels = Tensor::<1, Int>::from_data(
                TensorData::new(vec![g.class as i64; rows], [rows]),
                &gen_.base.device(),
            );
            field =
                field.with_validated_guidance(ClassLabels::PerSequence(labels), gen_.guidance)?;
        }
        if cached {
            field = field.with_conditioning_cache(&self.cache);
        }
        if let Some(l) = initial_logits {
            field = field.with_initial_logits(l)?;
        }
        Ok(field)
    }

    /// One token of diffusion for every row; returns the final logits `[batch, vocab]`.
    fn diffuse(
        &self,
        path: &DiffusionPath,
        context: FlowContext,
        initial_logits: Option<Tensor<3>>,
    ) -> Result<(Tensor<2>, TokenStats), DiffusionGenerationError> {
        let gen_ = self.generator;
        let batch = context.batch();
        let device = gen_.base.device();
        let final_time = path.config().nstep_final_timestep;
        let (x0, rngs) = self.initial_states(path, batch, &device)?;
        let mut stats = TokenStats {
            rows: batch,
            ..Default::default()
        };
        let logits = match gen_.options.mode {
            DiffusionMode::Fixed { steps, .. } | DiffusionMode::Sde { steps, .. } => {
                let times = l2d_solvers::linspace(0.0, final_time, steps + 1);
                // The SDE's step noise, derived by key (nothing drawn yet); a fixed grid has none.
                let is_sde = matches!(gen_.options.mode, DiffusionMode::Sde { .. });
                let mut noise = RowNoise::new(if is_sde { &rngs } else { &[] });
                let cached = gen_.options.cache_conditioning;
                let mut field = self.field(path, context, initial_logits, rngs, &times, cached)?;
                let (x, s) = match gen_.options.mode {
                    DiffusionMode::Sde { diffusion, .. } => {
                        let mut sampler =
                            FlowSdeSampler::new(path.config().noise_rescaling, diffusion);
                        sampler.check_finite = false;
                        field.sample(&sampler, &mut noise, x0, &times)?
                    }
                    _ => {
                        let solver = Solver::new(method_of(gen_.options.mode))
                            .with_controller(StepController::RequestedTimes)
                            .with_check_finite(false);
                        field.solve(&solver, x0, &times)?
                    }
                };
                self.check_finite(&x)?;
                let logits = field.logits(final_time, &x)?;
                stats.nfe = vec![s.nfe + 1; batch];
                stats.diffusion_forwards = field.model_calls();
                stats.fused_evaluations = field.fused_evals();
                stats.zero_velocity_evaluations = s.zero_velocity_evals;
                stats.accepted_steps = s.accepted;
                logits
            }
            DiffusionMode::Adaptive {
                method,
                rtol,
                atol,
                max_nfe,
                on_budget,
            } => {
                let times = [0.0, final_time];
                let controller = AdaptiveController::new(rtol, atol)
                    .with_step_bounds(gen_.options.adaptive_min_step, f64::INFINITY);
                let mut solver = Solver::new(method)
                    .with_controller(StepController::Adaptive(controller))
                    .with_check_finite(false);
                if let Some(m) = max_nfe {
                    solver = solver.with_max_nfe(m);
                }
                let mut rows = Vec::with_capacity(batch);
                for (r, rng) in rngs.into_iter().enumerate() {
                    let ctx = context.narrow_batch(r, 1)?;
                    let init = initial_logits.as_ref().map(|l| l.clone().narrow(0, r, 1));
                    let x0r = x0.clone().narrow(0, r, 1);
                    let mut field = self.field(path, ctx, init, vec![rng], &times, false)?;
                    let (x, nfe) = match field.solve(&solver, x0r.clone(), &times) {
                        Ok((x, s)) => {
                            stats.zero_velocity_evaluations += s.zero_velocity_evals;
                            stats.accepted_steps += s.accepted;
                            stats.rejected_steps += s.rejected;
                            (x, s.nfe)
                        }
                        Err(DiffusionError::Solver(SolverError::MaxNfeExceeded {
                            max_nfe,
                            nfe,
                            t,
                        })) => match on_budget {
                            BudgetPolicy::Error => {
                                return Err(DiffusionGenerationError::BudgetExceeded {
                                    row: r,
                                    max_nfe,
                                    nfe,
                                    t,
                                });
                            }
                            BudgetPolicy::FixedGrid { steps } => {
                                let grid = l2d_solvers::linspace(0.0, final_time, steps + 1);
                                let fixed = Solver::new(method)
                                    .with_controller(StepController::RequestedTimes)
                                    .with_check_finite(false);
                                let (x, s) = field.solve(&fixed, x0r, &grid)?;
                                stats.budget_fallbacks += 1;
                                stats.zero_velocity_evaluations += s.zero_velocity_evals;
                                stats.accepted_steps += s.accepted;
                                (x, nfe + s.nfe)
                            }
                        },
                        Err(e) => return Err(e.into()),
                    };
                    self.check_finite(&x)?;
                    rows.push(field.logits(final_time, &x)?);
                    stats.nfe.push(nfe + 1);
                    stats.diffusion_forwards += field.model_calls();
                    stats.fused_evaluations += field.fused_evals();
                }
                Tensor::cat(rows, 0)
            }
            DiffusionMode::Base => unreachable!("a base step has no active path"),
        };
        let vocab = logits.dims()[2];
        Ok((logits.reshape([batch, vocab]), stats))
    }

    fn check_finite(&self, x: &Tensor<3>) -> Result<(), DiffusionGenerationError> {
        if self.generator.options.check_finite && !x.clone().is_finite().all().into_scalar::<bool>()
        {
            return Err(DiffusionGenerationError::NonFinite { token: self.token });
        }
        Ok(())
    }
}

/// The solver method a mode integrates with (the SDE sampler's steps are Euler's).
fn method_of(mode: DiffusionMode) -> Method {
    match mode {
        DiffusionMode::Fixed { method, .. } | DiffusionMode::Adaptive { method, .. } => method,
        DiffusionMode::Base | DiffusionMode::Sde { .. } => Method::Euler,
    }
}

fn int_vec<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

impl TokenStep for DiffusionStep<'_> {
    fn vocab_size(&self) -> usize {
        self.generator.base.config().vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.generator.base.config().max_position_embeddings)
    }

    fn device(&self) -> Device {
        self.generator.base.device()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let start = Instant::now();
        if cache.is_empty() {
            self.begin(&input_ids, options)?;
        }
        let gen_ = self.generator;
        let base = gen_.base;
        let [batch, seq] = input_ids.dims();
        let (hidden, context) = base.forward_hidden(input_ids, Some(cache), options);
        let result = match gen_.active_path() {
            None => {
                // Exactly BaseStep: the same forward, the last position, the same head.
                let last = hidden.narrow(1, seq - 1, 1);
                let logits = base.logits(last).reshape([batch, self.vocab_size()]);
                let stats = TokenStats {
                    rows: batch,
                    nfe: vec![0; batch],
                    ..Default::default()
                };
                (logits, stats)
            }
            Some(path) => {
                let flow = FlowContext::new(hidden, cache, &context)
                    .map_err(DiffusionGenerationError::from)?
                    .last_query();
                let initial = gen_
                    .fused
                    .then(|| base.logits(flow.hidden.clone()).cast(DType::F32));
                self.diffuse(path, flow, initial)?
            }
        };
        let (logits, mut stats) = result;
        stats.time = start.elapsed();
        self.stats.tokens.push(stats);
        self.token += 1;
        Ok(logits)
    }
}
