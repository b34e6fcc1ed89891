//! The flow-token embedder: the flow representation `V_y` of every token `y`
//! (the reference's `flow_token_embedder` and `get_flow_representation_for_tokens`).
//!
//! `mapping`: `V_y = rescale · normalize(MLP(E_y))` with `E` the frozen input embedding;
//! `embedding`: `MLP` is the identity; `one-hot`: a learned table replaces `MLP(E_y)`.
//! Normalisation is L2 along the last axis (PyTorch's `F.normalize`), and the rescaling
//! `mult` gives every representation the norm `sqrt(d)`.

use burn::module::{Module, Param};
use burn::tensor::{DType, Int, Tensor};
use l2d_core::{Rescaling, normalize_flow_representation};

use super::mlp::SimpleMlp;
use crate::decoder::CausalLm;
use crate::l2d_config::FlowSpace;

/// The flow-token embedder.
#[derive(Module, Debug)]
pub struct FlowTokenEmbedder {
    /// The `mapping` MLP (`model.flow_token_embedder.embedder.layers_module.*`); `None` for the
    /// other spaces.
    pub mapping: Option<SimpleMlp>,
    /// The `one-hot` table `[vocab, d]` (`model.flow_token_embedder.embedding_table.weight`).
    pub table: Option<Param<Tensor<2>>>,
    /// Whether representations are L2-normalised.
    pub normalize: bool,
    #[module(skip)]
    space: FlowSpace,
    #[module(skip)]
    rescaling: Rescaling,
}

impl FlowTokenEmbedder {
    /// Assembles an embedder (the MLP for `mapping`, the table for `one-hot`).
    pub fn new(
        space: FlowSpace,
        mapping: Option<SimpleMlp>,
        table: Option<Param<Tensor<2>>>,
        normalize: bool,
        rescaling: Rescaling,
    ) -> Self {
        Self {
            mapping,
            table,
            normalize,
            space,
            rescaling,
        }
    }

    /// The representation space.
    pub fn space(&self) -> FlowSpace {
        self.space
    }

    fn finish<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.normalize {
            normalize_flow_representation(x, self.rescaling)
        } else {
            x
        }
    }

    fn map_embeddings<const D: usize>(&self, e: Tensor<D>) -> Tensor<D> {
        match &self.mapping {
            Some(mlp) => mlp.forward(e),
            None => e,
        }
    }

    /// The flow representations of tokens, in the base model's dtype (the reference's
    /// `get_flow_representation_for_tokens`).
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]`; output: `[batch, seq, d]`
    pub fn tokens(&self, base: &CausalLm, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let raw = match &self.table {
            Some(table) => {
                let t = table.val();
                let d = t.dims()[1];
                t.select(0, ids.reshape([b * s]))
                    .reshape([b, s, d])
                    .cast(base.dtype())
            }
            None => self.map_embeddings(base.model.embed_tokens.forward(ids)),
        };
        self.finish(raw)
    }

    /// The flow representation of every token of the vocabulary, in f32 (the reference's
    /// `flow_embedding_table.float()`). Compute it once per model and reuse it: it depends only
    /// on the weights (the reference recomputes it at every velocity evaluation).
    ///
    /// # Shapes
    /// - output: `[vocab, d]`
    pub fn vocabulary(&self, base: &CausalLm) -> Tensor<2> {
        let raw = match &self.table {
            Some(table) => table.val(),
            None => self.map_embeddings(base.model.embed_tokens.weight.val()),
        };
        self.finish(raw).cast(DType::F32)
    }
}
