//! The validation split: separate files, or a seeded fraction of the training conversations.
//!
//! The split is made per **conversation**, before conversations are expanded into examples,
//! so no turn of a validation conversation is trained on (the reference holds out a tail of
//! the expanded examples, which can split a conversation's turns between the two sets).

use std::path::PathBuf;

use l2d_core::HostRng;

use super::Conversation;
use crate::error::{Result, TrainError};

/// Where validation data comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ValidationSplit {
    /// No validation.
    #[default]
    None,
    /// A fraction in `(0, 1)` of the training conversations, chosen with the run seed.
    Fraction(f64),
    /// Separate chat files.
    Files(Vec<PathBuf>),
}

/// Stream id separating the split from other uses of the run seed.
const SPLIT_STREAM: u64 = 0x5350_4c54; // "SPLT"

/// Splits conversations into `(train, validation)`: `round(fraction * n)` of them (at least
/// one, and at least one left to train on) chosen by a seeded permutation; both parts keep
/// file order.
///
/// # Errors
/// [`TrainError::Config`] if `fraction` is not in `(0, 1)` or there are fewer than two
/// conversations.
pub fn split_conversations(
    conversations: Vec<Conversation>,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<Conversation>, Vec<Conversation>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(TrainError::config(
            "validation.fraction",
            format!("must be in (0, 1), got {fraction}"),
        ));
    }
    let n = conversations.len();
    if n < 2 {
        return Err(TrainError::config(
            "validation.fraction",
            format!("cannot hold out a fraction of {n} conversation(s)"),
        ));
    }
    let n_valid = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = HostRng::new(seed).derive(SPLIT_STREAM);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut is_valid = vec![false; n];
    for &i in &order[..n_valid] {
        is_valid[i] = true;
    }
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for (c, v) in conversations.into_iter().zip(is_valid) {
        if v {
            valid.push(c);
        } else {
            train.push(c);
        }
    }
    Ok((train, valid))
}
