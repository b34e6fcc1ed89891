//! [`Guidance`]: classifier-free guidance with an optional interval and CFG-rescale, and the
//! decision of when the unconditional branch is needed at all.

use burn::tensor::Tensor;

use crate::{
    batch::split_branches,
    cfg::{cfg, cfg_rescale},
    error::{Error, Result},
    interval::GuidanceInterval,
};

/// Classifier-free guidance as L2D applies it to velocities: `v = w · v_c + (1 - w) · v_u`,
/// optionally only inside a [`GuidanceInterval`] and optionally followed by CFG-rescale.
///
/// A sampler asks [`Guidance::needs_unconditional`] at each evaluation time: when it is false
/// (`w = 1`, or `t` outside the interval) only the conditional branch is run and
/// [`Guidance::combine`] returns it unchanged; when it is true the sampler runs both branches,
/// ideally in one batched forward ([`crate::batch`]), and combines them.
///
/// # Example
/// ```
/// use burn::tensor::{Device, Int, Tensor};
/// use l2d_guidance::{stack_branches, stack_labels, Guidance};
///
/// let device = Device::flex();
/// let guidance = Guidance::new(1.5)?.with_interval(0.0, 0.8)?;
/// let x = Tensor::<2>::from_floats([[0.5, -0.5]], &device);
/// let labels = Tensor::<1, Int>::from_ints([2], &device);
/// let null_class = 3;
/// // A stand-in for the model: the velocity depends on the class label.
/// let model = |x: Tensor<2>, labels: Tensor<1, Int>| {
///     x.mul(labels.float().unsqueeze_dim(1))
/// };
///
/// let t = 0.25;
/// let v = if guidance.needs_unconditional(t) {
///     let out = model(stack_branches(x.clone()), stack_labels(labels.clone(), null_class));
///     guidance.combine_stacked(t, out)? // one forward for both branches
/// } else {
///     model(x.clone(), labels.clone())
/// };
/// // 1.5·(2x) − 0.5·(3x) = 1.5x
/// assert_eq!(v.into_data().to_vec::<f32>().unwrap(), vec![0.75, -0.75]);
/// assert!(!guidance.needs_unconditional(0.9)); // outside the interval
/// # Ok::<(), l2d_guidance::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    weight: f64,
    interval: GuidanceInterval,
    rescale: f64,
}

impl Default for Guidance {
    /// No guidance (`w = 1`).
    fn default() -> Self {
        Self::disabled()
    }
}

impl Guidance {
    /// Guidance of weight `weight` (the reference's `nstep_guidance_parameter`) on the whole
    /// time range, without rescale.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless `weight` is finite and non-negative (the reference
    /// asserts `w >= 0`).
    pub fn new(weight: f64) -> Result<Self> {
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::invalid(
                "guidance weight",
                weight,
                "must be finite and non-negative (1 is no guidance)",
            ));
        }
        Ok(Self {
            weight,
            interval: GuidanceInterval::full(),
            rescale: 0.0,
        })
    }

    /// No guidance: `w = 1`, never needs the unconditional branch.
    pub fn disabled() -> Self {
        Self {
            weight: 1.0,
            interval: GuidanceInterval::full(),
            rescale: 0.0,
        }
    }

    /// The same guidance restricted to `t ∈ [start, end]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for non-finite bounds or `start > end`.
    pub fn with_interval(self, start: f64, end: f64) -> Result<Self> {
        Ok(Self {
            interval: GuidanceInterval::new(start, end)?,
            ..self
        })
    }

    /// The same guidance followed by CFG-rescale of strength `phi ∈ [0, 1]`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] unless `phi` is in `[0, 1]`.
    pub fn with_rescale(self, phi: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&phi) {
            return Err(Error::invalid("cfg rescale phi", phi, "must lie in [0, 1]"));
        }
        Ok(Self {
            rescale: phi,
            ..self
        })
    }

    /// The guidance weight `w`.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// The interval on which guidance is active.
    pub fn interval(&self) -> GuidanceInterval {
        self.interval
    }

    /// The CFG-rescale strength `phi` (0: off).
    pub fn rescale(&self) -> f64 {
        self.rescale
    }

    /// Whether the unconditional branch must be evaluated at `t`: `w ≠ 1` and `t` in the
    /// interval. Counting model forwards, a guided evaluation costs two branches.
    pub fn needs_unconditional(&self, t: f64) -> bool {
        self.weight != 1.0 && self.interval.contains(t)
    }

    /// The guided velocity at `t` from the conditional velocity and, when
    /// [`Self::needs_unconditional`] holds, the unconditional one (ignored otherwise).
    ///
    /// # Shapes
    /// - `v_c`, `v_u`: `[b, ...]` (equal shapes); output: the same shape
    ///
    /// # Errors
    /// [`Error::MissingUnconditional`] if guidance is active at `t` and `v_u` is `None`;
    /// [`Error::Shape`] if the two velocities' shapes differ.
    pub fn combine<const D: usize>(
        &self,
        t: f64,
        v_c: Tensor<D>,
        v_u: Option<Tensor<D>>,
    ) -> Result<Tensor<D>> {
        if !self.needs_unconditional(t) {
            return Ok(v_c);
        }
        let v_u = v_u.ok_or(Error::MissingUnconditional { t })?;
        if v_u.dims() != v_c.dims() {
            return Err(Error::Shape {
                tensor: "unconditional velocity",
                expected: v_c.dims().to_vec(),
                got: v_u.dims().to_vec(),
            });
        }
        let guided = cfg(v_c.clone(), v_u, self.weight);
        Ok(if self.rescale > 0.0 {
            cfg_rescale(guided, v_c, self.rescale)
        } else {
            guided
        })
    }

    /// [`Self::combine`] on a stacked output `[v_c; v_u]` of one batched forward (see
    /// [`crate::batch`]). If guidance is inactive at `t`, the conditional half is returned.
    ///
    /// # Shapes
    /// - `stacked`: `[2b, ...]`; output: `[b, ...]`
    ///
    /// # Errors
    /// [`Error::OddBatch`] if dimension 0 is odd or zero.
    pub fn combine_stacked<const D: usize>(&self, t: f64, stacked: Tensor<D>) -> Result<Tensor<D>> {
        let (v_c, v_u) = split_branches(stacked)?;
        self.combine(t, v_c, Some(v_u))
    }
}
