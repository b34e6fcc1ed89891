//! One optimizer step of any [`Objective`], apart from where its batches come from: each
//! micro-batch's loss and gradients ([`Stepper::micro_step`]), summed, then AdamW with its
//! clipping at a given rate ([`Stepper::update`]).
//!
//! [`crate::trainer::Trainer`] drives a [`Stepper`] from the epoch order of a run's files and
//! adds the run's logging, validation, checkpoints and non-finite policy; a program with
//! batches of its own (the quickstart's demo draws fresh problems every step) drives it
//! directly.
//!
//! ```
//! use burn::tensor::{DType, Device};
//! use l2d_core::HostRng;
//! use l2d_models::config::ModelConfig;
//! use l2d_models::decoder::{CausalLm, Projection};
//! use l2d_models::lora::{DecoderLora, LoraConfig};
//! use l2d_train::data::{TokenizedExample, collate};
//! use l2d_train::optim::{AdamW, AdamWConfig};
//! use l2d_train::stepper::Stepper;
//!
//! let config = ModelConfig::from_json_str(
//!     r#"{"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
//!         "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
//!         "num_key_value_heads": 1}"#,
//! )?;
//! let device = Device::flex();
//! let base = CausalLm::random(&config, &device, DType::F32, 0);
//! let lora = DecoderLora::init(&LoraConfig::new(2, 2.0, Projection::ALL.to_vec()), &base, 1)?;
//! let mut stepper = Stepper::new(lora, AdamW::new(AdamWConfig::default()), &device);
//! // One example: inputs 1..=5, the last two scored (their labels are the next tokens).
//! let example = TokenizedExample {
//!     input_ids: vec![1, 2, 3, 4, 5],
//!     labels: vec![-100, -100, -100, 5, 6],
//!     class_id: None,
//!     conversation: 0,
//! };
//! let batch = collate(&[&example], 0, &device);
//! let micro = stepper.micro_step(&base, &batch, &mut HostRng::new(0), 1.0)?;
//! assert!(micro.accumulated && micro.loss.is_finite());
//! let update = stepper.update(1e-3).expect("a micro-batch gave a gradient");
//! assert!(update.applied && update.grad_norm > 0.0);
//! assert_eq!(stepper.adam().steps(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::tensor::Device;
use l2d_core::HostRng;
use l2d_models::decoder::CausalLm;

use crate::data::Batch;
use crate::error::Result;
use crate::objective::Objective;
use crate::optim::{AdamW, GradientBuffer};
use crate::step::trainable;

/// An adapter being trained, with its optimizer and the gradients summed since the last
/// update.
pub struct Stepper<O: Objective> {
    /// The adapter; taken out only while AdamW maps it to its updated values.
    adapter: Option<O>,
    adam: AdamW,
    buffer: GradientBuffer,
}

/// What one micro-batch gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicroResult {
    /// Its mean loss over scored tokens (before any accumulation scaling).
    pub loss: f64,
    /// Scored tokens.
    pub scored: usize,
    /// Whether its gradients were added to the sum: false for a non-finite loss, or when
    /// nothing was scored.
    pub accumulated: bool,
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateResult {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the update was applied (false for a non-finite norm: the adapter and the
    /// optimizer state are left as they were).
    pub applied: bool,
}

impl<O: Objective> Stepper<O> {
    /// Starts training `adapter` (moved to the autodiff form of `device`, every parameter
    /// trainable) with `adam` (fresh, or restored from a checkpoint).
    pub fn new(adapter: O, adam: AdamW, device: &Device) -> Self {
        Stepper {
            adapter: Some(trainable(adapter, device)),
            adam,
            buffer: GradientBuffer::new(),
        }
    }

    /// The adapter being trained (on the autodiff device).
    pub fn adapter(&self) -> &O {
        self.adapter
            .as_ref()
            .expect("the adapter is only taken inside `update`")
    }

    /// The optimizer (its state is what a checkpoint saves).
    pub fn adam(&self) -> &AdamW {
        &self.adam
    }

    /// The adapter, ending the training (still on the autodiff device: `.valid()` gives the
    /// plain copy).
    pub fn into_adapter(self) -> O {
        self.adapter
            .expect("the adapter is only taken inside `update`")
    }

    /// One micro-batch through [`Objective::micro_step`] (its random inputs drawn from `rng`),
    /// its gradients of `loss × loss_scale` added to the sum when the loss is finite.
    ///
    /// # Errors
    /// The objective's errors.
    pub fn micro_step(
        &mut self,
        base: &CausalLm,
        batch: &Batch,
        rng: &mut HostRng,
        loss_scale: f64,
    ) -> Result<MicroResult> {
        let outcome = self.adapter().micro_step(base, batch, rng, loss_scale)?;
        let accumulated = match outcome.grads {
            Some(grads) => {
                let adapter = self
                    .adapter
                    .as_ref()
                    .expect("the adapter is only taken inside `update`");
                self.buffer.accumulate(adapter, &grads, 1.0);
                true
            }
            None => false,
        };
        Ok(MicroResult {
            loss: outcome.loss,
            scored: outcome.scored,
            accumulated,
        })
    }

    /// One AdamW update at rate `lr` from the summed gradients ([`AdamW::update`]: clipping,
    /// then the step when the norm is finite); the sum is empty afterwards. `None` when no
    /// micro-batch since the last update gave a gradient (nothing changes).
    pub fn update(&mut self, lr: f64) -> Option<UpdateResult> {
        if self.buffer.is_empty() {
            return None;
        }
        let adapter = self.adapter.take()?;
        let outcome = self.adam.update(adapter, lr, &mut self.buffer);
        self.adapter = Some(outcome.module);
        Some(UpdateResult {
            grad_norm: outcome.grad_norm,
            applied: outcome.applied,
        })
    }
}
