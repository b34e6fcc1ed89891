//! The diffusion path's trainable parameter count, analytically (without building anything).

use serde::{Deserialize, Serialize};

use super::error::DiffusionError;
use crate::config::ModelConfig;
use crate::l2d_config::{FlowSpace, L2dConfig};

/// Trainable parameters of a diffusion path, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ParamCount {
    /// The token map `W_v` (or the one-hot table).
    pub token_embedder: usize,
    /// The flow-to-LM MLP.
    pub encoder: usize,
    /// The timestep MLP.
    pub timestep_embedder: usize,
    /// The class embeddings.
    pub class_embedder: usize,
    /// The per-layer modulation heads.
    pub modulation_heads: usize,
    /// The q/o/gate/up/down LoRA factors or full copies.
    pub projections: usize,
    /// The final gate head.
    pub final_head: usize,
}

impl ParamCount {
    /// The sum of every part.
    pub fn total(&self) -> usize {
        self.token_embedder
            + self.encoder
            + self.timestep_embedder
            + self.class_embedder
            + self.modulation_heads
            + self.projections
            + self.final_head
    }
}

fn mlp(sizes: &[usize]) -> usize {
    sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
}

/// The parameter count of the diffusion path `config` builds on a base of `base` sizes
/// (equal to `num_params()` of the built path).
///
/// ```
/// use l2d_models::{diffusion::diffusion_param_count, l2d_config::L2dConfig, presets::preset};
/// // Llama-3.2-1B sizes at the released configuration: the paper's 73M.
/// let base = preset("llama-3.2-1b").unwrap();
/// let count = diffusion_param_count(&L2dConfig::default(), &base)?;
/// assert_eq!(count.total(), 73_344_256);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`DiffusionError::Config`] for a configuration invalid on this base.
pub fn diffusion_param_count(
    config: &L2dConfig,
    base: &ModelConfig,
) -> Result<ParamCount, DiffusionError> {
    let d = config.resolve(base)?;
    let (h, c) = (d.hidden, d.cond_dim);
    let token_embedder = match config.flow_representation_space {
        FlowSpace::Mapping => {
            let mut sizes = vec![h];
            sizes.extend(std::iter::repeat_n(d.flow_dim, d.flow_map_layers));
            mlp(&sizes)
        }
        FlowSpace::Embedding => 0,
        FlowSpace::OneHot => d.vocab * d.flow_dim,
    };
    let encoder = if d.encoder_layers == 0 {
        0
    } else {
        let mut sizes = vec![d.flow_dim];
        sizes.extend(std::iter::repeat_n(d.encoder_hidden, d.encoder_layers - 1));
        sizes.push(h);
        mlp(&sizes)
    };
    let mut sizes = vec![d.freq_dim];
    sizes.extend(std::iter::repeat_n(c, d.timestep_layers));
    let timestep_embedder = mlp(&sizes);
    let class_embedder = if d.num_classes > 0 {
        (d.num_classes + 1) * c
    } else {
        0
    };
    let modulation_heads = d.layers * mlp(&[c, c, d.modulation_chunks * h]);
    let (aw, im) = (d.attn_width, d.intermediate);
    let projection = |d_in: usize, d_out: usize, bias: bool| -> usize {
        if !config.separate_flow_params {
            0
        } else if config.separate_flow_params_with_lora {
            config.flow_lora_rank * (d_in + d_out)
        } else {
            d_in * d_out + if bias { d_out } else { 0 }
        }
    };
    let per_layer = projection(h, aw, base.qkv_bias())
        + projection(aw, h, base.o_bias())
        + 2 * projection(h, im, base.mlp_bias)
        + projection(im, h, base.mlp_bias);
    Ok(ParamCount {
        token_embedder,
        encoder,
        timestep_embedder,
        class_embedder,
        modulation_heads,
        projections: d.layers * per_layer,
        final_head: mlp(&[c, c, h]),
    })
}
