//! Diffusion decoding against base decoding on any device: the three numbers of
//! `benches/diffusion_decode.rs` (base decode step, one diffusion step, one token at 15 NFE)
//! with random weights and a cache of `--context` positions, each the median of `--iters`
//! timed runs after `--warmup` untimed ones, the device synchronised before the clock stops.
//! One JSON line per measurement on stdout.
//!
//! ```text
//! cargo run --release -p l2d-models --example bench_generation -- --size smollm2-135m
//! cargo run --release -p l2d-models --features vulkan --example bench_generation -- \
//!     --device vulkan --dtype f16 --size smollm2-135m,llama-3.2-1b
//! ```
//!
//! Flags: `--device flex|vulkan|wgpu|cuda` (the GPU ones need the crate feature of that name),
//! `--dtype f32|bf16|f16`, `--size smollm2-135m,llama-3.2-1b`, `--context 256`,
//! `--iters 10`, `--warmup 2`, `--steps 7` (midpoint steps of the token measurement;
//! 7 = 15 NFE), `--x1 argmax|average|sample` (the estimate; the released configuration is
//! argmax), `--no-fuse` (run the first stage as a diffusion forward).
//!
//! The diffusion path is freshly initialised, so its gate is zero: the token's logits must
//! equal the base step's, which each run checks (`check` in the JSON: the largest absolute
//! difference relative to the largest logit, and `ok` when under 1e-2 in 16-bit dtypes or
//! 1e-4 in f32). The cost of a path does not depend on its values.

use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::{DType, Device, Int, Tensor};
use l2d_core::X1Estimator;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, KvCache};
use l2d_models::diffusion::{DiffusionPath, FlowContext, FlowVelocityField, TimeConditioningCache};
use l2d_models::generation::{DiffusionOptions, Generator, TokenStep};
use l2d_models::l2d_config::L2dConfig;

struct Args {
    device: String,
    dtype: DType,
    dtype_name: String,
    sizes: Vec<String>,
    context: usize,
    iters: usize,
    warmup: usize,
    steps: usize,
    x1: X1Estimator,
    fuse: bool,
}

fn usage() -> String {
    "usage: bench_generation [--device flex|vulkan|wgpu|cuda] [--dtype f32|bf16|f16] \
     [--size smollm2-135m,llama-3.2-1b] [--context N] [--iters N] [--warmup N] [--steps N] \
     [--x1 argmax|average|sample] [--no-fuse]"
        .into()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "flex".into(),
        dtype: DType::F32,
        dtype_name: "f32".into(),
        sizes: vec!["smollm2-135m".into()],
        context: 256,
        iters: 10,
        warmup: 2,
        steps: 7,
        x1: X1Estimator::Argmax,
        fuse: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))
        };
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--device" => a.device = value()?,
            "--dtype" => {
                a.dtype_name = value()?;
                a.dtype = match a.dtype_name.as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    "f16" => DType::F16,
                    other => return Err(format!("--dtype {other}: expected f32, bf16 or f16")),
                }
            }
            "--size" => a.sizes = value()?.split(',').map(str::to_string).collect(),
            "--context" => a.context = number(value()?)?,
            "--iters" => a.iters = number(value()?)?.max(1),
            "--warmup" => a.warmup = number(value()?)?,
            "--steps" => a.steps = number(value()?)?,
            "--x1" => {
                a.x1 = match value()?.as_str() {
                    "argmax" => X1Estimator::Argmax,
                    "average" => X1Estimator::Average,
                    "sample" => X1Estimator::Sample,
                    other => return Err(format!("--x1 {other}: expected argmax, average, sample")),
                }
            }
            "--no-fuse" => a.fuse = false,
            "--help" | "-h" => return Err(usage()),
            other => return Err(format!("unknown flag {other}\n{}", usage())),
        }
    }
    Ok(a)
}

fn model_config(size: &str) -> Result<ModelConfig, String> {
    l2d_models::presets::preset(size).ok_or_else(|| {
        format!(
            "unknown size {size:?} ({})",
            l2d_models::presets::PRESETS.join(", ")
        )
    })
}

/// Median and minimum seconds of `iters` runs after `warmup`, synchronising the device.
fn time<T>(a: &Args, device: &Device, mut f: impl FnMut() -> T) -> Result<(f64, f64, T), String> {
    let mut last = None;
    for _ in 0..a.warmup {
        last = Some(f());
    }
    device.sync().map_err(|e| format!("{e:?}"))?;
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        last = Some(f());
        device.sync().map_err(|e| format!("{e:?}"))?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((
        times[times.len() / 2],
        times[0],
        last.expect("at least one run"),
    ))
}

fn to_f32(t: Tensor<2>) -> Vec<f32> {
    t.cast(DType::F32).into_data().iter::<f32>().collect()
}

fn run(a: &Args, size: &str) -> Result<(), String> {
    let device = l2d_core::device_by_name(&a.device).map_err(|e| e.to_string())?;
    let config = model_config(size)?;
    let model = CausalLm::random(&config, &device, a.dtype, 0);
    let path = DiffusionPath::init(&L2dConfig::default(), &model, 0)
        .map_err(|e| e.to_string())?
        .cast(a.dtype);
    let prompt = Tensor::<1, Int>::arange(0..a.context as i64, &device).reshape([1, a.context]);
    let mut cache = KvCache::new();
    let _ = model.forward_hidden(prompt, Some(&mut cache), &ForwardOptions::default());
    let next = || Tensor::<2, Int>::from_ints([[42]], &device);
    let line = |what: &str, median: f64, min: f64, base: f64, extra: String| {
        println!(
            "{{\"device\": \"{}\", \"dtype\": \"{}\", \"size\": \"{size}\", \"context\": {}, \
             \"measurement\": \"{what}\", \"median_ms\": {:.3}, \"min_ms\": {:.3}, \
             \"iters\": {}, \"ratio_to_base\": {:.3}{extra}}}",
            a.device,
            a.dtype_name,
            a.context,
            median * 1e3,
            min * 1e3,
            a.iters,
            median / base
        )
    };

    // Base decode step: the logits of one new token.
    let (base, base_min, base_logits) = time(a, &device, || {
        let mut c = cache.clone();
        let logits = model.forward(next(), Some(&mut c));
        let v = config.vocab_size;
        logits.reshape([1, v])
    })?;
    let base_logits = to_f32(base_logits);
    let finite = base_logits.iter().all(|x| x.is_finite());
    line(
        "base_step",
        base,
        base_min,
        base,
        format!(", \"check\": {{\"finite\": {finite}}}"),
    );

    // One diffusion step: a velocity evaluation at t = 0.5, modulations cached.
    let table = path.vocabulary_table(&model);
    let mut step_cache = cache.clone();
    let (hidden, ctx) =
        model.forward_hidden(next(), Some(&mut step_cache), &ForwardOptions::default());
    let context = FlowContext::new(hidden, &step_cache, &ctx).map_err(|e| e.to_string())?;
    let conditioning = TimeConditioningCache::default();
    let generator = Generator::new(
        &model,
        Some(&path),
        DiffusionOptions::fixed(a.steps)
            .with_x1_estimate(a.x1)
            .with_fused_first_evaluation(a.fuse),
    )
    .map_err(|e| e.to_string())?;
    let mut field = FlowVelocityField::new(&path, &model, context, table)
        .map_err(|e| e.to_string())?
        .with_estimation(generator.estimation())
        .with_temperature(generator.temperature())
        .with_conditioning_cache(&conditioning);
    let x = l2d_core::HostRng::new(0)
        .normal([1, 1, path.flow_dim()], (&device, generator.state_dtype()));
    let (diff, diff_min, v) = time(a, &device, || field.try_velocity(0.5, &x))?;
    let v = v.map_err(|e| e.to_string())?;
    let finite = v.is_finite().all().into_scalar::<bool>();
    line(
        "diffusion_step",
        diff,
        diff_min,
        base,
        format!(", \"check\": {{\"finite\": {finite}}}"),
    );

    // One token at steps·2 + 1 NFE (midpoint), through the generator's step.
    let mut step = generator.step();
    let (tok, tok_min, logits) = time(a, &device, || {
        let mut c = cache.clone();
        step.next_logits(next(), &mut c, &ForwardOptions::default())
    })?;
    let logits = to_f32(logits.map_err(|e| e.to_string())?);
    let scale = base_logits
        .iter()
        .fold(0f32, |m, x| m.max(x.abs()))
        .max(1e-30);
    let rel = logits
        .iter()
        .zip(&base_logits)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale;
    let tol = if a.dtype == DType::F32 { 1e-4 } else { 1e-2 };
    let stats = step.stats().tokens.last().cloned().unwrap_or_default();
    line(
        &format!("token_{}_nfe", stats.mean_nfe()),
        tok,
        tok_min,
        base,
        format!(
            ", \"diffusion_forwards\": {}, \"fused\": {}, \"check\": {{\"max_rel_diff_vs_base\": \
             {rel:.3e}, \"ok\": {}}}",
            stats.diffusion_forwards,
            stats.fused_evaluations,
            rel < tol
        ),
    );
    if rel >= tol {
        return Err(format!(
            "{size}: a fresh path's token logits differ from the base step's by {rel:.3e} \
             (relative), more than {tol:e}"
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    for size in args.sizes.clone() {
        if let Err(e) = run(&args, &size) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
