//! A small seeded host random number generator for reproducible noise on any device.
//!
//! Backends draw random tensors with their own generators, so the same seed gives different
//! numbers on the CPU and on a GPU. [`HostRng`] draws on the host (ChaCha20, from
//! `rand_chacha`) and uploads the values, so the initial ODE noise, the uniforms of the x1
//! sampler and anything else drawn from it are identical on every backend for a fixed seed.
//! Values are drawn in `f64` and converted to the requested dtype on upload.
//!
//! Streams make per-token noise reproducible whatever the order of generation:
//! [`HostRng::with_stream`] and [`HostRng::derive`] give independent generators addressed by a
//! number (a token index, a sample index), and [`HostRng::fork`] splits off a child.

use burn::tensor::{Tensor, TensorCreationOptions, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A seeded ChaCha20 generator on the host that produces uniform and normal tensors.
///
/// # Example
/// ```
/// use burn::tensor::{DType, Device};
/// use l2d_core::rng::HostRng;
///
/// let device = Device::flex();
/// let mut a = HostRng::new(42);
/// let mut b = HostRng::new(42);
/// let x = a.normal([2, 3], &device);
/// let y = b.normal([2, 3], &device);
/// assert_eq!(x.into_data(), y.into_data());
/// // The same draws in f64:
/// let z = HostRng::new(42).normal([2, 3], (&device, DType::F64));
/// assert_eq!(z.dtype(), DType::F64);
/// ```
#[derive(Debug, Clone)]
pub struct HostRng {
    rng: ChaCha20Rng,
}

impl HostRng {
    /// A generator for `seed`, on stream 0.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
        }
    }

    /// A generator for `seed` on stream `stream`: the 2⁶⁴ streams of one seed are independent
    /// sequences, so `with_stream(seed, k)` can serve token `k` in any order.
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self { rng }
    }

    /// The stream this generator reads.
    pub fn stream(&self) -> u64 {
        self.rng.get_stream()
    }

    /// A child generator for `id`, determined by this generator's key and `id` only (not by
    /// how much has been drawn from it); this generator does not advance. Children of
    /// different ids, and the parent itself, produce independent sequences.
    pub fn derive(&self, id: u64) -> Self {
        let mut keyed = ChaCha20Rng::from_seed(self.rng.get_seed());
        keyed.set_stream(id);
        let mut key = [0u8; 32];
        keyed.fill_bytes(&mut key);
        Self {
            rng: ChaCha20Rng::from_seed(key),
        }
    }

    /// Splits off an independent child generator keyed by 32 bytes drawn from this one (which
    /// therefore advances).
    pub fn fork(&mut self) -> Self {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        Self {
            rng: ChaCha20Rng::from_seed(key),
        }
    }

    /// The next raw 64-bit draw.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform draw in the open interval `(0, 1)`: `(k + 1/2) / 2⁵³` for a uniform 53-bit `k`.
    pub fn uniform_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        ((self.rng.next_u64() >> 11) as f64 + 0.5) * SCALE
    }

    /// `n` uniform draws in `(0, 1)`.
    pub fn uniform_vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform_f64()).collect()
    }

    /// `n` standard normal draws (Box–Muller on pairs of uniforms; an odd `n` discards the
    /// second value of the last pair, so a call always consumes `2·ceil(n/2)` uniforms).
    pub fn normal_vec(&mut self, n: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let radius = (-2.0 * self.uniform_f64().ln()).sqrt();
            let (sin, cos) = (std::f64::consts::TAU * self.uniform_f64()).sin_cos();
            out.push(radius * cos);
            out.push(radius * sin);
        }
        out.truncate(n);
        out
    }

    /// A tensor of uniform draws in `(0, 1)`, filled in row-major order.
    ///
    /// `options` is a device (`&device`, default float dtype) or `(&device, dtype)`.
    ///
    /// # Shapes
    /// - output: `shape`
    pub fn uniform<const D: usize>(
        &mut self,
        shape: [usize; D],
        options: impl Into<TensorCreationOptions>,
    ) -> Tensor<D> {
        let values = self.uniform_vec(shape.iter().product());
        Tensor::from_data(TensorData::new(values, shape), options)
    }

    /// A tensor of standard normal draws, filled in row-major order (see [`Self::normal_vec`]).
    ///
    /// `options` is a device (`&device`, default float dtype) or `(&device, dtype)`.
    ///
    /// # Shapes
    /// - output: `shape`
    pub fn normal<const D: usize>(
        &mut self,
        shape: [usize; D],
        options: impl Into<TensorCreationOptions>,
    ) -> Tensor<D> {
        let values = self.normal_vec(shape.iter().product());
        Tensor::from_data(TensorData::new(values, shape), options)
    }
}
