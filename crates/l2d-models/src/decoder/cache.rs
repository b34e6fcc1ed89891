//! The key/value cache of incremental decoding.

use burn::tensor::Tensor;

/// One layer's keys and values: keys after RoPE, both before the grouped-query repeat.
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// Keys, `[batch, kv_heads, len, head_dim]`.
    pub k: Tensor<4>,
    /// Values, `[batch, kv_heads, len, head_dim]`.
    pub v: Tensor<4>,
}

impl LayerKv {
    /// The number of cached positions.
    pub fn len(&self) -> usize {
        self.k.dims()[2]
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends new keys/values along the sequence axis.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) {
        self.k = Tensor::cat(vec![self.k.clone(), k], 2);
        self.v = Tensor::cat(vec![self.v.clone(), v], 2);
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.k = self.k.clone().narrow(2, 0, len);
            self.v = self.v.clone().narrow(2, 0, len);
        }
    }
}

/// Per-layer keys/values of every position seen so far (transformers' `DynamicCache`).
///
/// Start with [`KvCache::new`] and pass it to every forward of one sequence batch; each
/// forward appends its positions. The frozen path's cache is what the diffusion path attends
/// to.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.seq_len() == 0
    }

    /// Every layer's keys/values, in layer order (empty before the first forward).
    pub fn layers(&self) -> &[LayerKv] {
        &self.layers
    }

    /// Layer `i`'s keys/values, if cached.
    pub fn layer(&self, i: usize) -> Option<&LayerKv> {
        self.layers.get(i)
    }

    /// Appends layer `i`'s new keys/values (layers are filled in order).
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`
    ///
    /// # Panics
    /// If `i` skips a layer.
    pub fn append(&mut self, i: usize, k: Tensor<4>, v: Tensor<4>) {
        match i.cmp(&self.layers.len()) {
            std::cmp::Ordering::Less => self.layers[i].append(k, v),
            std::cmp::Ordering::Equal => self.layers.push(LayerKv { k, v }),
            std::cmp::Ordering::Greater => panic!("KvCache::append: layer {i} skips a layer"),
        }
    }

    /// Replaces layer `i`'s keys/values by `kv` (the full past + new tensors a
    /// [`DecoderLayer::forward`](super::layer::DecoderLayer::forward) returns).
    ///
    /// # Panics
    /// If `i` skips a layer.
    pub fn set(&mut self, i: usize, kv: LayerKv) {
        match i.cmp(&self.layers.len()) {
            std::cmp::Ordering::Less => self.layers[i] = kv,
            std::cmp::Ordering::Equal => self.layers.push(kv),
            std::cmp::Ordering::Greater => panic!("KvCache::set: layer {i} skips a layer"),
        }
    }

    /// Keeps the first `len` positions of every layer (to roll back speculative tokens).
    pub fn truncate(&mut self, len: usize) {
        self.layers.iter_mut().for_each(|l| l.truncate(len));
    }

    /// Empties the cache.
    pub fn clear(&mut self) {
        self.layers.clear();
    }

    /// Bytes held by the cached tensors.
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let e = l.k.dtype().size();
                (l.k.shape().num_elements() + l.v.shape().num_elements()) * e
            })
            .sum()
    }
}
