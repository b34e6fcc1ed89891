//! Running the conditional and unconditional branches in one batched forward.
//!
//! Stack the state twice along the batch dimension (dimension 0) and pair it with the class
//! labels followed by as many null labels (the reference's null class is `num_classes`, the
//! last row of its `num_classes + 1` label embeddings). One model call then returns
//! `[v_c; v_u]`, which [`split_branches`] separates.

use burn::tensor::{Int, Tensor};

use crate::error::{Error, Result};

/// `[x; x]`: the state repeated for the conditional then the unconditional branch.
///
/// # Shapes
/// - `x`: `[b, ...]`; output: `[2b, ...]`
pub fn stack_branches<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::cat(vec![x.clone(), x], 0)
}

/// `[labels; null_class ...]`: the class labels for the conditional branch followed by the
/// null class for the unconditional one.
///
/// # Shapes
/// - `labels`: `[b, ...]` (e.g. `[b]` per sequence, `[b, s]` per position); output: `[2b, ...]`
pub fn stack_labels<const D: usize>(labels: Tensor<D, Int>, null_class: usize) -> Tensor<D, Int> {
    let null = Tensor::<D, Int>::full(labels.shape(), null_class as i64, &labels.device());
    Tensor::cat(vec![labels, null], 0)
}

/// Splits a stacked output `[v_c; v_u]` into `(v_c, v_u)`.
///
/// # Shapes
/// - `stacked`: `[2b, ...]`; outputs: `[b, ...]` each
///
/// # Errors
/// [`Error::OddBatch`] if dimension 0 is odd or zero.
pub fn split_branches<const D: usize>(stacked: Tensor<D>) -> Result<(Tensor<D>, Tensor<D>)> {
    let batch = stacked.dims()[0];
    if batch == 0 || !batch.is_multiple_of(2) {
        return Err(Error::OddBatch { batch });
    }
    let half = batch / 2;
    let conditional = stacked.clone().narrow(0, 0, half);
    let unconditional = stacked.narrow(0, half, half);
    Ok((conditional, unconditional))
}
