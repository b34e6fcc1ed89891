//! One pre-norm decoder layer (`LlamaDecoderLayer`).

use burn::module::Module;
use burn::tensor::{Bool, Tensor};

use super::attention::{Attention, attention};
use super::cache::LayerKv;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::projection::LayerDelta;
use super::rope::RopeCosSin;

/// `x + attn(input_layernorm(x))`, then `+ mlp(post_attention_layernorm(·))`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Self-attention projections.
    pub self_attn: Attention,
    /// Feed-forward block.
    pub mlp: Mlp,
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// The layer's attention window (`None` = full causal attention).
    pub sliding_window: Option<usize>,
}

impl DecoderLayer {
    /// Runs the layer on new positions, attending to `past` keys/values followed by the new
    /// ones, with `delta`'s updates (if any) added to its projections. Returns the layer output and the keys/values of past + new positions (keys after
    /// RoPE, before the grouped-query repeat), ready to be stored in a cache.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `rope`: tables of `[batch or 1, 1, seq, head_dim]` for the new positions
    /// - `mask`: `[batch or 1, 1, seq, past + seq]` (`true` = masked), see
    ///   [`causal_mask`](super::attention::causal_mask)
    /// - `past`: `[batch, kv_heads, past, head_dim]`
    /// - output: `[batch, seq, hidden]` and keys/values `[batch, kv_heads, past + seq, head_dim]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &RopeCosSin,
        mask: Option<Tensor<4, Bool>>,
        past: Option<&LayerKv>,
        delta: Option<&dyn LayerDelta>,
    ) -> (Tensor<3>, LayerKv) {
        let h = self.input_layernorm.forward(x.clone());
        let q = self.self_attn.query(h.clone(), rope, delta);
        let (k, v) = self.self_attn.key_value(h, rope, delta);
        let kv = match past {
            Some(p) if !p.is_empty() => LayerKv {
                k: Tensor::cat(vec![p.k.clone(), k], 2),
                v: Tensor::cat(vec![p.v.clone(), v], 2),
            },
            _ => LayerKv { k, v },
        };
        let a = attention(q, kv.k.clone(), kv.v.clone(), mask);
        let x = x + self.self_attn.output(a, delta);
        let out = x.clone()
            + self
                .mlp
                .forward(self.post_attention_layernorm.forward(x), delta);
        (out, kv)
    }
}
