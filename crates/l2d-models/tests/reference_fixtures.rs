//! Every case of every reference fixture folder (tiny models run through the authors' L2D
//! code, `fixtures/reference/*` and `tests/fixtures/reference-guided/*`) and of any folder
//! listed in `L2D_EXTRA_FIXTURES` (colon-separated), reproduced by the Rust diffusion path. Prints the max absolute and
//! relative error of each case; an unknown case kind fails the test.
//!
//! Tolerance: 1e-4 relative to the largest expected magnitude. `ode_dopri5`: final state within
//! 5e-3 relative and model evaluations within 10 % of the reference's. The adaptive solve is
//! chaotic near the `1/(1-t)` singularity: changing its tolerance by one part in 10⁹ moves the
//! final state of these fixtures by up to 4.4e-3 relative and the evaluation count by up to
//! 15 %, and the authors' own code, re-run on this machine (torch 2.15, transformers 4.46.3,
//! torchdiffeq 0.2.5), misses the qwen2-tiny fixture by 3.8e-3 (266 evaluations for 236).
//! f32 rounding differences alone decide which steps are accepted, so a 1e-3 bound on the
//! final state would test luck, not correctness (measured here: 5.4e-4 llama, 1.2e-3 qwen2;
//! evaluations 206/206 and 242/236).

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::*;
use l2d_core::TemperatureSchedule;
use l2d_guidance::Guidance;
use l2d_models::config::ModelConfig;
use l2d_models::decoder::{CausalLm, ForwardOptions, KvCache};
use l2d_models::diffusion::{
    AdapterLoadOptions, ClassLabels, DiffusionPath, FlowContext, FlowVelocityField, LossInputs,
    Timesteps, load_reference_model, reference_endpoint_policy,
};
use l2d_models::generation::{
    DiffusionOptions, Flow, GenerationConfig, GenerationError, Generator, TokenStep, generate,
};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::weights::SafetensorsSource;
use l2d_solvers::{Method, Solver, StepController, linspace};

const TOL: f64 = 1e-4;
const DOPRI_TOL: f64 = 5e-3;
const DOPRI_NFE_TOL: f64 = 0.1;

/// The shared fixtures, then this crate's guided fixture (made by
/// `scripts/make_guided_reference_fixture.py` with the authors' code, since the shared ones
/// have no guidance classes), then `L2D_EXTRA_FIXTURES`.
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in [
        repo_root().join("fixtures/reference"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-guided"),
    ] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    if let Ok(extra) = std::env::var("L2D_EXTRA_FIXTURES") {
        for p in extra.split(':').filter(|p| !p.is_empty()) {
            let p = PathBuf::from(p);
            assert!(
                p.is_dir(),
                "L2D_EXTRA_FIXTURES names `{}`, not a folder",
                p.display()
            );
            dirs.push(p);
        }
    }
    dirs
}

/// Max absolute error and max absolute error relative to the largest expected magnitude.
fn errors(got: &[f32], want: &[f32]) -> (f64, f64) {
    let abs = max_abs_diff(got, want) as f64;
    (abs, abs / (max_abs(want) as f64).max(1e-30))
}

fn t3(values: Vec<f32>, shape: &[usize], device: &Device, dtype: DType) -> Tensor<3> {
    Tensor::from_data(
        TensorData::new(values, [shape[0], shape[1], shape[2]]),
        (device, dtype),
    )
}

fn t2(values: Vec<f32>, shape: &[usize], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, [shape[0], shape[1]]), device)
}

fn f64_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    to_vec(t)
}

struct Fixture {
    name: String,
    base: CausalLm,
    path: Option<DiffusionPath>,
    cases: Cases,
    device: Device,
}

fn load_fixture(dir: &Path) -> Fixture {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let device = Device::flex();
    let base_config = ModelConfig::from_file(dir.join("config.json")).unwrap();
    let source = SafetensorsSource::from_file(dir.join("base.safetensors")).unwrap();
    let base = CausalLm::load(&source, &base_config, &device, DType::F32)
        .unwrap_or_else(|e| panic!("{name}: base: {e}"));
    let l2d = dir.join("l2d_config.json");
    let path = l2d.is_file().then(|| {
        let config = L2dConfig::from_file(&l2d).unwrap_or_else(|e| panic!("{name}: {e}"));
        let options = AdapterLoadOptions {
            config: Some(config),
            force: false,
        };
        DiffusionPath::load(dir.join("adapter.safetensors"), &base, &options)
            .unwrap_or_else(|e| panic!("{name}: adapter: {e}"))
    });
    Fixture {
        name,
        base,
        path,
        cases: Cases::open(&dir.join("cases.safetensors")),
        device,
    }
}

fn case_names(dir: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out: Vec<(String, Vec<String>)> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, c)| {
            let tensors = c["tensors"]
                .as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (k.clone(), tensors)
        })
        .collect();
    out.sort();
    out
}

/// The outcome of one case: `(quantity, abs, rel, tolerance)` rows, or an error.
type Rows = Vec<(String, f64, f64, f64)>;

impl Fixture {
    fn path(&self) -> Result<&DiffusionPath, String> {
        self.path
            .as_ref()
            .ok_or_else(|| "a diffusion case in a base-model fixture".to_string())
    }

    fn tensor3(&self, name: &str, dtype: DType) -> Tensor<3> {
        let (v, s) = self.cases.f32(name);
        t3(v, &s, &self.device, dtype)
    }

    fn scalar(&self, name: &str) -> f64 {
        let r = self.cases.raw(name);
        match r.dtype {
            safetensors::Dtype::I64 => r.i64()[0] as f64,
            _ => r.f32()[0] as f64,
        }
    }

    fn compare(
        &self,
        what: &str,
        got: Vec<f32>,
        want_name: &str,
        tol: f64,
    ) -> (String, f64, f64, f64) {
        let (want, _) = self.cases.f32(want_name);
        let (abs, rel) = errors(&got, &want);
        (what.to_string(), abs, rel, tol)
    }

    /// A tensor of the case whose name contains one of `keys` (guidance cases, whose tensor
    /// names the fixtures' README does not spell out).
    fn find(&self, case: &str, tensors: &[String], keys: &[&str]) -> Result<String, String> {
        tensors
            .iter()
            .find(|t| keys.iter().any(|k| t.contains(k)))
            .map(|t| format!("{case}.{t}"))
            .ok_or_else(|| format!("no tensor named like {keys:?} among {tensors:?}"))
    }

    fn classes(&self, name: &str) -> ClassLabels {
        let r = self.cases.raw(name);
        let v = r.i64();
        match r.shape.len() {
            1 => ClassLabels::PerSequence(Tensor::from_data(
                TensorData::new(v, [r.shape[0]]),
                &self.device,
            )),
            _ => ClassLabels::PerPosition(Tensor::from_data(
                TensorData::new(v, [r.shape[0], r.shape[1]]),
                &self.device,
            )),
        }
    }

    fn run(&self, case: &str, tensors: &[String]) -> Result<Rows, String> {
        let known = [
            "base",
            "flow",
            "flow_t0",
            "flow_class",
            "token_repr",
            "loss",
        ]
        .contains(&case)
            || ["velocity_temp", "ode_", "generate_greedy_"]
                .iter()
                .any(|p| case.starts_with(p));
        if !known {
            return Err(format!("unknown case kind `{case}`"));
        }
        let c = |t: &str| format!("{case}.{t}");
        let dev = &self.device;
        let base = &self.base;
        let opts = ForwardOptions::default();
        if case == "base" {
            let got = base.forward(self.cases.ids(&c("input_ids"), dev), None);
            return Ok(vec![self.compare("logits", to_vec(got), &c("logits"), TOL)]);
        }
        let path = self.path()?;
        let e = |e: l2d_models::diffusion::DiffusionError| e.to_string();
        let ids = || self.cases.ids(&c("input_ids"), dev);
        let ode_method = |name: &str| -> Option<(Method, usize)> {
            let mut parts = name.rsplitn(2, '_');
            let n: usize = parts.next()?.parse().ok()?;
            let method = Method::from_torchdiffeq_name(parts.next()?)?;
            Some((method, n))
        };
        if case == "flow" || case == "flow_t0" || case == "flow_class" {
            let (tv, ts) = self.cases.f32(&c("timesteps"));
            let t = Timesteps::Tensor(t2(tv, &ts, dev));
            let classes = if case == "flow_class" {
                Some(self.classes(&self.find(case, tensors, &["class", "label"])?))
            } else {
                None
            };
            let got = path
                .forward(
                    base,
                    ids(),
                    &opts,
                    self.tensor3(&c("flow_embeds"), DType::F32),
                    &t,
                    classes.as_ref(),
                )
                .map_err(e)?;
            return Ok(vec![self.compare("logits", to_vec(got), &c("logits"), TOL)]);
        }
        if case == "token_repr" {
            let got = path.token_representations(base, ids());
            return Ok(vec![self.compare(
                "flow_repr",
                to_vec(got),
                &c("flow_repr"),
                TOL,
            )]);
        }
        if case == "loss" {
            let (tv, ts) = self.cases.f32(&c("timesteps"));
            let labels = self.cases.ids(&c("labels"), dev);
            let mut inputs = LossInputs::new(ids(), labels);
            inputs.timesteps = Some(t2(tv, &ts, dev));
            inputs.noise = Some(self.tensor3(&c("noise"), DType::F32));
            let out = path.loss(base, inputs, None).map_err(e)?;
            return Ok(vec![self.compare(
                "loss",
                to_vec(out.loss),
                &c("loss"),
                TOL,
            )]);
        }
        let frozen = base.frozen_forward(ids(), &opts);
        let context = FlowContext::from_frozen(&frozen);
        let table = path.vocabulary_table(base);
        if case.starts_with("velocity_temp") {
            let t = self.scalar(&c("t"));
            let temperature = self.scalar(&c("temperature"));
            let mut field = FlowVelocityField::new(path, base, context, table)
                .map_err(e)?
                .with_temperature(TemperatureSchedule::Constant(temperature));
            let x = self.tensor3(&c("flow_embeds"), DType::F64);
            let v = field.try_velocity(t, &x).map_err(e)?;
            return Ok(vec![self.compare(
                "velocity",
                f64_vec(v),
                &c("velocity"),
                TOL,
            )]);
        }
        if case == "ode_dopri5" {
            // The fixture stores the tolerance as f32; torchdiffeq ran with the decimal it
            // came from (1e-4, not 9.99999974e-5). The adaptive solve is sensitive enough near
            // the 1/(1-t) singularity that the difference changes the step sequence.
            let tol: f64 = format!("{}", self.cases.raw(&c("tol")).f32()[0])
                .parse()
                .unwrap();
            let architecture = base.config().architecture;
            let mut field = FlowVelocityField::new(path, base, context, table)
                .map_err(e)?
                .with_endpoint(reference_endpoint_policy(architecture, Method::Dopri5));
            let solver =
                Solver::new(Method::Dopri5).with_controller(StepController::adaptive(tol, tol));
            let x0 = self.tensor3(&c("x0"), DType::F64);
            let (x, stats) = field.solve(&solver, x0, &[0.0, 1.0]).map_err(e)?;
            // The fixture counts the model's velocity evaluations; the stages at t >= 1, answered
            // with a zero velocity without calling the model, are not among them.
            let model_evals = (stats.nfe - stats.zero_velocity_evals) as f64;
            let want_nfe = self.scalar(&c("nfe"));
            let nfe_rel = (model_evals - want_nfe).abs() / want_nfe;
            println!(
                "    model evaluations {model_evals} (reference {want_nfe}); solver nfe {} incl. {} \
                 zero-velocity stages at t >= 1",
                stats.nfe, stats.zero_velocity_evals
            );
            return Ok(vec![
                self.compare("x_final", f64_vec(x), &c("x_final"), DOPRI_TOL),
                (
                    "nfe".into(),
                    (model_evals - want_nfe).abs(),
                    nfe_rel,
                    DOPRI_NFE_TOL,
                ),
            ]);
        }
        if let Some(rest) = case.strip_prefix("ode_") {
            let guided = rest.starts_with("guided_");
            let spec = rest.strip_prefix("guided_").unwrap_or(rest);
            let (method, n) =
                ode_method(spec).ok_or_else(|| format!("cannot parse the solver of `{case}`"))?;
            let architecture = base.config().architecture;
            let mut field = FlowVelocityField::new(path, base, context, table)
                .map_err(e)?
                .with_endpoint(reference_endpoint_policy(architecture, method));
            if guided {
                let classes = self.classes(&self.find(case, tensors, &["class", "label"])?);
                let w = self.scalar(&self.find(case, tensors, &["guidance", "weight", "scale"])?);
                field = field
                    .with_guidance(classes, Guidance::new(w).map_err(|e| e.to_string())?)
                    .map_err(e)?;
            }
            let times = linspace(0.0, path.config().nstep_final_timestep, n);
            let field = field.with_temperature_offset(
                l2d_models::diffusion::reference_temperature_offset(method, &times),
            );
            let mut field = field;
            let x0 = self.tensor3(&c("x0"), DType::F64);
            let (x, _) = field.solve(&Solver::new(method), x0, &times).map_err(e)?;
            let logits = field.logits(1.0, &x).map_err(e)?;
            return Ok(vec![
                self.compare("x_final", f64_vec(x), &c("x_final"), TOL),
                self.compare("logits", to_vec(logits), &c("logits"), TOL),
            ]);
        }
        if let Some(spec) = case.strip_prefix("generate_greedy_") {
            let (method, n) =
                ode_method(spec).ok_or_else(|| format!("cannot parse the solver of `{case}`"))?;
            return self.generate(path, method, n, case);
        }
        Err(format!("unknown case kind `{case}`"))
    }

    /// Greedy generation through the public [`Generator`]: the prompt through the generation
    /// loop, the fixture's noises as the initial flow states, midpoint over `n` grid points
    /// (`n - 1` solver steps), argmax of the logits at `t = 1`. A recording [`TokenStep`]
    /// wrapper keeps each token's logits for comparison.
    fn generate(
        &self,
        path: &DiffusionPath,
        method: Method,
        n: usize,
        case: &str,
    ) -> Result<Rows, String> {
        let c = |t: &str| format!("{case}.{t}");
        let dev = &self.device;
        let base = &self.base;
        let prompt: Vec<u32> = self
            .cases
            .ids_vec(&c("input_ids"))
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let (noises, ns) = self.cases.f32(&c("noises"));
        let (k, d) = (ns[0], ns[1]);
        let want_ids = self.cases.ids_vec(&c("generated"));
        let architecture = base.config().architecture;
        let mut options = DiffusionOptions::fixed(n - 1)
            .with_method(method)
            .with_state_dtype(DType::F64);
        options.endpoint = Some(reference_endpoint_policy(architecture, method));
        let generator = Generator::new(base, Some(path), options).map_err(|e| e.to_string())?;
        let noise = Tensor::<3>::from_data(TensorData::new(noises, [k, 1, d]), dev);
        let step = generator
            .step()
            .with_initial_noise(noise)
            .map_err(|e| e.to_string())?;
        let mut recorder = Recorder {
            inner: step,
            logits: Vec::new(),
        };
        let out = generate(
            &mut recorder,
            None,
            &[prompt],
            &GenerationConfig::greedy(k),
            |_| Flow::Continue,
        )
        .map_err(|e| e.to_string())?;
        let got_ids: Vec<i64> = out.sequences[0].tokens.iter().map(|&t| t as i64).collect();
        let stats = recorder.inner.stats();
        println!(
            "    generated {got_ids:?}, reference {want_ids:?}; NFE per token {}, diffusion \
             forwards per token {}",
            stats.mean_nfe_per_token(),
            stats.tokens[0].diffusion_forwards
        );
        let got_logits: Vec<f32> = recorder.logits.into_iter().flatten().collect();
        let mismatches = (0..want_ids.len().max(got_ids.len()))
            .filter(|&i| got_ids.get(i) != want_ids.get(i))
            .count();
        Ok(vec![
            self.compare("step_logits", got_logits, &c("step_logits"), TOL),
            (
                "generated ids".into(),
                mismatches as f64,
                mismatches as f64,
                0.0,
            ),
        ])
    }
}

/// A [`TokenStep`] that records the logits of the step it wraps.
struct Recorder<S> {
    inner: S,
    logits: Vec<Vec<f32>>,
}

impl<S: TokenStep> TokenStep for Recorder<S> {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn device(&self) -> Device {
        self.inner.device()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let logits = self.inner.next_logits(input_ids, cache, options)?;
        self.logits.push(to_vec(logits.clone()));
        Ok(logits)
    }
}

/// Runs every case of one fixture folder, printing a row per compared quantity; returns the
/// number of cases and the failures.
fn run_dir(dir: &Path) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut ran = 0;
    let fixture = load_fixture(dir);
    println!("fixture {} ({})", fixture.name, dir.display());
    println!(
        "  {:<28} {:<14} {:>10} {:>10} {:>8}",
        "case", "quantity", "max abs", "rel", "tol"
    );
    for (case, tensors) in case_names(dir) {
        ran += 1;
        match fixture.run(&case, &tensors) {
            Ok(rows) => {
                for (what, abs, rel, tol) in rows {
                    let ok = rel <= tol;
                    println!(
                        "  {case:<28} {what:<14} {abs:>10.2e} {rel:>10.2e} {tol:>8.0e} {}",
                        if ok { "ok" } else { "FAIL" }
                    );
                    if !ok {
                        failures.push(format!(
                            "{}/{case}: {what} rel error {rel:.3e} > {tol:.0e}",
                            fixture.name
                        ));
                    }
                }
            }
            Err(msg) => {
                println!("  {case:<28} ERROR {msg}");
                failures.push(format!("{}/{case}: {msg}", fixture.name));
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_reference_fixture_case_is_reproduced() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for dir in fixture_dirs() {
        let (n, f) = run_dir(&dir);
        ran += n;
        failures.extend(f);
    }
    assert!(ran > 0, "no fixture case ran");
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn base_only_folders_run_and_unknown_case_kinds_fail() {
    let src = repo_root().join("fixtures/reference/llama-tiny");
    // A base-model fixture: config, base weights and a `base` case, no l2d_config.json.
    let base_only = TempDir::new();
    for f in ["config.json", "base.safetensors", "cases.safetensors"] {
        std::fs::copy(src.join(f), base_only.path().join(f)).unwrap();
    }
    std::fs::write(
        base_only.path().join("cases.json"),
        r#"{"base": {"description": "base logits", "tensors": ["input_ids", "logits"]}}"#,
    )
    .unwrap();
    let (ran, failures) = run_dir(base_only.path());
    assert_eq!((ran, failures.len()), (1, 0), "{failures:?}");

    // A diffusion case in a base-only folder, and an unknown kind in a full one: failures.
    std::fs::write(
        base_only.path().join("cases.json"),
        r#"{"token_repr": {"description": "", "tensors": ["input_ids", "flow_repr"]}}"#,
    )
    .unwrap();
    assert_eq!(run_dir(base_only.path()).1.len(), 1);
    let full = copy_to_temp(&src);
    std::fs::write(
        full.path().join("cases.json"),
        r#"{"mystery": {"description": "?", "tensors": ["input_ids"]}}"#,
    )
    .unwrap();
    let (_, failures) = run_dir(full.path());
    assert_eq!(failures.len(), 1);
    assert!(
        failures[0].contains("unknown case kind `mystery`"),
        "{failures:?}"
    );
}

#[test]
fn the_whole_reference_state_dict_loads_to_the_same_path() {
    for dir in fixture_dirs() {
        if !dir.join("model.safetensors").is_file() || !dir.join("l2d_config.json").is_file() {
            continue;
        }
        let fixture = load_fixture(&dir);
        let base_config = ModelConfig::from_file(dir.join("config.json")).unwrap();
        let config = L2dConfig::from_file(dir.join("l2d_config.json")).unwrap();
        let (base, path) = load_reference_model(
            dir.join("model.safetensors"),
            &base_config,
            &config,
            &fixture.device,
            DType::F32,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", fixture.name));
        let a = fixture.path.as_ref().unwrap().reference_tensors().unwrap();
        let b = path.reference_tensors().unwrap();
        assert_eq!(a.len(), b.len());
        for ((ka, va), (kb, vb)) in a.into_iter().zip(b) {
            assert_eq!(ka, kb);
            assert_eq!(va, vb, "{ka}");
        }
        // Same base weights as base.safetensors.
        let ids = Tensor::<2, Int>::from_ints([[1, 2, 3]], &fixture.device);
        let diff = (base.forward(ids.clone(), None) - fixture.base.forward(ids, None))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert_eq!(diff, 0.0, "{}", fixture.name);
    }
}
