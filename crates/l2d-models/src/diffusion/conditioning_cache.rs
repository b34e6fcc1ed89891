//! A cache of [`TimeConditioning`]s keyed by time: the modulation heads of every layer and the
//! final gate depend only on `t` (and the class labels), and generation on a fixed grid
//! evaluates the same handful of times for every token. The reference recomputes them at every
//! evaluation; at SmolLM2-135M sizes the per-layer heads alone are about a fifth of the
//! weights a diffusion evaluation reads.

use std::cell::RefCell;
use std::collections::HashMap;

use super::path::TimeConditioning;

/// Whether the conditioning is for the conditional branch alone or for the stacked
/// conditional + unconditional branches of classifier-free guidance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Branches {
    /// The conditional batch (or no classes at all).
    Conditional,
    /// `[conditional; unconditional]`, twice the batch.
    Stacked,
}

/// [`TimeConditioning`]s by `(t, branches)`, for one diffusion path, one set of class labels
/// and one batch size: whoever owns the cache clears it ([`TimeConditioningCache::clear`]) when
/// any of them changes. At most `capacity` times are kept (adaptive solvers evaluate a new time
/// at nearly every stage, so caching them would only grow memory); beyond that, entries are
/// computed but not stored.
#[derive(Debug)]
pub struct TimeConditioningCache {
    entries: RefCell<HashMap<(u64, Branches), TimeConditioning>>,
    capacity: usize,
    hits: RefCell<usize>,
}

impl Default for TimeConditioningCache {
    /// A cache of up to 256 entries.
    fn default() -> Self {
        Self::new(256)
    }
}

impl TimeConditioningCache {
    /// An empty cache keeping at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RefCell::new(HashMap::new()),
            capacity,
            hits: RefCell::new(0),
        }
    }

    /// The entry for `(t, branches)`, computed by `make` when absent (and stored while the
    /// cache has room).
    ///
    /// # Errors
    /// `make`'s error.
    pub fn get_or_try_insert<E>(
        &self,
        t: f64,
        branches: Branches,
        make: impl FnOnce() -> Result<TimeConditioning, E>,
    ) -> Result<TimeConditioning, E> {
        let key = (t.to_bits(), branches);
        if let Some(hit) = self.entries.borrow().get(&key) {
            *self.hits.borrow_mut() += 1;
            return Ok(hit.clone());
        }
        let value = make()?;
        let mut entries = self.entries.borrow_mut();
        if entries.len() < self.capacity {
            entries.insert(key, value.clone());
        }
        Ok(value)
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> usize {
        *self.hits.borrow()
    }

    /// Drops every entry (keeps the hit counter).
    pub fn clear(&self) {
        self.entries.borrow_mut().clear();
    }
}
