//! [`FrozenLinear`]: a frozen projection `y = x Wᵀ + b` whose weights are float tensors, or
//! GGUF blocks kept quantized on the CPU ([`l2d_quant::QuantMatrix`]).
//!
//! A quantized projection multiplies a few rows (decoding: one row per sequence and guidance
//! branch) in the blocks' own format, without an f32 copy of the weights; longer inputs (a
//! prompt) and inputs that carry gradients (training the diffusion path, whose backward needs
//! `∂y/∂x = W`) go through a transient float copy of this one matrix and burn's matmul.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_flex::Flex;
use l2d_quant::{BlockFormat, QuantMatrix};

/// Rows up to which a quantized projection multiplies in its blocks; beyond, dequantizing the
/// matrix once into a GEMM is faster (each row otherwise re-decodes every block).
pub const FUSED_MAX_ROWS: usize = 16;

/// A frozen projection of the base model.
///
/// Float weights are stored as burn's `Linear` stores them, `[d_in, d_out]`, under the
/// parameter name `weight` (so a module path is the checkpoint name); quantized weights are
/// the checkpoint's `[d_out, d_in]` blocks. Exactly one of `weight` and `quantized` is set
/// (the constructors ensure it; a projection with neither panics when used).
#[derive(Module, Debug)]
pub struct FrozenLinear {
    /// `[d_in, d_out]`, when the weights are float.
    pub weight: Option<Param<Tensor<2>>>,
    /// `[d_out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// `[d_out, d_in]` blocks, when the weights are quantized (CPU memory).
    #[module(skip)]
    pub quantized: Option<Arc<QuantMatrix>>,
}

impl FrozenLinear {
    /// A float projection of `weight` (`[d_in, d_out]`) and an optional bias (`[d_out]`).
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        FrozenLinear {
            weight: Some(Param::from_tensor(weight)),
            bias: bias.map(Param::from_tensor),
            quantized: None,
        }
    }

    /// A projection without weights (a placeholder while one is replaced).
    pub(crate) fn empty() -> Self {
        FrozenLinear {
            weight: None,
            bias: None,
            quantized: None,
        }
    }

    /// A quantized projection; the bias stays a float tensor.
    pub fn from_quantized(matrix: QuantMatrix, bias: Option<Tensor<1>>) -> Self {
        FrozenLinear {
            weight: None,
            bias: bias.map(Param::from_tensor),
            quantized: Some(Arc::new(matrix)),
        }
    }

    /// `d_in`.
    pub fn d_in(&self) -> usize {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => w.dims()[0],
            (None, Some(q)) => q.cols(),
            (None, None) => 0,
        }
    }

    /// `d_out`.
    pub fn d_out(&self) -> usize {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => w.dims()[1],
            (None, Some(q)) => q.rows(),
            (None, None) => 0,
        }
    }

    /// The block format, when quantized.
    pub fn block_format(&self) -> Option<BlockFormat> {
        self.quantized.as_ref().map(|q| q.format())
    }

    /// Bytes held by the weights and bias.
    pub fn weight_bytes(&self) -> usize {
        let w = match (&self.weight, &self.quantized) {
            (Some(w), _) => w.shape().num_elements() * w.val().dtype().size(),
            (None, Some(q)) => q.size_bytes(),
            (None, None) => 0,
        };
        let b = self
            .bias
            .as_ref()
            .map_or(0, |b| b.shape().num_elements() * b.val().dtype().size());
        w + b
    }

    /// The weights as a float tensor `[d_in, d_out]` on `device` in `dtype` (a dequantized
    /// copy when quantized).
    pub fn weight_tensor(&self, device: &Device, dtype: DType) -> Tensor<2> {
        match (&self.weight, &self.quantized) {
            (Some(w), _) => w.val().cast(dtype),
            (None, Some(q)) => Self::dequantized(q, device, dtype).transpose(),
            (None, None) => Tensor::zeros([0, 0], (device, dtype)),
        }
    }

    /// `[d_out, d_in]` dequantized.
    fn dequantized(q: &QuantMatrix, device: &Device, dtype: DType) -> Tensor<2> {
        Tensor::<2>::from_data(
            TensorData::new(q.dequantize(), [q.rows(), q.cols()]),
            (device, DType::F32),
        )
        .cast(dtype)
    }

    /// Quantizes float weights to `format` (a no-op when already quantized). The weights must
    /// be finite, and `d_in` a multiple of 32.
    pub fn quantize(self, format: BlockFormat) -> Result<Self, l2d_quant::QuantError> {
        let Some(w) = &self.weight else {
            return Ok(self);
        };
        let wt = w.val().transpose(); // [d_out, d_in]
        let [rows, cols] = wt.dims();
        let values: Vec<f32> = wt
            .cast(DType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 data after a cast to f32");
        let q = QuantMatrix::quantize(format, &values, rows, cols)?;
        Ok(FrozenLinear {
            weight: None,
            bias: self.bias,
            quantized: Some(Arc::new(q)),
        })
    }

    /// `x Wᵀ + b` in `x`'s dtype.
    ///
    /// # Shapes
    /// - `x`: `[..., d_in]`
    /// - output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let bias = self.bias.as_ref().map(|b| b.val().cast(dtype));
        match (&self.weight, &self.quantized) {
            (Some(w), _) => {
                let w = w.val();
                let w = if w.dtype() == dtype { w } else { w.cast(dtype) };
                burn::tensor::module::linear(x, w, bias)
            }
            (None, Some(q)) => {
                let y = quantized_product(q, x);
                match bias {
                    Some(b) => y + b.unsqueeze(),
                    None => y,
                }
            }
            (None, None) => panic!("a FrozenLinear without weights"),
        }
    }
}

/// `x Wᵀ` for quantized `W`: in the blocks for a few plain f32 CPU rows, else through a
/// float copy.
pub(crate) fn quantized_product<const D: usize>(q: &QuantMatrix, x: Tensor<D>) -> Tensor<D> {
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let m = dims[..D - 1].iter().product::<usize>();
    let (device, dtype) = (x.device(), x.dtype());
    dims[D - 1] = q.rows();
    let x2: Tensor<2> = x.reshape([m, d_in]);
    if m <= FUSED_MAX_ROWS && dtype == DType::F32 {
        // Only a plain (not autodiff) tensor of the CPU backend converts.
        if let Ok(t) = x2.clone().try_into_primitive::<Flex>() {
            let t = if t.is_contiguous() {
                t
            } else {
                t.to_contiguous()
            };
            if let Some(values) = t.as_slice::<f32>() {
                let y = q
                    .matmul(values, m)
                    .expect("shapes checked when the model was built");
                return Tensor::<2>::from_data(TensorData::new(y, [m, q.rows()]), &device)
                    .reshape(dims);
            }
        }
    }
    let w = FrozenLinear::dequantized(q, &device, dtype); // [d_out, d_in]
    x2.matmul(w.transpose()).reshape(dims)
}
