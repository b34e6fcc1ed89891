//! Right-padded batches and the seeded order in which examples are visited.

use burn::tensor::{Device, Int, Tensor, TensorData};
use l2d_core::HostRng;
use serde::{Deserialize, Serialize};

use super::encode::{IGNORE_INDEX, TokenizedExample};

/// A micro-batch on a device. Padding is on the right, masked out of attention
/// (`attention_mask` 0) and never scored (label [`IGNORE_INDEX`]).
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// Shifted labels, `[batch, seq]`, [`IGNORE_INDEX`] where not scored.
    pub labels: Tensor<2, Int>,
    /// 1 for a token, 0 for padding, `[batch, seq]`.
    pub attention_mask: Tensor<2, Int>,
    /// Class ids, `[batch]`, when guidance classes are configured.
    pub class_ids: Option<Tensor<1, Int>>,
    /// The labels on the host, row-major `[batch * seq]`.
    pub host_labels: Vec<i64>,
    /// Each row's unpadded length.
    pub lengths: Vec<usize>,
    /// Scored positions in the batch.
    pub num_scored: usize,
}

impl Batch {
    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        self.input_ids.dims()
    }
}

/// Pads `examples` on the right to the longest and puts them on `device`.
///
/// # Shapes
/// - output tensors: `[examples.len(), max length]` (class ids `[examples.len()]`)
///
/// # Panics
/// If `examples` is empty.
pub fn collate(examples: &[&TokenizedExample], pad_id: u32, device: &Device) -> Batch {
    assert!(!examples.is_empty(), "collate needs at least one example");
    let b = examples.len();
    let s = examples.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![i64::from(pad_id); b * s];
    let mut labels = vec![IGNORE_INDEX; b * s];
    let mut mask = vec![0i64; b * s];
    for (r, e) in examples.iter().enumerate() {
        for (j, &t) in e.input_ids.iter().enumerate() {
            ids[r * s + j] = i64::from(t);
            labels[r * s + j] = e.labels[j];
            mask[r * s + j] = 1;
        }
    }
    let class_ids = if examples.iter().all(|e| e.class_id.is_some()) {
        let c: Vec<i64> = examples
            .iter()
            .map(|e| e.class_id.unwrap_or(0) as i64)
            .collect();
        Some(Tensor::<1, Int>::from_data(TensorData::new(c, [b]), device))
    } else {
        None
    };
    let num_scored = labels.iter().filter(|&&l| l != IGNORE_INDEX).count();
    Batch {
        input_ids: Tensor::from_data(TensorData::new(ids, [b, s]), device),
        labels: Tensor::from_data(TensorData::new(labels.clone(), [b, s]), device),
        attention_mask: Tensor::from_data(TensorData::new(mask, [b, s]), device),
        class_ids,
        host_labels: labels,
        lengths: examples.iter().map(|e| e.len()).collect(),
        num_scored,
    }
}

/// Where a run is in its data: the epoch and how many examples of that epoch's order were
/// consumed. Saved in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// The epoch (0-based).
    pub epoch: usize,
    /// Examples of this epoch already consumed.
    pub cursor: usize,
}

/// The order of examples in each epoch: a Fisher–Yates shuffle driven by a ChaCha20 stream
/// derived from the seed and the epoch, so any epoch's order is reproduced without replaying
/// earlier ones.
#[derive(Debug, Clone)]
pub struct EpochOrder {
    len: usize,
    seed: u64,
    shuffle: bool,
    epoch: usize,
    order: Vec<usize>,
}

/// Stream id separating the data order from other uses of the run seed.
const ORDER_STREAM: u64 = 0x5348_5546; // "SHUF"

impl EpochOrder {
    /// The order over `len` examples (`shuffle = false`: file order every epoch).
    pub fn new(len: usize, seed: u64, shuffle: bool) -> Self {
        let mut o = EpochOrder {
            len,
            seed,
            shuffle,
            epoch: usize::MAX,
            order: Vec::new(),
        };
        o.set_epoch(0);
        o
    }

    fn set_epoch(&mut self, epoch: usize) {
        if self.epoch == epoch {
            return;
        }
        self.epoch = epoch;
        self.order = (0..self.len).collect();
        if self.shuffle {
            let mut rng = HostRng::new(self.seed)
                .derive(ORDER_STREAM)
                .derive(epoch as u64);
            for i in (1..self.len).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
    }

    /// The number of examples per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The order of `epoch`.
    pub fn epoch_order(&mut self, epoch: usize) -> &[usize] {
        self.set_epoch(epoch);
        &self.order
    }

    /// The next micro-batch of at most `size` example indices from `position`, advancing it.
    /// An epoch's last batch may be short (nothing is dropped); the next call starts the next
    /// epoch.
    ///
    /// # Panics
    /// If there is no example or `size` is 0.
    pub fn next_batch(&mut self, position: &mut DataPosition, size: usize) -> Vec<usize> {
        assert!(self.len > 0 && size > 0, "empty data or zero batch size");
        if position.cursor >= self.len {
            position.epoch += 1;
            position.cursor = 0;
        }
        self.set_epoch(position.epoch);
        let end = (position.cursor + size).min(self.len);
        let out = self.order[position.cursor..end].to_vec();
        position.cursor = end;
        out
    }
}
