//! The seven projections of a decoder layer, by name, and the hook through which an adapter
//! (a LoRA baseline) adds a trainable update to them.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Tensor;

use super::layer::DecoderLayer;
use super::linear::FrozenLinear;

/// One of a decoder layer's projections, named as in Hugging Face checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl Projection {
    /// All seven, in checkpoint order.
    pub const ALL: [Projection; 7] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::O,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    /// The module name (`q_proj`, ..., `down_proj`).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
            Projection::Gate => "gate_proj",
            Projection::Up => "up_proj",
            Projection::Down => "down_proj",
        }
    }

    /// The path inside a layer (`self_attn.q_proj`, `mlp.down_proj`).
    pub fn path(self) -> &'static str {
        match self {
            Projection::Q => "self_attn.q_proj",
            Projection::K => "self_attn.k_proj",
            Projection::V => "self_attn.v_proj",
            Projection::O => "self_attn.o_proj",
            Projection::Gate => "mlp.gate_proj",
            Projection::Up => "mlp.up_proj",
            Projection::Down => "mlp.down_proj",
        }
    }
}

impl fmt::Display for Projection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown projection name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown projection {0:?}; expected one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
)]
pub struct UnknownProjection(pub String);

impl FromStr for Projection {
    type Err = UnknownProjection;

    /// `q_proj` or `q`, ..., `down_proj` or `down`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.strip_suffix("_proj").unwrap_or(s);
        Projection::ALL
            .into_iter()
            .find(|p| p.name().strip_suffix("_proj") == Some(name))
            .ok_or_else(|| UnknownProjection(s.to_string()))
    }
}

impl DecoderLayer {
    /// The frozen projection `p` of this layer.
    pub fn projection(&self, p: Projection) -> &FrozenLinear {
        match p {
            Projection::Q => &self.self_attn.q_proj,
            Projection::K => &self.self_attn.k_proj,
            Projection::V => &self.self_attn.v_proj,
            Projection::O => &self.self_attn.o_proj,
            Projection::Gate => &self.mlp.gate_proj,
            Projection::Up => &self.mlp.up_proj,
            Projection::Down => &self.mlp.down_proj,
        }
    }

    /// The frozen projection `p` of this layer, mutably (to replace it).
    pub fn projection_mut(&mut self, p: Projection) -> &mut FrozenLinear {
        match p {
            Projection::Q => &mut self.self_attn.q_proj,
            Projection::K => &mut self.self_attn.k_proj,
            Projection::V => &mut self.self_attn.v_proj,
            Projection::O => &mut self.self_attn.o_proj,
            Projection::Gate => &mut self.mlp.gate_proj,
            Projection::Up => &mut self.mlp.up_proj,
            Projection::Down => &mut self.mlp.down_proj,
        }
    }
}

/// Additive updates of one layer's projections: the layer computes `W x + b + delta(p, x)`
/// for each projection `p` that has one (a LoRA adapter's `(x A B)·scale`).
pub trait LayerDelta {
    /// The update of projection `p` on its input `x`, or `None`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_in]`; output: `[batch, seq, d_out]`
    fn delta(&self, p: Projection, x: Tensor<3>) -> Option<Tensor<3>>;
}

/// Per-layer [`LayerDelta`]s of a whole decoder.
pub trait DecoderDelta {
    /// Layer `index`'s updates, or `None`.
    fn layer(&self, index: usize) -> Option<&dyn LayerDelta>;
}

/// `linear(x)` plus the delta of projection `p`, when there is one.
pub(crate) fn project(
    linear: &FrozenLinear,
    p: Projection,
    x: Tensor<3>,
    delta: Option<&dyn LayerDelta>,
) -> Tensor<3> {
    match delta {
        None => linear.forward(x),
        Some(d) => {
            let y = linear.forward(x.clone());
            match d.delta(p, x) {
                Some(u) => y + u,
                None => y,
            }
        }
    }
}
