//! The L2D diffusion path (Cetin, Zhao, Tang, "Large Language Models to Diffusion
//! Finetuning", ICML 2025), following the authors' reference implementation (SakanaAI/L2D,
//! `flow_llms/llama.py`, `llama_components.py`, `base.py`, `base_components.py`) number for
//! number.
//!
//! A frozen decoder ([`CausalLm`](crate::decoder::CausalLm): Llama, Qwen2, Mistral) gets a
//! parallel path. For the next token, a flow state `x_t = (1-t)·σ·ε + t·V_y` (σ = 64, `V_y`
//! the token's normalised flow representation) is encoded to the hidden width and run through
//! every layer with the path's own q/o/gate/up/down projections (LoRA deltas on the frozen
//! weights), DiT-style timestep modulation, and queries on the frozen path's keys/values only.
//! The result, gated by `head(t) - head(0)`, is added to the frozen final hidden state before
//! the final norm and LM head, so at `t = 0` the model is exactly the base model.
//!
//! | module | what |
//! | --- | --- |
//! | [`path`] | [`DiffusionPath`]: the parameters and the three forwards |
//! | [`token_embedder`] | token → flow representation (`mapping`, `embedding`, `one-hot`) |
//! | [`encoder`] | flow state → path input, with the time-dependent normalisation |
//! | [`timestep`] | sinusoidal timestep embedding + MLP |
//! | [`class_embedder`] | guidance classes and the null class |
//! | [`modulation`] | per-layer modulation heads and the final gate |
//! | [`projection`] | LoRA deltas, full copies |
//! | [`layer`] | one decoder layer of the path |
//! | [`conditioning`] | [`Timesteps`], [`ClassLabels`] |
//! | [`conditioning_cache`] | [`TimeConditioningCache`]: per-time modulations reused across evaluations |
//! | [`context`] | [`FlowContext`]: the cached frozen state the path reads |
//! | [`loss`] | the training loss |
//! | [`velocity`] | the velocity `(x̂₁ - x_t)/(1-t)` and the solvers' [`FlowVelocityField`] |
//! | [`adapter`] | adapter files: save/load, reference checkpoints, base fingerprints |
//! | [`count`] | the analytic parameter count |

pub mod adapter;
pub mod class_embedder;
pub mod conditioning;
pub mod conditioning_cache;
pub mod context;
pub mod count;
pub mod encoder;
pub mod error;
pub(crate) mod keys;
pub mod layer;
pub mod loss;
pub mod mlp;
pub mod modulation;
pub mod path;
pub mod projection;
pub(crate) mod source;
pub mod timestep;
pub mod token_embedder;
pub mod velocity;

pub use adapter::{AdapterLoadOptions, AdapterMetadata, base_fingerprint, load_reference_model};
pub use conditioning::{ClassLabels, Timesteps};
pub use conditioning_cache::{Branches, TimeConditioningCache};
pub use context::FlowContext;
pub use count::{ParamCount, diffusion_param_count};
pub use error::DiffusionError;
pub use loss::{LossInputs, LossOutput};
pub use path::{BaseSummary, DiffusionPath, TimeConditioning};
pub use velocity::{FlowVelocityField, reference_endpoint_policy, reference_temperature_offset};
