//! Diffusion decoding against base decoding, on the CPU (`Device::flex()`, f32, random
//! weights) at SmolLM2-135M and Llama-3.2-1B sizes with 256 cached positions:
//!
//! - `base_step`: one frozen decode step (one new token, logits, argmax read back);
//! - `diffusion_step`: one velocity evaluation of the diffusion path at `t = 0.5` for the
//!   next position (diffusion-only forward over the cached keys/values, LM head, x1 estimate,
//!   velocity; the state read back), with the time's modulations cached as generation has
//!   them after its first token; `diffusion_step_uncached` recomputes them (the reference);
//! - `token_15_nfe`: one whole token of diffusion generation, midpoint over 8 grid points
//!   (7 steps, 15 NFE: the frozen pass, the fused first stage, 13 diffusion forwards and the
//!   final one), argmax read back.
//!
//! The adapter is the released configuration (mapping space 256, LoRA rank 32, argmax x1
//! estimate at temperature 0), freshly initialised (the cost does not depend on the values).
//!
//! `cargo bench -p l2d-models --bench diffusion_decode` first prints, per size, the medians
//! measured in one run and the ratios diffusion step / base step (goal ≤ 1.05) and token at
//! 15 NFE / base step (goal ≤ 17, lower thanks to the fused first evaluation), then divan's
//! table. `L2D_BENCH_SIZES=smollm2-135m` restricts the sizes; `L2D_BENCH_FORMAT=q4_1` (or
//! `q8_0`, `q4_0`) holds the frozen projections and head in blocks.

mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use burn::tensor::{DType, Device, Int, Tensor};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, KvCache};
use l2d_models::diffusion::{DiffusionPath, FlowContext, FlowVelocityField, TimeConditioningCache};
use l2d_models::generation::{DiffusionOptions, DiffusionStep, Generator, TokenStep};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::loading::WeightFormat;

const CONTEXT: usize = 256;
const SIZES: [&str; 2] = ["smollm2-135m", "llama-3.2-1b"];

fn model_config(size: &str) -> ModelConfig {
    l2d_models::presets::preset(size).expect("a preset size")
}

/// A model, its diffusion path and a cache of `CONTEXT` positions.
struct Setup {
    model: CausalLm,
    path: DiffusionPath,
    cache: KvCache,
    device: Device,
}

thread_local! {
    static SETUPS: RefCell<HashMap<&'static str, Rc<Setup>>> = RefCell::new(HashMap::new());
}

fn setup(size: &'static str) -> Rc<Setup> {
    SETUPS.with(|s| {
        s.borrow_mut()
            .entry(size)
            .or_insert_with(|| {
                let device = Device::flex();
                let model = CausalLm::random_as(&model_config(size), &device, format(), 0);
                let path = DiffusionPath::init(&L2dConfig::default(), &model, 0).unwrap();
                let prompt =
                    Tensor::<1, Int>::arange(0..CONTEXT as i64, &device).reshape([1, CONTEXT]);
                let mut cache = KvCache::new();
                let _ = model.forward_hidden(prompt, Some(&mut cache), &ForwardOptions::default());
                Rc::new(Setup {
                    model,
                    path,
                    cache,
                    device,
                })
            })
            .clone()
    })
}

/// The frozen weights' format: `L2D_BENCH_FORMAT` (`f32` by default, or `q8_0`, `q4_0`,
/// `q4_1`: projections and head in blocks).
fn format() -> WeightFormat {
    std::env::var("L2D_BENCH_FORMAT")
        .map(|f| f.parse().expect("L2D_BENCH_FORMAT: a weight format"))
        .unwrap_or_default()
}

fn next_token(device: &Device) -> Tensor<2, Int> {
    Tensor::<2, Int>::from_ints([[42]], device)
}

/// One base decode step: logits of a new token, argmax read back.
fn base_step(s: &Setup, cache: &mut KvCache) -> i64 {
    let logits = s.model.forward(next_token(&s.device), Some(cache));
    logits.argmax(2).into_scalar::<i64>()
}

/// The diffusion context of the next position: the cache after a frozen step.
fn flow_context(s: &Setup) -> FlowContext {
    let mut cache = s.cache.clone();
    let (hidden, ctx) = s.model.forward_hidden(
        next_token(&s.device),
        Some(&mut cache),
        &ForwardOptions::default(),
    );
    FlowContext::new(hidden, &cache, &ctx).unwrap()
}

/// A velocity field over the next position.
fn field<'a>(
    s: &'a Setup,
    table: Tensor<2>,
    cache: Option<&'a TimeConditioningCache>,
) -> FlowVelocityField<'a> {
    let f = FlowVelocityField::new(&s.path, &s.model, flow_context(s), table).unwrap();
    match cache {
        Some(c) => f.with_conditioning_cache(c),
        None => f,
    }
}

/// One velocity evaluation, the result read back.
fn diffusion_step(f: &mut FlowVelocityField<'_>, x: &Tensor<3>) -> f64 {
    f.try_velocity(0.5, x).unwrap().sum().into_scalar::<f64>()
}

fn x0(s: &Setup) -> Tensor<3> {
    l2d_core::HostRng::new(0).normal([1, 1, s.path.flow_dim()], (&s.device, DType::F64))
}

/// One token of diffusion generation at 15 NFE (the step's conditioning cache is warm after
/// its first token, as in generation).
fn token(step: &mut DiffusionStep<'_>, s: &Setup) -> i64 {
    let mut cache = s.cache.clone();
    let logits = step
        .next_logits(
            next_token(&s.device),
            &mut cache,
            &ForwardOptions::default(),
        )
        .unwrap();
    logits.argmax(1).into_scalar::<i64>()
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn time(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn sizes() -> Vec<&'static str> {
    support::env_filter("L2D_BENCH_SIZES", &SIZES)
}

fn summary() {
    for size in sizes() {
        let s = setup(size);
        let n = if size == "llama-3.2-1b" { 5 } else { 11 };
        let base = time(n, || {
            base_step(&s, &mut s.cache.clone());
        });
        let table = s.path.vocabulary_table(&s.model);
        let cond = TimeConditioningCache::default();
        let x = x0(&s);
        let mut f = field(&s, table.clone(), Some(&cond));
        let diff = time(n, || {
            diffusion_step(&mut f, &x);
        });
        let mut f = field(&s, table, None);
        let uncached = time(n, || {
            diffusion_step(&mut f, &x);
        });
        let g = Generator::new(&s.model, Some(&s.path), DiffusionOptions::fixed(7)).unwrap();
        let mut step = g.step();
        let tok = time(n.min(5), || {
            token(&mut step, &s);
        });
        println!(
            "{size}, {}, flex, context {CONTEXT}: base step {:.1} ms, diffusion step {:.1} ms \
             ({:.1} ms uncached), token at 15 NFE {:.0} ms | diffusion/base {:.3} \
             (uncached {:.3}), token/base {:.2}",
            format(),
            base * 1e3,
            diff * 1e3,
            uncached * 1e3,
            tok * 1e3,
            diff / base,
            uncached / base,
            tok / base
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    divan::main();
}

#[divan::bench(args = sizes(), sample_count = 5, sample_size = 1)]
fn base_decode_step(bencher: divan::Bencher, size: &'static str) {
    let s = setup(size);
    bencher
        .with_inputs(|| s.cache.clone())
        .bench_local_values(|mut c| base_step(&s, &mut c));
}

#[divan::bench(args = sizes(), sample_count = 5, sample_size = 1)]
fn diffusion_step_cached(bencher: divan::Bencher, size: &'static str) {
    let s = setup(size);
    let cond = TimeConditioningCache::default();
    let mut f = field(&s, s.path.vocabulary_table(&s.model), Some(&cond));
    let x = x0(&s);
    bencher.bench_local(|| diffusion_step(&mut f, &x));
}

#[divan::bench(args = sizes(), sample_count = 5, sample_size = 1)]
fn diffusion_step_uncached(bencher: divan::Bencher, size: &'static str) {
    let s = setup(size);
    let mut f = field(&s, s.path.vocabulary_table(&s.model), None);
    let x = x0(&s);
    bencher.bench_local(|| diffusion_step(&mut f, &x));
}

#[divan::bench(args = sizes(), sample_count = 3, sample_size = 1)]
fn token_15_nfe(bencher: divan::Bencher, size: &'static str) {
    let s = setup(size);
    let g = Generator::new(&s.model, Some(&s.path), DiffusionOptions::fixed(7)).unwrap();
    let mut step = g.step();
    token(&mut step, &s);
    bencher.bench_local(|| token(&mut step, &s));
}
