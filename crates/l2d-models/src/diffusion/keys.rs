//! The checkpoint keys of the diffusion path, written once.
//!
//! The path is built through a [`KeyBuilder`] (candle's `VarBuilder` idea): each submodule
//! asks for its parameters under its own part of the key (`vb.pp("mlp").pp(0).linear(..)`
//! names `mlp.0.weight` and `mlp.0.bias`), the [`ParamSource`] makes them (a fresh
//! initialisation or a file's tensors), and the builder records each parameter's key, id and
//! layout in the path's [`ParamKeys`]. Saving, the optimizer's groups and its state names
//! read the keys from there, so no second walk of the module repeats them.

use std::collections::HashMap;
use std::fmt::Display;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::Linear;
use burn::tensor::{DType, Tensor, TensorData};

use super::error::DiffusionError;
use super::source::{LinearInit, MatrixInit, ParamSource};
use crate::decoder::FrozenLinear;

/// How a parameter is stored under its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLayout {
    /// A bias vector.
    Vector,
    /// A matrix stored as it is held (LoRA factors, embedding tables).
    Matrix,
    /// A linear weight: held `[in, out]`, stored transposed (`[out, in]`) as the reference's.
    LinearWeight,
}

/// One parameter's key.
#[derive(Debug, Clone)]
pub(crate) struct KeyedParam {
    pub key: String,
    pub id: ParamId,
    pub layout: KeyLayout,
}

/// Every parameter's checkpoint key, in the order the path was built.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParamKeys {
    entries: Vec<KeyedParam>,
}

impl ParamKeys {
    /// The keys, in build order.
    pub fn entries(&self) -> &[KeyedParam] {
        &self.entries
    }

    /// Every keyed parameter of `module` in the reference's layout, as f32 data, in build
    /// order.
    ///
    /// # Errors
    /// [`DiffusionError::Invalid`] if a parameter of the module has no key or a key's
    /// parameter is missing: a submodule was replaced after the path was built.
    pub fn tensors<M: Module>(
        &self,
        module: &M,
    ) -> Result<Vec<(String, TensorData)>, DiffusionError> {
        struct Collect<'k> {
            index: HashMap<ParamId, usize>,
            keys: &'k [KeyedParam],
            values: Vec<Option<TensorData>>,
            unkeyed: Vec<Vec<usize>>,
        }
        impl ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(&i) = self.index.get(&param.id) else {
                    self.unkeyed.push(param.val().dims().to_vec());
                    return;
                };
                let mut value = param.val();
                if self.keys[i].layout == KeyLayout::LinearWeight {
                    value = value.swap_dims(0, 1);
                }
                self.values[i] = Some(value.cast(DType::F32).into_data());
            }
        }
        let mut collect = Collect {
            index: self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id, i))
                .collect(),
            keys: &self.entries,
            values: vec![None; self.entries.len()],
            unkeyed: Vec::new(),
        };
        module.visit(&mut collect);
        let replaced = |reason: String| DiffusionError::Invalid {
            field: "diffusion path parameters",
            reason,
        };
        if let Some(shape) = collect.unkeyed.first() {
            return Err(replaced(format!(
                "a parameter of shape {shape:?} has no checkpoint key (a submodule was replaced \
                 after the path was built; build it through `DiffusionPath` instead)"
            )));
        }
        self.entries
            .iter()
            .zip(collect.values)
            .map(|(e, v)| {
                v.map(|v| (e.key.clone(), v)).ok_or_else(|| {
                    replaced(format!(
                        "{} is no longer a parameter of the path (its submodule was replaced \
                         after the path was built)",
                        e.key
                    ))
                })
            })
            .collect()
    }
}

/// Builds parameters from a [`ParamSource`] and records their keys.
pub(crate) struct KeyBuilder<'s> {
    source: &'s mut dyn ParamSource,
    keys: ParamKeys,
}

impl<'s> KeyBuilder<'s> {
    pub fn new(source: &'s mut dyn ParamSource) -> Self {
        Self {
            source,
            keys: ParamKeys::default(),
        }
    }

    /// The builder at the empty key (`pp` from here).
    pub fn root(&mut self) -> Keyed<'_, 's> {
        Keyed {
            builder: self,
            prefix: String::new(),
        }
    }

    /// The recorded keys.
    pub fn finish(self) -> ParamKeys {
        self.keys
    }

    fn record(&mut self, key: String, id: ParamId, layout: KeyLayout) {
        self.keys.entries.push(KeyedParam { key, id, layout });
    }
}

/// A [`KeyBuilder`] at a key prefix.
pub(crate) struct Keyed<'a, 's> {
    builder: &'a mut KeyBuilder<'s>,
    prefix: String,
}

impl<'s> Keyed<'_, 's> {
    /// The builder at `prefix.name`.
    pub fn pp(&mut self, name: impl Display) -> Keyed<'_, 's> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Keyed {
            builder: self.builder,
            prefix,
        }
    }

    fn record_linear(&mut self, linear: &Linear) {
        let key = &self.prefix;
        self.builder.record(
            format!("{key}.weight"),
            linear.weight.id,
            KeyLayout::LinearWeight,
        );
        if let Some(b) = &linear.bias {
            self.builder
                .record(format!("{key}.bias"), b.id, KeyLayout::Vector);
        }
    }

    /// The linear layer at this key (`.weight`, `.bias`).
    pub fn linear(
        &mut self,
        d_in: usize,
        d_out: usize,
        bias: bool,
        init: LinearInit,
    ) -> Result<Linear, DiffusionError> {
        let linear = self
            .builder
            .source
            .linear(&self.prefix, d_in, d_out, bias, init)?;
        self.record_linear(&linear);
        Ok(linear)
    }

    /// The matrix at this key.
    pub fn matrix(
        &mut self,
        shape: [usize; 2],
        init: MatrixInit,
    ) -> Result<Param<Tensor<2>>, DiffusionError> {
        let param = Param::from_tensor(self.builder.source.matrix(&self.prefix, shape, init)?);
        self.builder
            .record(self.prefix.clone(), param.id, KeyLayout::Matrix);
        Ok(param)
    }

    /// A full trainable copy of `base` at this key (`.weight`, `.bias`).
    pub fn full_copy(&mut self, base: Option<&FrozenLinear>) -> Result<Linear, DiffusionError> {
        let linear = self.builder.source.full_copy(&self.prefix, base)?;
        self.record_linear(&linear);
        Ok(linear)
    }
}
