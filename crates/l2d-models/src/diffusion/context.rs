//! What the diffusion path reads from the frozen path: for the query positions, the final
//! pre-norm hidden state, their RoPE tables and attention masks; for every position up to the
//! last query, each layer's keys and values.

use burn::tensor::{Bool, Tensor};

use super::error::DiffusionError;
use crate::decoder::{FrozenOutput, KvCache, LayerKv, RopeCosSin, StepContext};

/// The frozen path's state that a diffusion-only forward needs.
///
/// Build it from a full frozen pass ([`FlowContext::from_frozen`], queries = every position)
/// or from an incremental step ([`FlowContext::new`] with the step's hidden state, the cache
/// after the step and the step's [`StepContext`]); narrow it to the positions whose next token
/// is being generated ([`FlowContext::last_query`]).
#[derive(Debug, Clone)]
pub struct FlowContext {
    /// Final pre-norm hidden state of the frozen path at the query positions,
    /// `[batch, n, hidden]`.
    pub hidden: Tensor<3>,
    /// Every layer's keys (after RoPE) and values, `[batch, kv_heads, keys, head_dim]`.
    pub kv: Vec<LayerKv>,
    /// RoPE tables of the query positions, `[batch or 1, 1, n, head_dim]`.
    pub rope: RopeCosSin,
    /// Each layer's mask (`true` = masked), `[batch or 1, 1, n, keys]`; `None` = all visible.
    pub masks: Vec<Option<Tensor<4, Bool>>>,
}

impl FlowContext {
    /// The context of a full-sequence frozen pass: the queries are all its positions.
    pub fn from_frozen(frozen: &FrozenOutput) -> Self {
        let kv = frozen.cache.layers().to_vec();
        let masks = (0..kv.len()).map(|i| frozen.context.mask(i)).collect();
        Self {
            hidden: frozen.hidden.clone(),
            kv,
            rope: frozen.context.rope.clone(),
            masks,
        }
    }

    /// The context of a frozen step over `context.seq_len` new positions whose output
    /// (`hidden`) and keys/values (already appended to `cache`) were just computed.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, context.seq_len, hidden]`
    ///
    /// # Errors
    /// [`DiffusionError::Shape`] when the hidden state or the cache do not match the step.
    pub fn new(
        hidden: Tensor<3>,
        cache: &KvCache,
        context: &StepContext,
    ) -> Result<Self, DiffusionError> {
        let [_, n, _] = hidden.dims();
        if n != context.seq_len {
            return Err(DiffusionError::Shape {
                tensor: "frozen hidden state",
                expected: format!(
                    "[batch, {}, hidden] (the step's positions)",
                    context.seq_len
                ),
                got: hidden.dims().to_vec(),
            });
        }
        if cache.seq_len() != context.past_len + context.seq_len {
            return Err(DiffusionError::Shape {
                tensor: "key/value cache",
                expected: format!(
                    "{} cached positions (past {} + step {})",
                    context.past_len + context.seq_len,
                    context.past_len,
                    context.seq_len
                ),
                got: vec![cache.seq_len()],
            });
        }
        let kv = cache.layers().to_vec();
        let masks = (0..kv.len()).map(|i| context.mask(i)).collect();
        Ok(Self {
            hidden,
            kv,
            rope: context.rope.clone(),
            masks,
        })
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.hidden.dims()[0]
    }

    /// Number of query positions.
    pub fn queries(&self) -> usize {
        self.hidden.dims()[1]
    }

    /// Number of key positions.
    pub fn keys(&self) -> usize {
        self.kv.first().map_or(0, LayerKv::len)
    }

    /// The context restricted to the queries `start .. start + len` (keys unchanged).
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] if the range exceeds the queries.
    pub fn narrow_queries(&self, start: usize, len: usize) -> Result<Self, DiffusionError> {
        let n = self.queries();
        if len == 0 || start + len > n {
            return Err(DiffusionError::Invalid {
                field: "query range",
                reason: format!(
                    "{start}..{} is not inside the {n} query positions",
                    start + len
                ),
            });
        }
        Ok(Self {
            hidden: self.hidden.clone().narrow(1, start, len),
            kv: self.kv.clone(),
            rope: RopeCosSin {
                cos: self.rope.cos.clone().narrow(2, start, len),
                sin: self.rope.sin.clone().narrow(2, start, len),
            },
            masks: self
                .masks
                .iter()
                .map(|m| m.as_ref().map(|m| m.clone().narrow(2, start, len)))
                .collect(),
        })
    }

    /// The context of the batch rows `start .. start + len` (tables and masks shared by the
    /// batch stay shared).
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] if the range exceeds the batch.
    pub fn narrow_batch(&self, start: usize, len: usize) -> Result<Self, DiffusionError> {
        let b = self.batch();
        if len == 0 || start + len > b {
            return Err(DiffusionError::Invalid {
                field: "batch range",
                reason: format!("{start}..{} is not inside the {b} rows", start + len),
            });
        }
        let rows4 = |t: &Tensor<4>| {
            if t.dims()[0] > 1 {
                t.clone().narrow(0, start, len)
            } else {
                t.clone()
            }
        };
        Ok(Self {
            hidden: self.hidden.clone().narrow(0, start, len),
            kv: self
                .kv
                .iter()
                .map(|l| LayerKv {
                    k: l.k.clone().narrow(0, start, len),
                    v: l.v.clone().narrow(0, start, len),
                })
                .collect(),
            rope: RopeCosSin {
                cos: rows4(&self.rope.cos),
                sin: rows4(&self.rope.sin),
            },
            masks: self
                .masks
                .iter()
                .map(|m| {
                    m.as_ref().map(|m| {
                        if m.dims()[0] > 1 {
                            m.clone().narrow(0, start, len)
                        } else {
                            m.clone()
                        }
                    })
                })
                .collect(),
        })
    }

    /// The context of the last query position only (the next token's prediction).
    pub fn last_query(&self) -> Self {
        let n = self.queries();
        self.narrow_queries(n - 1, 1)
            .expect("the last position is always inside the queries")
    }

    /// The context repeated `times` along the batch (the branches of classifier-free guidance
    /// in one forward).
    pub fn repeat_batch(&self, times: usize) -> Self {
        let rep4 = |t: &Tensor<4>| Tensor::cat(vec![t.clone(); times], 0);
        let rep_if_batched = |t: &Tensor<4>| if t.dims()[0] > 1 { rep4(t) } else { t.clone() };
        Self {
            hidden: Tensor::cat(vec![self.hidden.clone(); times], 0),
            kv: self
                .kv
                .iter()
                .map(|l| LayerKv {
                    k: rep4(&l.k),
                    v: rep4(&l.v),
                })
                .collect(),
            rope: RopeCosSin {
                cos: rep_if_batched(&self.rope.cos),
                sin: rep_if_batched(&self.rope.sin),
            },
            masks: self
                .masks
                .iter()
                .map(|m| {
                    m.as_ref().map(|m| {
                        if m.dims()[0] > 1 {
                            Tensor::cat(vec![m.clone(); times], 0)
                        } else {
                            m.clone()
                        }
                    })
                })
                .collect(),
        }
    }
}
