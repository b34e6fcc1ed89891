//! AdamW over a module's trainable parameters, with gradient accumulation and **global**-norm
//! clipping (PyTorch's `clip_grad_norm_`: one norm over every gradient; burn's built-in
//! clipping is per tensor).
//!
//! Parameters are named by their module path (`layers.3.q_proj.lora_a`, ...), so optimizer
//! state is saved and restored by name, independent of burn's runtime parameter ids. Only
//! parameters that received a gradient get state: a frozen base module passed nowhere near
//! the optimizer holds none.
//!
//! The update is the reference's (DeepSpeed `FusedAdam`, `adam_w_mode`, i.e. PyTorch's
//! `AdamW`): `m = β₁m + (1-β₁)g`, `v = β₂v + (1-β₂)g²`,
//! `p ← p·(1 - lr·wd) - lr·m̂/(√v̂ + ε)` with bias-corrected `m̂, v̂`. Weight decay is not
//! applied to parameters whose name contains one of the configured substrings (the
//! reference's `no_decay = ['bias', 'ln', 'LayerNorm']`; of the diffusion path's parameters
//! only biases match).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// AdamW hyper-parameters (the reference's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε, added to `√v̂`.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Parameters whose name contains one of these are not decayed.
    pub no_decay: Vec<String>,
    /// Global gradient-norm clip (0: none).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
            no_decay: vec!["bias".into(), "ln".into(), "LayerNorm".into()],
            max_grad_norm: 1.0,
        }
    }
}

impl AdamWConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(TrainError::config(
                    name,
                    format!("must be in [0, 1), got {v}"),
                ));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(TrainError::config(
                "optim.eps",
                "must be finite and positive",
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(TrainError::config(
                "optim.weight_decay",
                "must be finite and non-negative",
            ));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(TrainError::config(
                "optim.max_grad_norm",
                "must be finite and non-negative (0: no clipping)",
            ));
        }
        Ok(())
    }

    /// Whether the parameter `name` is decayed.
    pub fn decays(&self, name: &str) -> bool {
        !self.no_decay.iter().any(|s| name.contains(s.as_str()))
    }
}

/// Tracks the dotted module path during a visit.
#[derive(Debug, Default)]
struct PathStack(Vec<String>);

impl PathStack {
    fn name(&self) -> String {
        self.0.join(".")
    }
}

/// Every float parameter of a module: its dotted path, shape and whether it requires a
/// gradient.
pub fn parameter_names<M: Module>(module: &M) -> Vec<(String, Vec<usize>, bool)> {
    struct V {
        path: PathStack,
        out: Vec<(String, Vec<usize>, bool)>,
    }
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.0.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            self.out
                .push((self.path.name(), t.dims().to_vec(), t.is_require_grad()));
        }
    }
    let mut v = V {
        path: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Gradients summed over micro-batches, per parameter name, flattened, off the autodiff
/// graph.
#[derive(Debug, Default, Clone)]
pub struct GradientBuffer {
    grads: BTreeMap<String, Tensor<1>>,
}

impl GradientBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `scale ×` the gradient of every parameter of `module` found in `grads`. Returns
    /// how many parameters had one.
    pub fn accumulate<M: Module>(&mut self, module: &M, grads: &Gradients, scale: f64) -> usize {
        struct V<'a> {
            path: PathStack,
            grads: &'a Gradients,
            buffer: &'a mut BTreeMap<String, Tensor<1>>,
            scale: f64,
            found: usize,
        }
        impl ModuleVisitor for V<'_> {
            fn enter_module(&mut self, name: &str, _container: &str) {
                self.path.0.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container: &str) {
                self.path.0.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let Some(g) = param.val().grad(self.grads) else {
                    return;
                };
                self.found += 1;
                let n = g.shape().num_elements();
                let mut g = g.reshape([n]);
                if self.scale != 1.0 {
                    g = g.mul_scalar(self.scale);
                }
                let name = self.path.name();
                let sum = match self.buffer.remove(&name) {
                    Some(prev) => prev + g,
                    None => g,
                };
                self.buffer.insert(name, sum);
            }
        }
        let mut v = V {
            path: PathStack::default(),
            grads,
            buffer: &mut self.grads,
            scale,
            found: 0,
        };
        module.visit(&mut v);
        v.found
    }

    /// Whether no gradient was added.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The names holding a gradient.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.grads.keys().map(String::as_str)
    }

    /// The gradient of `name`, flattened.
    pub fn get(&self, name: &str) -> Option<&Tensor<1>> {
        self.grads.get(name)
    }

    /// The L2 norm over every gradient (as `clip_grad_norm_` computes it, in f64 from
    /// per-tensor f32 sums of squares).
    pub fn global_norm(&self) -> f64 {
        self.grads
            .values()
            .map(|g| f64::from(g.clone().square().sum().into_scalar::<f32>()))
            .sum::<f64>()
            .sqrt()
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    /// Clips to a global norm: with `norm > max_norm` every gradient is multiplied by
    /// `max_norm / (norm + 1e-6)` (PyTorch's formula). Returns the norm before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        if max_norm > 0.0 && norm.is_finite() {
            let coef = max_norm / (norm + 1e-6);
            if coef < 1.0 {
                self.scale(coef);
            }
        }
        norm
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.grads.clear();
    }
}

/// The first and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// AdamW with its state keyed by parameter name.
#[derive(Debug, Clone)]
pub struct AdamW {
    config: AdamWConfig,
    state: BTreeMap<String, Moments>,
    /// Updates applied so far (the bias-correction time).
    steps: u64,
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            state: BTreeMap::new(),
            steps: 0,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The names of the parameters holding state.
    pub fn state_names(&self) -> Vec<String> {
        self.state.keys().cloned().collect()
    }

    /// Elements of optimizer state held (two per optimized parameter element).
    pub fn state_elements(&self) -> usize {
        self.state
            .values()
            .map(|s| s.m.dims()[0] + s.v.dims()[0])
            .sum()
    }

    /// One optimizer update from the gradients accumulated in `grads` (what `l2d train` does
    /// after its micro-batches): clips them to the configured global norm (`max_grad_norm`,
    /// 0: no clipping), then, when the norm is finite, applies [`AdamW::step`]; a non-finite
    /// norm leaves `module` and the optimizer state as they are. `grads` is empty afterwards.
    pub fn update<M: Module>(
        &mut self,
        module: M,
        lr: f64,
        grads: &mut GradientBuffer,
    ) -> UpdateOutcome<M> {
        let grad_norm = grads.clip_global_norm(self.config.max_grad_norm);
        let applied = grad_norm.is_finite();
        let module = if applied {
            self.step(module, lr, grads)
        } else {
            module
        };
        grads.clear();
        UpdateOutcome {
            module,
            grad_norm,
            applied,
        }
    }

    /// Applies one update with learning rate `lr` to every parameter of `module` that has a
    /// gradient in `grads`, consuming them; the others are left untouched. Updated parameters
    /// keep their `require_grad` setting and device.
    pub fn step<M: Module>(&mut self, module: M, lr: f64, grads: &mut GradientBuffer) -> M {
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - self.config.beta1.powi(t);
        let bias2 = 1.0 - self.config.beta2.powi(t);
        let mut mapper = Update {
            path: PathStack::default(),
            adam: self,
            grads,
            lr,
            bias1,
            bias2,
        };
        module.map(&mut mapper)
    }

    /// The state as named tensors (`NAME.exp_avg`, `NAME.exp_avg_sq`, f32) and the step count.
    pub fn to_tensors(&self) -> (Vec<(String, TensorData)>, u64) {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            out.push((format!("{name}.exp_avg"), s.m.clone().into_data()));
            out.push((format!("{name}.exp_avg_sq"), s.v.clone().into_data()));
        }
        (out, self.steps)
    }

    /// Restores the state from [`AdamW::to_tensors`]'s output, on `device`.
    ///
    /// # Errors
    /// [`TrainError::Checkpoint`] (naming `path`) for a tensor without its pair or an
    /// unexpected name.
    pub fn load_tensors(
        &mut self,
        tensors: Vec<(String, TensorData)>,
        steps: u64,
        device: &burn::tensor::Device,
        path: &Path,
    ) -> Result<()> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, data) in tensors {
            let n = data.shape().iter().product::<usize>();
            let t = Tensor::<1>::from_data(data, device).reshape([n]);
            if let Some(p) = name.strip_suffix(".exp_avg_sq") {
                v.insert(p.to_string(), t);
            } else if let Some(p) = name.strip_suffix(".exp_avg") {
                m.insert(p.to_string(), t);
            } else {
                return Err(bad(format!("unexpected optimizer tensor `{name}`")));
            }
        }
        let mut state = BTreeMap::new();
        for (name, mt) in m {
            let vt = v
                .remove(&name)
                .ok_or_else(|| bad(format!("`{name}.exp_avg_sq` is missing")))?;
            state.insert(name, Moments { m: mt, v: vt });
        }
        if let Some(name) = v.keys().next() {
            return Err(bad(format!("`{name}.exp_avg` is missing")));
        }
        self.state = state;
        self.steps = steps;
        Ok(())
    }
}

/// What [`AdamW::update`] did.
#[derive(Debug)]
pub struct UpdateOutcome<M> {
    /// The module after the update (unchanged when it was skipped).
    pub module: M,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Whether the update was applied (the norm was finite).
    pub applied: bool,
}

struct Update<'a> {
    path: PathStack,
    adam: &'a mut AdamW,
    grads: &'a mut GradientBuffer,
    lr: f64,
    bias1: f64,
    bias2: f64,
}

impl ModuleMapper for Update<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.0.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.0.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let name = self.path.name();
        let Some(g) = self.grads.grads.remove(&name) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let autodiff = tensor.is_autodiff();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let c = &self.adam.config;
        let (b1, b2) = (c.beta1, c.beta2);
        let moments = match self.adam.state.remove(&name) {
            Some(s) => Moments {
                m: s.m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
                v: s.v.mul_scalar(b2) + g.square().mul_scalar(1.0 - b2),
            },
            None => Moments {
                m: g.clone().mul_scalar(1.0 - b1),
                v: g.square().mul_scalar(1.0 - b2),
            },
        };
        let m_hat = moments.m.clone().div_scalar(self.bias1);
        let denom = moments
            .v
            .clone()
            .div_scalar(self.bias2)
            .sqrt()
            .add_scalar(c.eps);
        let decayed = if c.weight_decay > 0.0 && c.decays(&name) {
            p.mul_scalar(1.0 - self.lr * c.weight_decay)
        } else {
            p
        };
        let updated = decayed - (m_hat / denom).mul_scalar(self.lr);
        self.adam.state.insert(name, moments);
        let mut out: Tensor<D> = updated.reshape(shape);
        if autodiff {
            out = Tensor::from_inner(out);
        }
        if require_grad {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Toy {
        weight: Param<Tensor<2>>,
        bias: Param<Tensor<1>>,
    }

    fn toy(device: &Device) -> Toy {
        Toy {
            weight: Param::from_tensor(Tensor::from_floats([[0.5, -1.0], [2.0, 0.25]], device)),
            bias: Param::from_tensor(Tensor::from_floats([0.1, -0.2], device)),
        }
    }

    /// `loss = Σ w ⊙ c + Σ b ⊙ d`: the gradients are `c` and `d`.
    fn grads(model: &Toy, c: [[f32; 2]; 2], d: [f32; 2], device: &Device) -> Gradients {
        let c = Tensor::<2>::from_floats(c, device);
        let d = Tensor::<1>::from_floats(d, device);
        let loss = (model.weight.val() * c).sum() + (model.bias.val() * d).sum();
        loss.backward()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
        t.into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap()
    }

    /// Two AdamW steps against the formula computed on the host in f64.
    #[test]
    fn adamw_matches_the_pytorch_formula_and_skips_decay_on_biases() {
        let device = Device::flex().autodiff();
        let config = AdamWConfig::default();
        let mut adam = AdamW::new(config.clone());
        let mut model = toy(&device);
        let gs = [
            ([[0.3f32, -0.7], [1.5, 0.0]], [0.2f32, -4.0]),
            ([[-0.1f32, 0.2], [0.5, 2.0]], [1.0f32, 0.5]),
        ];
        let (mut w, mut b): (Vec<f64>, Vec<f64>) = (
            values(model.weight.val().inner()),
            values(model.bias.val().inner()),
        );
        let (mut mw, mut vw, mut mb, mut vb) =
            (vec![0.0; 4], vec![0.0; 4], vec![0.0; 2], vec![0.0; 2]);
        let lrs = [1e-2, 5e-3];
        for (k, ((c, d), lr)) in gs.iter().zip(lrs).enumerate() {
            let g = grads(&model, *c, *d, &device);
            let mut buffer = GradientBuffer::new();
            assert_eq!(buffer.accumulate(&model, &g, 1.0), 2);
            model = adam.step(model, lr, &mut buffer);
            assert!(buffer.is_empty());
            let t = (k + 1) as i32;
            let (b1, b2) = (0.9f64, 0.95f64);
            let update =
                |p: &mut Vec<f64>, m: &mut Vec<f64>, v: &mut Vec<f64>, g: Vec<f64>, decay: bool| {
                    for i in 0..p.len() {
                        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                        let mh = m[i] / (1.0 - b1.powi(t));
                        let vh = v[i] / (1.0 - b2.powi(t));
                        if decay {
                            p[i] *= 1.0 - lr * 0.01;
                        }
                        p[i] -= lr * mh / (vh.sqrt() + 1e-8);
                    }
                };
            let gw: Vec<f64> = c.iter().flatten().map(|&x| f64::from(x)).collect();
            let gb: Vec<f64> = d.iter().map(|&x| f64::from(x)).collect();
            update(&mut w, &mut mw, &mut vw, gw, true);
            update(&mut b, &mut mb, &mut vb, gb, false);
            for (got, want) in values(model.weight.val().inner()).iter().zip(&w) {
                assert!((got - want).abs() < 1e-6, "weight {got} vs {want}");
            }
            for (got, want) in values(model.bias.val().inner()).iter().zip(&b) {
                assert!((got - want).abs() < 1e-6, "bias {got} vs {want}");
            }
            assert!(model.weight.val().is_require_grad());
        }
        assert_eq!(
            adam.state_names(),
            vec!["bias".to_string(), "weight".to_string()]
        );
        assert_eq!(adam.state_elements(), 12);
    }

    #[test]
    fn global_norm_clipping_scales_all_gradients_together() {
        let device = Device::flex().autodiff();
        let model = toy(&device);
        let g = grads(&model, [[3.0, 0.0], [0.0, 0.0]], [0.0, 4.0], &device);
        let mut buffer = GradientBuffer::new();
        buffer.accumulate(&model, &g, 2.0); // scaled: norm 10
        let norm = buffer.clip_global_norm(1.0);
        assert!((norm - 10.0).abs() < 1e-5);
        let w = values(buffer.get("weight").unwrap().clone());
        let b = values(buffer.get("bias").unwrap().clone());
        let coef = 1.0 / (10.0 + 1e-6);
        assert!((w[0] - 6.0 * coef).abs() < 1e-6 && (b[1] - 8.0 * coef).abs() < 1e-6);
        assert!((buffer.global_norm() - 1.0).abs() < 1e-5);
        // Below the limit nothing changes.
        let mut small = GradientBuffer::new();
        small.accumulate(&model, &g, 0.01);
        small.clip_global_norm(1.0);
        assert!((small.global_norm() - 0.05).abs() < 1e-6);
    }

    #[test]
    fn state_round_trips_by_name() {
        let device = Device::flex().autodiff();
        let mut adam = AdamW::new(AdamWConfig::default());
        let model = toy(&device);
        let g = grads(&model, [[1.0, 2.0], [3.0, 4.0]], [5.0, 6.0], &device);
        let mut buffer = GradientBuffer::new();
        buffer.accumulate(&model, &g, 1.0);
        let _ = adam.step(model, 1e-3, &mut buffer);
        let (tensors, steps) = adam.to_tensors();
        let mut restored = AdamW::new(AdamWConfig::default());
        restored
            .load_tensors(tensors.clone(), steps, &Device::flex(), Path::new("x"))
            .unwrap();
        assert_eq!(restored.steps(), 1);
        let (again, _) = restored.to_tensors();
        assert_eq!(tensors.len(), again.len());
        for ((n1, d1), (n2, d2)) in tensors.iter().zip(&again) {
            assert_eq!(n1, n2);
            assert_eq!(d1.as_bytes(), d2.as_bytes());
        }
        let mut broken = tensors;
        broken.pop();
        let err = AdamW::new(AdamWConfig::default())
            .load_tensors(broken, 1, &Device::flex(), Path::new("opt.safetensors"))
            .unwrap_err();
        assert!(err.to_string().contains("opt.safetensors"), "{err}");
    }
}
