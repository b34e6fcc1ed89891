//! Where the diffusion path's parameters come from when it is built: a fresh initialisation
//! like the reference's, or the tensors of a file (reference key names and layout).
//!
//! The path's submodules ask a [`ParamSource`] for every tensor by its reference key, through
//! a [`KeyBuilder`](super::keys::KeyBuilder) that records the keys for saving, so the
//! initialisation, the loader, the saved file and the key names can never disagree.

use std::collections::BTreeSet;
use std::path::PathBuf;

use burn::nn::Linear;
use burn::tensor::{DType, Device, Tensor, TensorData};
use l2d_core::HostRng;

use super::error::DiffusionError;
use crate::decoder::FrozenLinear;
use crate::weights::WeightSource;

/// How a freshly initialised linear layer is drawn (the reference's `init_flow_weights`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LinearInit {
    /// Xavier-uniform weight, zero bias.
    Xavier,
    /// `N(0, std²)` weight, zero bias.
    Normal(f64),
    /// Zero weight and bias (the last layer of every modulation head).
    Zero,
}

/// How a freshly initialised plain matrix is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MatrixInit {
    /// `N(0, std²)`.
    Normal(f64),
    /// Zeros.
    Zero,
}

/// A provider of the diffusion path's tensors, addressed by reference key.
pub(crate) trait ParamSource {
    /// The linear layer `key` (`key.weight` `[d_out, d_in]`, `key.bias` `[d_out]` in the
    /// reference's layout), returned in burn's `[d_in, d_out]` layout.
    fn linear(
        &mut self,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: LinearInit,
    ) -> Result<Linear, DiffusionError>;

    /// A matrix stored as is (LoRA factors, embedding tables).
    fn matrix(
        &mut self,
        key: &str,
        shape: [usize; 2],
        init: MatrixInit,
    ) -> Result<Tensor<2>, DiffusionError>;

    /// A full trainable copy `key` of a base projection (initialised from `base`).
    fn full_copy(
        &mut self,
        key: &str,
        base: Option<&FrozenLinear>,
    ) -> Result<Linear, DiffusionError>;
}

pub(crate) fn make_linear(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Linear {
    crate::decoder::linear(weight, bias)
}

/// The reference's initialisation, drawn from a seeded host generator (identical on every
/// device), stored in `dtype`.
pub(crate) struct InitSource {
    pub rng: HostRng,
    pub device: Device,
    pub dtype: DType,
}

impl InitSource {
    fn tensor<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values, shape), (&self.device, self.dtype))
    }

    fn zeros<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        Tensor::zeros(shape, (&self.device, self.dtype))
    }

    fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        self.rng
            .normal_vec(n)
            .into_iter()
            .map(|z| (z * std) as f32)
            .collect()
    }
}

impl ParamSource for InitSource {
    fn linear(
        &mut self,
        _key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: LinearInit,
    ) -> Result<Linear, DiffusionError> {
        let n = d_in * d_out;
        let weight = match init {
            LinearInit::Xavier => {
                let bound = (6.0 / (d_in + d_out) as f64).sqrt();
                let values = (0..n)
                    .map(|_| ((2.0 * self.rng.uniform_f64() - 1.0) * bound) as f32)
                    .collect();
                self.tensor(values, [d_in, d_out])
            }
            LinearInit::Normal(std) => {
                let values = self.normal(n, std);
                self.tensor(values, [d_in, d_out])
            }
            LinearInit::Zero => self.zeros([d_in, d_out]),
        };
        let bias = bias.then(|| self.zeros([d_out]));
        Ok(make_linear(weight, bias))
    }

    fn matrix(
        &mut self,
        _key: &str,
        shape: [usize; 2],
        init: MatrixInit,
    ) -> Result<Tensor<2>, DiffusionError> {
        Ok(match init {
            MatrixInit::Normal(std) => {
                let values = self.normal(shape[0] * shape[1], std);
                self.tensor(values, shape)
            }
            MatrixInit::Zero => self.zeros(shape),
        })
    }

    fn full_copy(
        &mut self,
        _key: &str,
        base: Option<&FrozenLinear>,
    ) -> Result<Linear, DiffusionError> {
        let base = base.ok_or(DiffusionError::FullCopyNeedsBase)?;
        let weight = base.weight_tensor(&self.device, self.dtype);
        let bias = base.bias.as_ref().map(|b| b.val().cast(self.dtype));
        // A copy, not a shared handle: the copy is trained, the base stays frozen.
        let weight = Tensor::from_data(weight.into_data(), (&self.device, self.dtype));
        let bias = bias.map(|b| Tensor::from_data(b.into_data(), (&self.device, self.dtype)));
        Ok(make_linear(weight, bias))
    }
}

/// Tensors read from a file in the reference's key names and layout, cast to `dtype`.
pub(crate) struct FileSource<'a, S: WeightSource + ?Sized> {
    pub source: &'a S,
    pub path: PathBuf,
    pub device: Device,
    pub dtype: DType,
    pub used: BTreeSet<String>,
}

impl<S: WeightSource + ?Sized> FileSource<'_, S> {
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<TensorData, DiffusionError> {
        let found = self
            .source
            .shape(name)
            .ok_or_else(|| DiffusionError::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
            })?;
        if found != shape {
            return Err(DiffusionError::TensorShape {
                name: name.to_string(),
                path: self.path.clone(),
                expected: shape.to_vec(),
                found,
            });
        }
        self.used.insert(name.to_string());
        let data = self.source.tensor_data(name)?;
        data.try_cast(self.dtype)
            .map_err(|e| DiffusionError::Metadata {
                path: self.path.clone(),
                reason: format!("cannot convert `{name}` to {:?}: {e}", self.dtype),
            })
    }

    fn read_linear(
        &mut self,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Linear, DiffusionError> {
        let w = self.read(&format!("{key}.weight"), &[d_out, d_in])?;
        let w = Tensor::<2>::from_data(w, (&self.device, self.dtype)).transpose();
        let b = if bias {
            let b = self.read(&format!("{key}.bias"), &[d_out])?;
            Some(Tensor::<1>::from_data(b, (&self.device, self.dtype)))
        } else {
            None
        };
        Ok(make_linear(w, b))
    }
}

impl<S: WeightSource + ?Sized> ParamSource for FileSource<'_, S> {
    fn linear(
        &mut self,
        key: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        _init: LinearInit,
    ) -> Result<Linear, DiffusionError> {
        self.read_linear(key, d_in, d_out, bias)
    }

    fn matrix(
        &mut self,
        key: &str,
        shape: [usize; 2],
        _init: MatrixInit,
    ) -> Result<Tensor<2>, DiffusionError> {
        let data = self.read(key, &shape)?;
        Ok(Tensor::from_data(data, (&self.device, self.dtype)))
    }

    fn full_copy(
        &mut self,
        key: &str,
        base: Option<&FrozenLinear>,
    ) -> Result<Linear, DiffusionError> {
        let base = base.ok_or(DiffusionError::FullCopyNeedsBase)?;
        let (d_in, d_out) = (base.d_in(), base.d_out());
        self.read_linear(key, d_in, d_out, base.bias.is_some())
    }
}
