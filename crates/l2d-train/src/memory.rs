//! Memory: the process's peak resident set (Linux `VmHWM`), and an analytic account of what a
//! training step holds.

use burn::module::Module;
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::DiffusionPath;
use serde::{Deserialize, Serialize};

/// A field of `/proc/self/status` in bytes (`VmHWM`: peak resident set, `VmRSS`: current);
/// `None` off Linux.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// The peak resident set size so far, in bytes.
pub fn peak_rss() -> Option<u64> {
    proc_status_bytes("VmHWM")
}

/// The current resident set size, in bytes.
pub fn current_rss() -> Option<u64> {
    proc_status_bytes("VmRSS")
}

/// What a training step holds, by part, in bytes (an analytic estimate; see
/// [`MemoryBreakdown::estimate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryBreakdown {
    /// The frozen base weights (in their dtype).
    pub base_weights: u64,
    /// The diffusion path's parameters (f32).
    pub diffusion_params: u64,
    /// Their gradients (f32; the accumulation buffer).
    pub gradients: u64,
    /// AdamW's two moments (f32).
    pub adam_states: u64,
    /// The frozen pass's outputs the diffusion path reads (every layer's keys and values, the
    /// final hidden state), in the base dtype.
    pub frozen_cache: u64,
    /// Activations of the diffusion path saved for backward, in the base dtype (the path
    /// computes in it; estimate).
    pub activations: u64,
    /// Logits and their softmax for the loss (f32).
    pub logits: u64,
}

impl MemoryBreakdown {
    /// The sum.
    pub fn total(&self) -> u64 {
        self.base_weights
            + self.diffusion_params
            + self.gradients
            + self.adam_states
            + self.frozen_cache
            + self.activations
            + self.logits
    }

    /// The estimate for one micro-batch of `batch × seq` tokens.
    ///
    /// Activations: the tensors (in the base dtype) the autodiff graph keeps for backward, per
    /// token and diffusion-path layer, counted from the layer's operations (`h` hidden, `q`
    /// query width, `i` MLP width, `r` LoRA rank, `H·s` attention heads × keys):
    /// - the two modulated norms (input, normalised, gain) and the two residual gates
    ///   (branch output, gate), and the six per-token modulation vectors: `19h`;
    /// - the query projection's input, RoPE (q before and after rotation), the attention
    ///   (q, the grouped-query keys and values repeated to the query heads, the scores and
    ///   their softmax) and the output projection's input: `5q + 2q + 2H·s`;
    /// - the MLP: gate and up outputs, their SiLU, the product: `4i`;
    /// - the five LoRA bottlenecks (input side and `x·A`): `10r`; the modulation head's own
    ///   hidden layers: `3·cond`.
    ///
    /// Temporaries freed during the pass and allocator slack are not counted.
    pub fn estimate(base: &CausalLm, path: &DiffusionPath, batch: usize, seq: usize) -> Self {
        let c = base.config();
        let tokens = (batch * seq) as u64;
        let (h, i, l) = (
            c.hidden_size as u64,
            c.intermediate_size as u64,
            c.num_hidden_layers as u64,
        );
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        let heads = c.num_attention_heads as u64;
        let r = path.config().flow_lora_rank as u64;
        let cond = path.dims().cond_dim as u64;
        let base_bytes = base.dtype().size() as u64;
        let params = path.num_params() as u64 * 4;
        let per_token_layer = 19 * h + 7 * q + 2 * heads * seq as u64 + 4 * i + 10 * r + 3 * cond;
        let vocab = c.vocab_size as u64;
        MemoryBreakdown {
            base_weights: base.weight_bytes() as u64,
            diffusion_params: params,
            gradients: params,
            adam_states: 2 * params,
            frozen_cache: tokens * (l * 2 * kv + h) * base_bytes,
            activations: tokens * l * per_token_layer * base_bytes,
            logits: tokens * vocab * 4 * 2,
        }
    }
}
