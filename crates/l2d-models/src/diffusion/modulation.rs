//! Conditioning heads: the per-layer DiT-style modulation (`model.layers.N.modulation_head`)
//! and the final output gate (`model.modulation_head`), each `Linear(C, C) → SiLU →
//! Linear(C, k·hidden)` with a zero-initialised last layer.

use burn::module::Module;
use burn::tensor::Tensor;

use super::error::DiffusionError;
use super::keys::Keyed;
use super::mlp::SimpleMlp;
use super::source::LinearInit;

/// A conditioning head: conditioning vectors to `k` vectors of the hidden width.
#[derive(Module, Debug)]
pub struct ConditioningHead {
    /// `C → C → k·hidden`.
    pub mlp: SimpleMlp,
}

impl ConditioningHead {
    /// The head `C → C → out` at `vb` (its MLP at `vb.mlp`), the last layer zero so a fresh
    /// head outputs zeros.
    pub(crate) fn build(
        vb: &mut Keyed<'_, '_>,
        cond: usize,
        out: usize,
    ) -> Result<Self, DiffusionError> {
        let last_zero = |i: usize, n: usize| {
            if i + 1 == n {
                LinearInit::Zero
            } else {
                LinearInit::Xavier
            }
        };
        Ok(Self {
            mlp: SimpleMlp::build(&mut vb.pp("mlp"), &[cond, cond, out], &last_zero)?,
        })
    }

    /// The head's output, in the conditioning's dtype.
    ///
    /// # Shapes
    /// - `c`: `[B, N, C]` (`B` is 1 or the batch, `N` is 1 or the positions)
    /// - output: `[B, N, k·hidden]`
    pub fn forward(&self, c: Tensor<3>) -> Tensor<3> {
        self.mlp.forward(c)
    }

    /// `forward(c) - forward(c0)` (the gate that leaves the base unchanged at `t = 0`), with
    /// the last layer's bias, which cancels, out of the gradient
    /// ([`SimpleMlp::forward_difference`]).
    ///
    /// # Shapes
    /// - `c`: `[B, N, C]`; `c0`: `[B', N', C]`, broadcastable with `c`
    /// - output: `[max(B, B'), max(N, N'), k·hidden]`
    pub fn difference(&self, c: Tensor<3>, c0: Tensor<3>) -> Tensor<3> {
        self.mlp.forward_difference(c, c0)
    }
}

/// One layer's modulation of the diffusion path, in the reference's chunk order:
/// input-norm weight offset `γ₁`, input shift `β₁`, attention-output gate `α₁`,
/// post-attention-norm weight offset `γ₂`, post-attention shift `β₂`, MLP-output gate `α₂`.
/// With `full_dit_modulation = false` only the two weight offsets exist.
#[derive(Debug, Clone)]
pub struct LayerModulation {
    /// `γ₁`, `[B, N, hidden]`: the input norm's gain is `w + γ₁`.
    pub input_weight: Tensor<3>,
    /// `β₁`.
    pub input_shift: Option<Tensor<3>>,
    /// `α₁` (already `1 + α₁ - α₁(0)` when frozen at flow start).
    pub attn_gate: Option<Tensor<3>>,
    /// `γ₂`.
    pub post_weight: Tensor<3>,
    /// `β₂`.
    pub post_shift: Option<Tensor<3>>,
    /// `α₂`.
    pub mlp_gate: Option<Tensor<3>>,
}

impl LayerModulation {
    /// Splits a head's output into its chunks; with `at_start` (the head at `t = 0`) every
    /// chunk is offset by its value there and the gates become `1 + α - α(0)` (the reference's
    /// `freeze_modulation_at_flow_start`).
    ///
    /// # Shapes
    /// - `out`, `at_start`: `[B, N, chunks·hidden]`; every chunk `[B, N, hidden]`
    pub fn split(out: Tensor<3>, chunks: usize, at_start: Option<Tensor<3>>) -> Self {
        let h = out.dims()[2] / chunks;
        let out = match &at_start {
            Some(s) => out - s.clone(),
            None => out,
        };
        let part = |i: usize| out.clone().narrow(2, i * h, h);
        let gate = |i: usize| {
            let g = part(i);
            if at_start.is_some() {
                g.add_scalar(1.0)
            } else {
                g
            }
        };
        if chunks == 6 {
            Self {
                input_weight: part(0),
                input_shift: Some(part(1)),
                attn_gate: Some(gate(2)),
                post_weight: part(3),
                post_shift: Some(part(4)),
                mlp_gate: Some(gate(5)),
            }
        } else {
            Self {
                input_weight: part(0),
                input_shift: None,
                attn_gate: None,
                post_weight: part(1),
                post_shift: None,
                mlp_gate: None,
            }
        }
    }
}
