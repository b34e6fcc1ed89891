//! The guidance class embedder (`model.data_label_embedder`): one learned vector per class
//! plus the null class (index `num_classes`), added to the timestep embedding.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

/// `num_classes + 1` conditioning vectors; the last is the null (unconditional) class.
#[derive(Module, Debug)]
pub struct ClassEmbedder {
    /// `[num_classes + 1, C]`.
    pub weight: Param<Tensor<2>>,
}

impl ClassEmbedder {
    /// The number of real classes (the null class is this index).
    pub fn num_classes(&self) -> usize {
        self.weight.val().dims()[0] - 1
    }

    /// The embeddings of class indices.
    ///
    /// # Shapes
    /// - `labels`: `[n]`; output: `[n, C]`
    pub fn forward(&self, labels: Tensor<1, Int>) -> Tensor<2> {
        self.weight.val().select(0, labels)
    }

    /// The null class's embedding.
    ///
    /// # Shapes
    /// - output: `[1, C]`
    pub fn null(&self) -> Tensor<2> {
        let w = self.weight.val();
        let n = w.dims()[0];
        w.narrow(0, n - 1, 1)
    }
}
