//! One decoder layer of the diffusion path: DiT-modulated norms, a query on the frozen keys
//! and values, and the SwiGLU MLP, with the diffusion path's own projections (the reference's
//! `FlowLlamaDecoderLayer.forward` with `compute_only_flow`).

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Tensor};

use super::error::DiffusionError;
use super::keys::Keyed;
use super::modulation::{ConditioningHead, LayerModulation};
use super::projection::{FlowProjection, ProjectionKind};
use crate::decoder::{DecoderLayer, LayerKv, RopeCosSin, attention, merge_heads, split_heads};
use crate::l2d_config::ResolvedDims;

/// The diffusion path's parameters of one decoder layer.
#[derive(Module, Debug)]
pub struct FlowLayer {
    /// `model.layers.N.modulation_head`: conditioning → 6 (or 2) modulation vectors.
    pub modulation_head: ConditioningHead,
    /// `self_attn.flow_q_proj`.
    pub q_proj: FlowProjection,
    /// `self_attn.flow_o_proj`.
    pub o_proj: FlowProjection,
    /// `mlp.flow_gate_proj`.
    pub gate_proj: FlowProjection,
    /// `mlp.flow_up_proj`.
    pub up_proj: FlowProjection,
    /// `mlp.flow_down_proj`.
    pub down_proj: FlowProjection,
}

impl FlowLayer {
    /// Layer `base`'s diffusion parameters at `vb` (`model.layers.N`): the modulation head
    /// (`modulation_head`, `C → C → chunks·hidden`) and the five projections under their
    /// reference names.
    pub(crate) fn build(
        vb: &mut Keyed<'_, '_>,
        dims: &ResolvedDims,
        kind: ProjectionKind,
        base: Option<&DecoderLayer>,
    ) -> Result<Self, DiffusionError> {
        let (h, aw, im) = (dims.hidden, dims.attn_width, dims.intermediate);
        let modulation_head = ConditioningHead::build(
            &mut vb.pp("modulation_head"),
            dims.cond_dim,
            dims.modulation_chunks * h,
        )?;
        let mut proj = |name: &str, d_in, d_out, frozen| {
            FlowProjection::build(&mut vb.pp(name), kind, d_in, d_out, frozen)
        };
        Ok(FlowLayer {
            modulation_head,
            q_proj: proj(
                "self_attn.flow_q_proj",
                h,
                aw,
                base.map(|b| &b.self_attn.q_proj),
            )?,
            o_proj: proj(
                "self_attn.flow_o_proj",
                aw,
                h,
                base.map(|b| &b.self_attn.o_proj),
            )?,
            gate_proj: proj("mlp.flow_gate_proj", h, im, base.map(|b| &b.mlp.gate_proj))?,
            up_proj: proj("mlp.flow_up_proj", h, im, base.map(|b| &b.mlp.up_proj))?,
            down_proj: proj("mlp.flow_down_proj", im, h, base.map(|b| &b.mlp.down_proj))?,
        })
    }

    /// Runs the layer on the flow hidden state `f`:
    ///
    /// ```text
    /// h = norm(f) ⊙ (w₁ + γ₁) + β₁
    /// f = f + α₁ ⊙ o_proj(attention(rope(q_proj(h)), K_frozen, V_frozen, mask))
    /// h = norm(f) ⊙ (w₂ + γ₂) + β₂
    /// f = f + α₂ ⊙ down_proj(silu(gate_proj(h)) ⊙ up_proj(h))
    /// ```
    ///
    /// where `w₁`, `w₂` are the frozen norm gains and the projections are the diffusion
    /// path's (frozen weight + LoRA, or full copies). Queries never attend to other flow
    /// tokens, only to the frozen path's keys/values.
    ///
    /// # Shapes
    /// - `f`: `[batch, n, hidden]`
    /// - `modulation`: chunks of `[batch or 1, n or 1, hidden]`, in `f`'s dtype
    /// - `kv`: `[batch, kv_heads, keys, head_dim]`; `rope`: `[batch or 1, 1, n, head_dim]`
    /// - `mask`: `[batch or 1, 1, n, keys]`
    /// - output: `[batch, n, hidden]`
    pub fn forward(
        &self,
        base: &DecoderLayer,
        f: Tensor<3>,
        modulation: &LayerModulation,
        kv: &LayerKv,
        rope: &RopeCosSin,
        mask: Option<Tensor<4, Bool>>,
    ) -> Tensor<3> {
        let h = f.dims()[2];
        let gain = |w: Tensor<1>, offset: &Tensor<3>| w.reshape([1, 1, h]) + offset.clone();
        let shift = |x: Tensor<3>, s: &Option<Tensor<3>>| match s {
            Some(s) => x + s.clone(),
            None => x,
        };
        let gate = |x: Tensor<3>, g: &Option<Tensor<3>>| match g {
            Some(g) => x * g.clone(),
            None => x,
        };

        let attn = &base.self_attn;
        let x = base.input_layernorm.normalize(f.clone())
            * gain(base.input_layernorm.weight.val(), &modulation.input_weight);
        let x = shift(x, &modulation.input_shift);
        let q = rope.apply(split_heads(
            self.q_proj.forward(&attn.q_proj, x),
            attn.num_heads,
        ));
        let a = attention(q, kv.k.clone(), kv.v.clone(), mask);
        let o = self.o_proj.forward(&attn.o_proj, merge_heads(a));
        let f = f + gate(o, &modulation.attn_gate);

        let norm = &base.post_attention_layernorm;
        let x = norm.normalize(f.clone()) * gain(norm.weight.val(), &modulation.post_weight);
        let x = shift(x, &modulation.post_shift);
        let mlp = &base.mlp;
        let inner = silu(self.gate_proj.forward(&mlp.gate_proj, x.clone()))
            * self.up_proj.forward(&mlp.up_proj, x);
        let m = self.down_proj.forward(&mlp.down_proj, inner);
        f + gate(m, &modulation.mlp_gate)
    }

    /// The modulation head's output for conditioning `c` (and `c_0` when modulations are
    /// frozen at flow start), split into its chunks and cast to `dtype`.
    ///
    /// # Shapes
    /// - `c`, `c0`: `[B, N, C]`; chunks: `[B, N, hidden]`
    pub fn modulation(
        &self,
        c: Tensor<3>,
        c0: Option<Tensor<3>>,
        chunks: usize,
        dtype: burn::tensor::DType,
    ) -> LayerModulation {
        let out = self.modulation_head.forward(c).cast(dtype);
        let at_start = c0.map(|c0| self.modulation_head.forward(c0).cast(dtype));
        LayerModulation::split(out, chunks, at_start)
    }
}
