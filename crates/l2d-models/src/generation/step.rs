//! The per-token seam of generation: "given the cache and the newest tokens, produce the
//! next token's logits".
//!
//! [`generate`](super::generate) owns everything around a step (padding, positions,
//! sampling, stops, streaming, statistics) and calls a [`TokenStep`] once for the prompt and
//! once per new token. [`BaseStep`] is the plain frozen model. A diffusion generator
//! replaces only this step: run the frozen path once over the new tokens (extending the
//! cache and giving the frozen hidden state), integrate the diffusion path's flow state for
//! the last position, and return the logits at `t = 1`; with zero diffusion steps it must
//! return exactly what [`BaseStep`] returns.

use burn::tensor::{Device, Int, Tensor};

use super::GenerationError;
use crate::decoder::{CausalLm, ForwardOptions, KvCache, StepContext};

/// One model evaluation of autoregressive generation.
///
/// The generation loop calls [`TokenStep::next_logits`] first with the (left-padded) prompt
/// batch and an empty cache (prefill), then once per new token with the `[batch, 1]` tokens
/// just chosen. Each call must append its positions to `cache` and return the logits of the
/// token that follows the **last** input position of every row.
pub trait TokenStep {
    /// The size of the vocabulary the logits cover (prompt ids are checked against it).
    fn vocab_size(&self) -> usize;

    /// The device tensors are created on.
    fn device(&self) -> Device;

    /// The most positions a sequence may hold (the model's `max_position_embeddings`), or
    /// `None` for no limit. A prompt longer than this is refused, and a row stops with
    /// [`StopReason::ContextFull`](super::StopReason::ContextFull) when it fills it.
    fn context_length(&self) -> Option<usize> {
        None
    }

    /// Feeds `input_ids` after the positions already in `cache`, extends the cache and returns
    /// the next-token logits of every row.
    ///
    /// `options` carries the padding mask (covering cached and new positions) and RoPE
    /// positions of left-padded batches, in [`CausalLm::forward_with`]'s conventions; both
    /// are `None` when no row is padded.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` (`seq` = padded prompt length at prefill, then 1)
    /// - `options.attention_mask`: `[batch, past + seq]`; `options.position_ids`:
    ///   `[batch, seq]`
    /// - output: `[batch, vocab]`, any float dtype
    ///
    /// # Errors
    /// Implementations report their own failures as [`GenerationError::Step`].
    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError>;
}

impl<S: TokenStep + ?Sized> TokenStep for &mut S {
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }

    fn device(&self) -> Device {
        (**self).device()
    }

    fn context_length(&self) -> Option<usize> {
        (**self).context_length()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        (**self).next_logits(input_ids, cache, options)
    }
}

/// The frozen model's next-token logits: the decoder over the new tokens, then the final
/// norm and LM head on the last position only (the prompt's other positions never reach the
/// vocabulary-sized head).
#[derive(Debug, Clone, Copy)]
pub struct BaseStep<'m> {
    model: &'m CausalLm,
}

impl<'m> BaseStep<'m> {
    /// The step of `model`.
    pub fn new(model: &'m CausalLm) -> Self {
        BaseStep { model }
    }

    /// The model.
    pub fn model(&self) -> &'m CausalLm {
        self.model
    }
}

impl BaseStep<'_> {
    /// The frozen half of a step: runs the decoder over `input_ids` (extending `cache`) and
    /// returns the last position's pre-norm hidden state with the step context (RoPE tables
    /// and masks) it used. [`TokenStep::next_logits`] is [`CausalLm::logits`] of it; a
    /// diffusion step starts from the same state, so with no diffusion step it returns the
    /// very same logits.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`
    /// - output: `[batch, 1, hidden]`
    pub fn frozen_last(
        &self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> (Tensor<3>, StepContext) {
        let (hidden, context) = self.model.forward_hidden(input_ids, Some(cache), options);
        let seq = hidden.dims()[1];
        (hidden.narrow(1, seq - 1, 1), context)
    }
}

impl TokenStep for BaseStep<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn context_length(&self) -> Option<usize> {
        Some(self.model.config().max_position_embeddings)
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let (last, _) = self.frozen_last(input_ids, cache, options);
        let batch = last.dims()[0];
        let logits = self.model.logits(last);
        Ok(logits.reshape([batch, self.vocab_size()]))
    }
}
