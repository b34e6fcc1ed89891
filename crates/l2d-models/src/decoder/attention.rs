//! Grouped-query self-attention (`LlamaAttention` / `Qwen2Attention` / `MistralAttention`,
//! eager implementation) and the causal / sliding-window / padding masks.

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, DType, Device, Int, Tensor};

use super::linear::FrozenLinear;
use super::projection::{LayerDelta, Projection, project};
use super::rope::RopeCosSin;

/// The attention projections of one decoder layer (`self_attn` in Hugging Face).
///
/// Weights are [`FrozenLinear`]s: float `[d_in, d_out]` (the transpose of the checkpoint's
/// `[out, in]`), or quantized blocks. Biases: q/k/v for Qwen2 or Llama `attention_bias`; o only for Llama
/// `attention_bias`.
#[derive(Module, Debug)]
pub struct Attention {
    /// `hidden -> heads * head_dim`.
    pub q_proj: FrozenLinear,
    /// `hidden -> kv_heads * head_dim`.
    pub k_proj: FrozenLinear,
    /// `hidden -> kv_heads * head_dim`.
    pub v_proj: FrozenLinear,
    /// `heads * head_dim -> hidden`.
    pub o_proj: FrozenLinear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl Attention {
    /// Projects the queries (plus `delta`'s update), splits heads and applies RoPE.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `[batch, heads, seq, head_dim]`
    pub fn query(
        &self,
        x: Tensor<3>,
        rope: &RopeCosSin,
        delta: Option<&dyn LayerDelta>,
    ) -> Tensor<4> {
        let q = project(&self.q_proj, Projection::Q, x, delta);
        rope.apply(split_heads(q, self.num_heads))
    }

    /// Projects keys (RoPE applied) and values (plus `delta`'s updates), split into
    /// key/value heads (not repeated).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - output: `(k, v)`, each `[batch, kv_heads, seq, head_dim]`
    pub fn key_value(
        &self,
        x: Tensor<3>,
        rope: &RopeCosSin,
        delta: Option<&dyn LayerDelta>,
    ) -> (Tensor<4>, Tensor<4>) {
        let k = project(&self.k_proj, Projection::K, x.clone(), delta);
        let k = rope.apply(split_heads(k, self.num_kv_heads));
        let v = split_heads(
            project(&self.v_proj, Projection::V, x, delta),
            self.num_kv_heads,
        );
        (k, v)
    }

    /// Merges heads and applies `o_proj` (plus `delta`'s update).
    ///
    /// # Shapes
    /// - `attn`: `[batch, heads, seq, head_dim]`
    /// - output: `[batch, seq, hidden]`
    pub fn output(&self, attn: Tensor<4>, delta: Option<&dyn LayerDelta>) -> Tensor<3> {
        project(&self.o_proj, Projection::O, merge_heads(attn), delta)
    }
}

/// `[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]`.
///
/// # Shapes
/// - `x`: `[batch, seq, heads * head_dim]`
/// - output: `[batch, heads, seq, head_dim]`
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, s, w] = x.dims();
    x.reshape([b, s, heads, w / heads]).swap_dims(1, 2)
}

/// `[batch, heads, seq, head_dim] -> [batch, seq, heads * head_dim]`.
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`
/// - output: `[batch, seq, heads * head_dim]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}

/// Scaled dot-product attention with grouped-query heads, as transformers' eager path:
/// `softmax_f32(q kᵀ / sqrt(head_dim) masked).to(dtype) v`. Query head `j` reads key/value
/// head `j / (heads / kv_heads)` (transformers' `repeat_kv`), without materialising the
/// repeated keys.
///
/// `mask` is `true` where a query may **not** attend; masked scores are replaced by the
/// f32 minimum before the softmax (a fully masked row, e.g. a padding query, averages
/// uniformly like transformers and never yields NaN).
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, kv_heads, kv_len, head_dim]`, `heads % kv_heads == 0`
/// - `mask`: `[batch or 1, 1, q_len, kv_len]`
/// - output: `[batch, heads, q_len, head_dim]`
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let [b, h, sq, d] = q.dims();
    let [_, kvh, sk, _] = k.dims();
    let rep = h / kvh;
    let dtype = q.dtype();
    // [b, kvh, rep * sq, d]: the queries sharing a key/value head are stacked on the rows.
    let q = q.reshape([b, kvh, rep * sq, d]);
    let scores = q
        .matmul(k.swap_dims(2, 3))
        .mul_scalar(1.0 / (d as f64).sqrt());
    let mut scores = scores.cast(DType::F32);
    if let Some(mask) = mask {
        let mb = mask.dims()[0];
        let mask = mask
            .reshape([mb, 1, 1, sq, sk])
            .expand([b, kvh, rep, sq, sk])
            .reshape([b, kvh, rep * sq, sk]);
        scores = scores.mask_fill(mask, f32::MIN);
    }
    let probs = softmax(scores, 3).cast(dtype);
    probs.matmul(v).reshape([b, h, sq, d])
}

/// The attention mask of `q_len` new queries at positions `past_len ..` over `past_len +
/// q_len` keys, `true` = masked, as transformers 4.46 builds it: key `j` is hidden from query
/// `i` if `j > i`, or (with a window `w`) if `j <= i - w`, or if `attention_mask[b, j] == 0`.
/// Returns `None` when nothing is masked (a single new query without window or padding).
///
/// # Shapes
/// - `attention_mask` (Hugging Face convention, 1 = token, 0 = padding): `[batch, past_len + q_len]`
/// - output: `[batch or 1, 1, q_len, past_len + q_len]`
///
/// # Panics
/// If `attention_mask` does not cover `past_len + q_len` positions.
pub fn causal_mask(
    q_len: usize,
    past_len: usize,
    sliding_window: Option<usize>,
    attention_mask: Option<&Tensor<2, Int>>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let kv_len = past_len + q_len;
    let window_hides = sliding_window.is_some_and(|w| past_len + q_len > w);
    let causal = if q_len > 1 || window_hides {
        let rows = Tensor::<1, Int>::arange(past_len as i64..kv_len as i64, device)
            .reshape([q_len, 1])
            .expand([q_len, kv_len]);
        let cols = Tensor::<1, Int>::arange(0..kv_len as i64, device)
            .reshape([1, kv_len])
            .expand([q_len, kv_len]);
        let mut m = cols.clone().greater(rows.clone());
        if let Some(w) = sliding_window {
            m = m.bool_or(cols.lower_equal(rows.sub_scalar(w as i64)));
        }
        Some(m.reshape([1, 1, q_len, kv_len]))
    } else {
        None
    };
    let padding = attention_mask.map(|am| {
        let [b, len] = am.dims();
        assert_eq!(
            len, kv_len,
            "attention_mask covers {len} positions, expected past + new = {kv_len}"
        );
        am.clone()
            .equal_elem(0)
            .reshape([b, 1, 1, kv_len])
            .expand([b, 1, q_len, kv_len])
    });
    match (causal, padding) {
        (None, p) => p,
        (Some(c), None) => Some(c),
        (Some(c), Some(p)) => {
            let b = p.dims()[0];
            Some(p.bool_or(c.expand([b, 1, q_len, kv_len])))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn bools(t: Tensor<4, Bool>) -> Vec<bool> {
        t.into_data().try_to_vec::<bool>().unwrap()
    }

    #[test]
    fn mask_follows_transformers_window_rule() {
        let device = Device::flex();
        // 3 new queries at positions 4, 5, 6 over 7 keys, window 3: query i sees i-2..=i.
        let m = bools(causal_mask(3, 4, Some(3), None, &device).unwrap());
        for (qi, i) in (4..7).enumerate() {
            for j in 0..7 {
                let hidden = j > i || i - j >= 3;
                assert_eq!(m[qi * 7 + j], hidden, "query {i} key {j}");
            }
        }
        // One query past the window still needs a mask; one inside it does not.
        assert!(causal_mask(1, 5, Some(3), None, &device).is_some());
        assert!(causal_mask(1, 2, Some(3), None, &device).is_none());
        assert!(causal_mask(1, 9, None, None, &device).is_none());
    }

    #[test]
    fn padding_hides_keys_for_every_query() {
        let device = Device::flex();
        let am = Tensor::<2, Int>::from_ints([[0, 1, 1], [1, 1, 1]], &device);
        let m = bools(causal_mask(2, 1, None, Some(&am), &device).unwrap());
        // batch 0: key 0 is padding; queries at positions 1 and 2.
        assert_eq!(&m[..6], &[true, false, true, true, false, false]);
        assert_eq!(&m[6..], &[false, false, true, false, false, false]);
    }

    #[test]
    fn grouped_attention_equals_repeated_heads() {
        let device = Device::flex();
        device.seed(3);
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<4>::random([2, 6, 5, 8], normal, &device);
        let k = Tensor::<4>::random([2, 2, 5, 8], normal, &device);
        let v = Tensor::<4>::random([2, 2, 5, 8], normal, &device);
        let mask = causal_mask(5, 0, Some(2), None, &device);
        let grouped = attention(q.clone(), k.clone(), v.clone(), mask.clone());
        // transformers' repeat_kv: head j uses kv head j / 3.
        let rep = |t: Tensor<4>| {
            t.unsqueeze_dim::<5>(2)
                .repeat_dim(2, 3)
                .reshape([2, 6, 5, 8])
        };
        let full = attention(q.clone(), rep(k.clone()), rep(v.clone()), mask);
        let diff = (grouped.clone() - full).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-6, "{diff}");
        // And against a direct softmax for one head (head 4 -> kv head 1), query 3.
        let qd = q
            .narrow(1, 4, 1)
            .narrow(2, 3, 1)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let kd = k.narrow(1, 1, 1).into_data().try_to_vec::<f32>().unwrap();
        let vd = v.narrow(1, 1, 1).into_data().try_to_vec::<f32>().unwrap();
        let scores: Vec<f32> = (2..=3)
            .map(|j| (0..8).map(|c| qd[c] * kd[j * 8 + c]).sum::<f32>() / 8f32.sqrt())
            .collect();
        let z: f32 = scores.iter().map(|s| s.exp()).sum();
        let want: Vec<f32> = (0..8)
            .map(|c| {
                (2..=3)
                    .map(|j| scores[j - 2].exp() / z * vd[j * 8 + c])
                    .sum()
            })
            .collect();
        let got = grouped.narrow(0, 0, 1).narrow(1, 4, 1).narrow(2, 3, 1);
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}
