//! The small MLPs of the diffusion path (the reference's `SimpleMLP`, `nn.Sequential` of
//! linear layers with SiLU between them) and a dtype-tolerant linear layer.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::error::DiffusionError;
use super::keys::Keyed;
use super::source::LinearInit;

/// `Linear` applied to `x` in `x`'s dtype: the parameters are cast when they are stored in
/// another dtype (an f32 diffusion path on a bf16 base computes in bf16, as the reference's
/// whole-model cast does).
///
/// # Shapes
/// - `x`: `[..., d_in]`; output: `[..., d_out]`
pub fn linear_in_dtype<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    linear_with_bias(layer, x, layer.bias.as_ref().map(|b| b.val()))
}

/// [`linear_in_dtype`] with `bias` in place of the layer's own.
fn linear_with_bias<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let w = layer.weight.val();
    if w.dtype() == x.dtype() {
        return burn::tensor::module::linear(x, w, bias);
    }
    let dtype = x.dtype();
    let dims = x.dims();
    let [d_in, d_out] = w.dims();
    let rows = dims[..D - 1].iter().product();
    let mut y = x.reshape([rows, d_in]).matmul(w.cast(dtype));
    if let Some(b) = bias {
        y = y + b.cast(dtype).reshape([1, d_out]);
    }
    let mut out = dims;
    out[D - 1] = d_out;
    y.reshape(out)
}

/// Linear layers with SiLU between them and none after the last
/// (`layers_module.{0, 2, 4, ...}` or `mlp.{0, 2, ...}` in the reference's key names).
#[derive(Module, Debug)]
pub struct SimpleMlp {
    /// The layers, first to last.
    pub layers: Vec<Linear>,
}

impl SimpleMlp {
    /// The MLP `sizes[0] → sizes[1] → …` at `vb`, layer `i` at `vb.{2i}` (the SiLU between
    /// layers has the odd indices in the reference's `nn.Sequential`), initialised by
    /// `init(i, layers)`.
    pub(crate) fn build(
        vb: &mut Keyed<'_, '_>,
        sizes: &[usize],
        init: &dyn Fn(usize, usize) -> LinearInit,
    ) -> Result<Self, DiffusionError> {
        let n = sizes.len() - 1;
        let layers = (0..n)
            .map(|i| {
                vb.pp(2 * i)
                    .linear(sizes[i], sizes[i + 1], true, init(i, n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SimpleMlp { layers })
    }

    /// The MLP, in the input's dtype.
    ///
    /// # Shapes
    /// - `x`: `[..., d_in]`; output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len().saturating_sub(1);
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = linear_in_dtype(layer, x);
            if i < last {
                x = silu(x);
            }
        }
        x
    }

    /// `forward(x) - forward(x0)`, the same numbers, with the last layer's bias detached from
    /// the graph: it cancels in the difference, so its true gradient is zero, and detached it
    /// gets none at all, where the plain difference leaves it a rounding-level one that Adam
    /// would turn into steps of the full learning rate. `x` and `x0` broadcast against each
    /// other.
    ///
    /// # Shapes
    /// - `x`, `x0`: `[..., d_in]` (broadcastable); output: the broadcast shape with `d_out`
    ///
    /// # Panics
    /// Without layers.
    pub fn forward_difference<const D: usize>(&self, x: Tensor<D>, x0: Tensor<D>) -> Tensor<D> {
        let (last, hidden) = self.layers.split_last().expect("an MLP has layers");
        let through = |mut x: Tensor<D>| {
            for layer in hidden {
                x = silu(linear_in_dtype(layer, x));
            }
            linear_with_bias(last, x, last.bias.as_ref().map(|b| b.val().detach()))
        };
        through(x) - through(x0)
    }

    /// The input width (`None` without layers).
    pub fn d_in(&self) -> Option<usize> {
        self.layers.first().map(|l| l.weight.dims()[0])
    }

    /// The output width (`None` without layers).
    pub fn d_out(&self) -> Option<usize> {
        self.layers.last().map(|l| l.weight.dims()[1])
    }
}
