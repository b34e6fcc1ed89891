//! A device against the CPU on the same inputs: for each model, the frozen logits and the
//! diffusion path's logits (per-position times, random flow states) on `--device` in `--dtype`
//! and on the CPU in f32, and the largest absolute difference relative to the largest logit.
//! One JSON line per model and forward on stdout; the exit code is 1 when any exceeds its bound
//! (`--tol`, default 1e-3 in f32; 16-bit dtypes are reported against 5e-2).
//!
//! ```text
//! cargo run --release -p l2d-models --example device_parity                      # cpu vs cpu
//! cargo run --release -p l2d-models --features cuda --example device_parity -- \
//!     --device cuda --dtype bf16 --gguf .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```
//!
//! Models: the reference fixtures `fixtures/reference/{llama-tiny,qwen2-tiny}` (base and
//! trained-looking adapter), and with `--gguf FILE` a GGUF model with a fresh path whose
//! parameters are set to small random values (so the path changes the logits).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use l2d_core::{HostRng, device_by_name};
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions};
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath, Timesteps};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::{LoadOptions, Pretrained};
use l2d_models::weights::SafetensorsSource;
use std::path::PathBuf;

struct Args {
    device: String,
    dtype: DType,
    tol: f64,
    gguf: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "cpu".into(),
        dtype: DType::F32,
        tol: 1e-3,
        gguf: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => a.device = value()?,
            "--dtype" => {
                a.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    "f16" => DType::F16,
                    other => return Err(format!("--dtype: f32, bf16 or f16, not {other:?}")),
                }
            }
            "--tol" => a.tol = value()?.parse().map_err(|e| format!("--tol: {e}"))?,
            "--gguf" => a.gguf = Some(PathBuf::from(value()?)),
            other => {
                return Err(format!(
                    "unknown flag {other}; usage: device_parity [--device cpu|vulkan|wgpu|cuda] \
                     [--dtype f32|bf16|f16] [--tol 1e-3] [--gguf FILE]"
                ));
            }
        }
    }
    Ok(a)
}

fn host(t: Tensor<3>) -> Vec<f64> {
    t.cast(DType::F32)
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap_or_default()
}

/// `max |a - b| / max |b|`.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The frozen and the diffusion logits of `base` + `path` for fixed inputs.
fn forwards(base: &CausalLm, path: &DiffusionPath, seq: usize) -> (Vec<f64>, Vec<f64>) {
    let device = base.device();
    let vocab = base.config().vocab_size as i64;
    let ids: Vec<i64> = (0..2 * seq as i64).map(|i| (i * 37 + 11) % vocab).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, seq]), &device);
    let frozen = base.forward(ids.clone(), None);
    let mut rng = HostRng::new(5);
    let t = rng.uniform([2, seq], (&device, DType::F32));
    let x = rng
        .normal([2, seq, path.flow_dim()], (&device, DType::F32))
        .mul_scalar(8.0);
    let flow = path
        .forward(
            base,
            ids,
            &ForwardOptions::default(),
            x.cast(base.dtype()),
            &Timesteps::Tensor(t),
            None,
        )
        .expect("the path fits its base");
    (host(frozen), host(flow))
}

fn report(model: &str, on: (Vec<f64>, Vec<f64>), cpu: (Vec<f64>, Vec<f64>), args: &Args) -> bool {
    let bound = if args.dtype == DType::F32 {
        args.tol
    } else {
        5e-2
    };
    let mut ok = true;
    for (what, a, b) in [("frozen", &on.0, &cpu.0), ("diffusion", &on.1, &cpu.1)] {
        let rel = relative(a, b);
        ok &= rel <= bound && rel.is_finite();
        println!(
            "{{\"model\": \"{model}\", \"forward\": \"{what}\", \"device\": \"{}\", \"dtype\": \
             \"{:?}\", \"max_rel_diff\": {rel:e}, \"bound\": {bound:e}, \"ok\": {}}}",
            args.device,
            args.dtype,
            rel <= bound && rel.is_finite()
        );
    }
    ok
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let device = match device_by_name(&args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let cpu = Device::flex();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut ok = true;
    for name in ["llama-tiny", "qwen2-tiny"] {
        let dir = root.join("fixtures/reference").join(name);
        let load = |device: &Device, dtype: DType| {
            let config = ModelConfig::from_file(dir.join("config.json")).expect("its config");
            let source = SafetensorsSource::open(dir.join("base.safetensors")).expect("its base");
            let base = CausalLm::load(&source, &config, device, dtype).expect("the base loads");
            let l2d = L2dConfig::from_file(dir.join("l2d_config.json")).expect("its config");
            let options = AdapterLoadOptions {
                config: Some(l2d),
                force: true,
            };
            let path = DiffusionPath::load(dir.join("adapter.safetensors"), &base, &options)
                .expect("the fixture adapter loads");
            (base, path)
        };
        let (b, p) = load(&device, args.dtype);
        let (cb, cp) = load(&cpu, DType::F32);
        ok &= report(name, forwards(&b, &p, 7), forwards(&cb, &cp, 7), &args);
    }
    if let Some(gguf) = &args.gguf {
        let open = |device: &Device, dtype: DType| {
            let lm = Pretrained::open(
                gguf.to_str().unwrap_or_default(),
                &LoadOptions::new(device.clone(), dtype),
            )
            .expect("the GGUF loads");
            let path = DiffusionPath::init(&L2dConfig::default(), &lm.model, 1)
                .expect("a fresh path")
                .with_random_parameters(2, 0.02);
            (lm.model, path)
        };
        let (b, p) = open(&device, args.dtype);
        let (cb, cp) = open(&cpu, DType::F32);
        ok &= report("gguf", forwards(&b, &p, 16), forwards(&cb, &cp, 16), &args);
    }
    if !ok {
        std::process::exit(1);
    }
}
