//! Diffusion generation through the public [`Generator`] on the tiny transformers models of
//! `fixtures/hf/` with random (non-zero) diffusion paths: zero steps or no adapter is base
//! generation bit for bit; a batch equals one-prompt calls; seeds and given noise reproduce
//! the documented noise derivation; the fused first evaluation and the conditioning cache
//! change no result; guidance runs both branches in one forward and equals separately
//! computed branches; adaptive budgets stop with the typed error or the fixed-grid fallback.

mod common;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::*;
use l2d_core::{TemperatureSchedule, X1Estimation, X1Estimator};
use l2d_guidance::Guidance;
use l2d_models::decoder::{CausalLm, ForwardOptions, KvCache};
use l2d_models::diffusion::{ClassLabels, DiffusionPath, FlowContext, FlowVelocityField};
use l2d_models::generation::diffusion::{prompt_key, token_rng};
use l2d_models::generation::{
    BaseStep, BudgetPolicy, DiffusionGenerationError, DiffusionMode, DiffusionOptions,
    DiffusionStats, Flow, GenerationConfig, GenerationError, GenerationOutput, Generator,
    StopReason, TokenStep, generate,
};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::sampling::SamplingConfig;
use l2d_solvers::{Diffusion, Method, Solver, StepController, linspace};

const ARCHS: [&str; 3] = ["llama3-tied", "qwen2-bias", "mistral-swa"];

fn model(name: &str) -> CausalLm {
    CausalLm::from_dir(&hf_fixture(name), &Device::flex(), DType::F32)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tiny_l2d(classes: Option<usize>) -> L2dConfig {
    L2dConfig {
        flow_representation_dim: Some(8),
        flow_to_lm_hidden_size: Some(12),
        timestep_modulation_hidden_size: Some(10),
        timestep_modulation_freq_embedding_size: Some(16),
        flow_lora_rank: 3,
        guidance_modulation_num_classes: classes,
        nstep_x1_estimation: "sample".into(),
        nstep_temperature_schedule: TemperatureSchedule::Constant(1.0),
        ..L2dConfig::default()
    }
}

/// A diffusion path whose every parameter is non-zero, so every part changes the logits.
fn random_path(base: &CausalLm, classes: Option<usize>, seed: u64) -> DiffusionPath {
    DiffusionPath::init(&tiny_l2d(classes), base, seed)
        .unwrap()
        .with_random_parameters(seed + 1, 0.3)
}

/// A random path of smaller weights: adaptive solves of the larger ones' velocity field
/// (stiff near `t = 1`) may need their step size to underflow.
fn gentle_path(base: &CausalLm, seed: u64) -> DiffusionPath {
    DiffusionPath::init(&tiny_l2d(None), base, seed)
        .unwrap()
        .with_random_parameters(seed + 1, 0.2)
}

/// Prompts of different lengths (the batch is left-padded).
fn prompts() -> Vec<Vec<u32>> {
    vec![vec![5, 9, 14, 3, 27], vec![8, 2], vec![40, 41, 42, 7]]
}

/// A [`TokenStep`] that records the logits of the step it wraps.
struct Recorder<S> {
    inner: S,
    logits: Vec<Vec<f32>>,
}

impl<S> Recorder<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            logits: Vec::new(),
        }
    }

    /// The recorded logits of batch row `row` (`vocab` per step).
    fn row(&self, row: usize, vocab: usize) -> Vec<f32> {
        self.logits
            .iter()
            .flat_map(|l| l[row * vocab..(row + 1) * vocab].to_vec())
            .collect()
    }
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

/// Generates with `step`, recording its logits.
fn run<S: TokenStep>(
    step: S,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> (GenerationOutput, Recorder<S>) {
    let mut rec = Recorder::new(step);
    let out = generate(&mut rec, None, prompts, config, |_| Flow::Continue).unwrap();
    (out, rec)
}

fn tokens(out: &GenerationOutput) -> Vec<Vec<u32>> {
    out.sequences.iter().map(|s| s.tokens.clone()).collect()
}

fn diffusion_run(
    generator: &Generator<'_>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> (GenerationOutput, Vec<Vec<f32>>, DiffusionStats) {
    let (out, rec) = run(generator.step(), prompts, config);
    let stats = rec.inner.stats().clone();
    (out, rec.logits, stats)
}

#[test]
fn zero_steps_or_no_adapter_is_base_generation_bit_for_bit() {
    for name in ARCHS {
        let base = model(name);
        let path = random_path(&base, None, 3);
        for config in [
            GenerationConfig::greedy(8),
            GenerationConfig::sampled(
                SamplingConfig {
                    temperature: 0.9,
                    top_k: Some(20),
                    seed: 11,
                    ..Default::default()
                },
                8,
            ),
        ] {
            let (want, want_rec) = run(BaseStep::new(&base), &prompts(), &config);
            let generators = [
                Generator::new(&base, Some(&path), DiffusionOptions::fixed(0)).unwrap(),
                Generator::new(&base, Some(&path), DiffusionOptions::base()).unwrap(),
                Generator::new(&base, None, DiffusionOptions::fixed(7)).unwrap(),
                Generator::base_only(&base),
            ];
            for g in &generators {
                assert!(!g.is_diffusion());
                let (out, logits, stats) = diffusion_run(g, &prompts(), &config);
                assert_eq!(tokens(&out), tokens(&want), "{name}");
                assert_eq!(
                    logits, want_rec.logits,
                    "{name}: logits differ from BaseStep"
                );
                assert_eq!(stats.mean_nfe_per_token(), 0.0);
                assert_eq!(stats.diffusion_forwards(), 0);
            }
        }
        // And a real diffusion run differs (the path is not a no-op).
        let g = Generator::new(&base, Some(&path), DiffusionOptions::fixed(3)).unwrap();
        let (_, logits, _) = diffusion_run(&g, &prompts(), &GenerationConfig::greedy(3));
        let (_, base_rec) = run(
            BaseStep::new(&base),
            &prompts(),
            &GenerationConfig::greedy(3),
        );
        let diff = max_abs_diff(&logits[0], &base_rec.logits[0]);
        assert!(
            diff > 1e-3,
            "{name}: diffusion logits equal the base's ({diff})"
        );
    }
}

#[test]
fn batched_rows_equal_one_prompt_calls() {
    let mut exact_adaptive = Vec::new();
    for name in ARCHS {
        let base = model(name);
        let vocab = base.config().vocab_size;
        let path = random_path(&base, Some(3), 5);
        let gentle = gentle_path(&base, 6);
        let mut adaptive = DiffusionOptions::adaptive(Method::Bosh3, 1e-4, 1e-4)
            .with_seed(4)
            .with_x1_estimate(X1Estimator::Average);
        adaptive.adaptive_min_step = 1e-6;
        let modes = [
            // Sampled x1 inside the ODE (per-row generators) and guidance with both branches.
            DiffusionOptions::fixed(4)
                .with_seed(9)
                .with_guidance(1, 2.0),
            DiffusionOptions::fixed(3)
                .with_method(Method::Rk4ThreeEighths)
                .with_seed(2),
            adaptive,
        ];
        for options in modes {
            let adaptive = matches!(options.mode, DiffusionMode::Adaptive { .. });
            // An adaptive solve's accepted steps react to rounding, and a left-padded batch's
            // frozen pass differs from a single prompt's in the last bits; with prompts of
            // one length the rows see the very same numbers (up to the backend's batched
            // matmul), which shows that rows do not influence each other's steps.
            let (p, prompts) = if adaptive {
                let same_length = vec![vec![5u32, 9, 14, 3], vec![8, 2, 7, 7], vec![40, 41, 42, 7]];
                (&gentle, same_length)
            } else {
                (&path, prompts())
            };
            let g = Generator::new(&base, Some(p), options.clone()).unwrap();
            let config = GenerationConfig::greedy(5);
            let (batched, logits, _) = diffusion_run(&g, &prompts, &config);
            let batched_rec = Recorder { inner: (), logits };
            let mut worst = 0.0f32;
            for (r, p) in prompts.iter().enumerate() {
                let (single, single_logits, _) =
                    diffusion_run(&g, std::slice::from_ref(p), &config);
                assert_eq!(
                    batched.sequences[r].tokens, single.sequences[0].tokens,
                    "{name} {:?} row {r}",
                    options.mode
                );
                let single_rec = Recorder {
                    inner: (),
                    logits: single_logits,
                };
                let (a, b) = (batched_rec.row(r, vocab), single_rec.row(0, vocab));
                let rel = max_abs_diff(&a, &b) / max_abs(&b);
                worst = worst.max(rel);
                let tol = if adaptive { 1e-2 } else { 1e-5 };
                assert!(rel < tol, "{name} {:?} row {r}: rel {rel}", options.mode);
            }
            println!(
                "{name} {:?}: batched vs single, worst rel {worst:e}",
                options.mode
            );
            if adaptive && worst == 0.0 {
                exact_adaptive.push(name);
            }
        }
    }
    assert!(
        !exact_adaptive.is_empty(),
        "no architecture gave bit-identical adaptive rows"
    );
}

#[test]
fn seeds_and_given_noise_follow_the_documented_derivation() {
    let base = model("llama3-tied");
    let path = random_path(&base, None, 7);
    let prompt = vec![vec![3u32, 17, 4, 60]];
    let config = GenerationConfig::greedy(4);
    let options = |seed| {
        DiffusionOptions::fixed(4)
            .with_seed(seed)
            .with_x1_estimate(X1Estimator::Average)
    };
    let g = |seed| Generator::new(&base, Some(&path), options(seed)).unwrap();
    let (a, la, _) = diffusion_run(&g(1), &prompt, &config);
    let (b, lb, _) = diffusion_run(&g(1), &prompt, &config);
    assert_eq!(la, lb, "same seed, different logits");
    assert_eq!(tokens(&a), tokens(&b));
    let (_, lc, _) = diffusion_run(&g(2), &prompt, &config);
    let diff = max_abs_diff(&la[0], &lc[0]);
    assert!(diff > 1e-4, "the seed does not change the logits ({diff})");

    // The documented derivation: token k of a row starts at
    // 64 · normal(HostRng::new(seed).derive(prompt_key(prompt)).derive(k)).
    let d = path.flow_dim();
    let sigma = path.config().noise_rescaling;
    let mut noise = Vec::new();
    for k in 0..4 {
        let mut rng = token_rng(1, prompt_key(&prompt[0]), k);
        noise.extend(rng.normal_vec(d).into_iter().map(|z| (z * sigma) as f32));
    }
    let noise = Tensor::<3>::from_data(TensorData::new(noise, [4, 1, d]), &Device::flex());
    let generator = g(99);
    let step = generator.step().with_initial_noise(noise.clone()).unwrap();
    let (given, rec) = run(step, &prompt, &config);
    assert_eq!(tokens(&given), tokens(&a));
    // The given noise is f32, the seeded one f64 before the cast: equal to rounding.
    let rel = max_abs_diff(&rec.logits.concat(), &la.concat()) / max_abs(&la.concat());
    assert!(rel < 1e-5, "given noise differs from the seeded run: {rel}");

    // More tokens than noise: a typed error.
    let step = generator.step().with_initial_noise(noise).unwrap();
    let mut rec = Recorder::new(step);
    let err = generate(
        &mut rec,
        None,
        &prompt,
        &GenerationConfig::greedy(6),
        |_| Flow::Continue,
    )
    .unwrap_err();
    let GenerationError::Step(e) = err else {
        panic!("{err}")
    };
    assert!(
        matches!(
            e.downcast_ref::<DiffusionGenerationError>(),
            Some(DiffusionGenerationError::NoiseExhausted { given: 4, token: 4 })
        ),
        "{e}"
    );
}

#[test]
fn fused_first_evaluation_and_conditioning_cache_change_no_result() {
    for name in ARCHS {
        let base = model(name);
        let path = random_path(&base, Some(2), 11);
        for (method, steps) in [
            (Method::Midpoint, 7),
            (Method::Euler, 5),
            (Method::Heun2, 3),
            (Method::Rk4ThreeEighths, 2),
        ] {
            for guided in [false, true] {
                let mut options = DiffusionOptions::fixed(steps).with_method(method);
                if guided {
                    options = options.with_guidance(0, 1.5);
                }
                let stages = method.tableau().stages();
                let config = GenerationConfig::greedy(4);
                let fused = Generator::new(&base, Some(&path), options.clone()).unwrap();
                assert!(fused.fuses_first_evaluation());
                let (fo, fl, fs) = diffusion_run(&fused, &prompts(), &config);
                let mut plain = options.with_fused_first_evaluation(false);
                plain.cache_conditioning = false;
                let plain = Generator::new(&base, Some(&path), plain).unwrap();
                let (po, pl, ps) = diffusion_run(&plain, &prompts(), &config);
                assert_eq!(tokens(&fo), tokens(&po), "{name} {method} guided={guided}");
                let rel = max_abs_diff(&fl.concat(), &pl.concat()) / max_abs(&pl.concat());
                assert!(rel < 1e-5, "{name} {method} guided={guided}: rel {rel}");
                // The paper's NFE is the same; the fused run makes one forward less per token.
                // heun2 and rk4 reach t = 1 in their last stage: a zero velocity, no forward.
                let zero = usize::from(matches!(method, Method::Heun2 | Method::Rk4ThreeEighths));
                for (f, p) in fs.tokens.iter().zip(&ps.tokens) {
                    assert_eq!(f.nfe, vec![steps * stages + 1; 3]);
                    assert_eq!(f.nfe, p.nfe);
                    assert_eq!((f.fused_evaluations, p.fused_evaluations), (1, 0));
                    assert_eq!(f.zero_velocity_evaluations, zero);
                    assert_eq!(p.diffusion_forwards, steps * stages + 1 - zero);
                    assert_eq!(f.diffusion_forwards, p.diffusion_forwards - 1);
                }
            }
        }
    }
}

#[test]
fn the_conditioning_cache_holds_each_time_once() {
    let base = model("qwen2-bias");
    let path = random_path(&base, None, 12);
    let g = Generator::new(&base, Some(&path), DiffusionOptions::fixed(7)).unwrap();
    let mut step = g.step();
    generate(
        &mut step,
        None,
        &prompts(),
        &GenerationConfig::greedy(5),
        |_| Flow::Continue,
    )
    .unwrap();
    // Midpoint over 8 points: stage times t_i and t_i + h/2 (t = 0 is fused, never computed),
    // and the final t = 1.
    let cache = step.conditioning_cache();
    assert_eq!(cache.len(), 7 * 2 - 1 + 1);
    // Five tokens, 14 lookups each, 14 computed once.
    assert_eq!(cache.hits(), 5 * 14 - 14);
}

/// Solves the first token's flow state by hand with two separately evaluated branches.
fn separate_branches(
    base: &CausalLm,
    path: &DiffusionPath,
    prompt: &[u32],
    x0: Tensor<3>,
    class: usize,
    weight: f64,
    steps: usize,
) -> Vec<f32> {
    let device = Device::flex();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(
            prompt.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            [1, prompt.len()],
        ),
        &device,
    );
    let frozen = base.frozen_forward(ids, &ForwardOptions::default());
    let context = FlowContext::from_frozen(&frozen).last_query();
    let table = path.vocabulary_table(base);
    let labels = |c: usize| ClassLabels::PerSequence(Tensor::from_ints([c as i64], &device));
    let field = |c: usize| {
        FlowVelocityField::new(path, base, context.clone(), table.clone())
            .unwrap()
            .with_estimation(X1Estimation::new(X1Estimator::Average))
            .with_guidance(labels(c), Guidance::disabled())
            .unwrap()
    };
    let times = linspace(0.0, 1.0, steps + 1);
    let offset = l2d_models::diffusion::reference_temperature_offset(Method::Midpoint, &times);
    let mut cond = field(class).with_temperature_offset(offset);
    let mut uncond = field(path.null_class().unwrap()).with_temperature_offset(offset);
    let mut combined = |t: f64, x: &Tensor<3>| {
        let vc = cond.try_velocity(t, x).unwrap();
        if weight == 1.0 {
            return vc;
        }
        let vu = uncond.try_velocity(t, x).unwrap();
        vc.mul_scalar(weight) + vu.mul_scalar(1.0 - weight)
    };
    let solver = Solver::new(Method::Midpoint).with_controller(StepController::RequestedTimes);
    let x = solver
        .solve(&mut combined, x0, &times)
        .unwrap()
        .into_last()
        .unwrap();
    to_vec(cond.logits(1.0, &x).unwrap())
}

#[test]
fn guidance_runs_both_branches_in_one_forward_and_equals_separate_branches() {
    let base = model("mistral-swa");
    let path = random_path(&base, Some(3), 21);
    let prompt = vec![12u32, 7, 99, 31, 2];
    let d = path.flow_dim();
    let device = Device::flex();
    let x0 = l2d_core::HostRng::new(5)
        .normal([1, 1, d], (&device, DType::F64))
        .mul_scalar(64.0);
    let noise = x0.clone().cast(DType::F32);
    let steps = 5;
    let config = GenerationConfig::greedy(1);
    let options = |guidance: Option<(usize, f64)>| {
        let mut o = DiffusionOptions::fixed(steps).with_x1_estimate(X1Estimator::Average);
        if let Some((c, w)) = guidance {
            o = o.with_guidance(c, w);
        }
        o
    };
    let first = |guidance| {
        let g = Generator::new(&base, Some(&path), options(guidance)).unwrap();
        let step = g.step().with_initial_noise(noise.clone()).unwrap();
        let (_, rec) = run(step, std::slice::from_ref(&prompt), &config);
        let forwards = rec.inner.stats().tokens[0].diffusion_forwards;
        (rec.logits[0].clone(), forwards)
    };
    let (unguided, f_none) = first(None);
    let (w1, f_w1) = first(Some((1, 1.0)));
    let (w3, f_w3) = first(Some((1, 3.0)));
    // One forward per stage in every case (fused first stage, plus the final forward): the
    // guided evaluation stacks both branches into one batched forward.
    assert_eq!((f_none, f_w1, f_w3), (2 * steps, 2 * steps, 2 * steps));
    // w = 1 is the conditional branch alone, w = 3 extrapolates away from the null class.
    let want_w1 = separate_branches(&base, &path, &prompt, x0.clone(), 1, 1.0, steps);
    let want_w3 = separate_branches(&base, &path, &prompt, x0.clone(), 1, 3.0, steps);
    for (got, want, what) in [(&w1, &want_w1, "w=1"), (&w3, &want_w3, "w=3")] {
        let rel = max_abs_diff(got, want) / max_abs(want);
        assert!(rel < 1e-5, "{what}: rel {rel}");
    }
    // Without guidance options the path is conditioned on the null class: w = 1 toward the
    // null class is the same thing.
    let (null_w1, _) = first(Some((3, 1.0)));
    assert!(max_abs_diff(&null_w1, &unguided) / max_abs(&unguided) < 1e-6);
    assert!(max_abs_diff(&w3, &w1) > 1e-3, "guidance changed nothing");
}

#[test]
fn adaptive_budgets_stop_with_the_typed_error_or_fall_back() {
    let base = model("llama3-tied");
    let path = gentle_path(&base, 31);
    let config = GenerationConfig::greedy(2);
    // The average estimate: the `sample` estimator's velocity is random, which no error
    // control can follow.
    let adaptive = DiffusionOptions::adaptive(Method::Dopri5, 1e-4, 1e-4)
        .with_x1_estimate(X1Estimator::Average);
    let g = Generator::new(&base, Some(&path), adaptive.clone()).unwrap();
    let (_, _, free) = diffusion_run(&g, &prompts(), &config);
    let needed = free.tokens[0].nfe.iter().copied().max().unwrap();
    println!(
        "unbounded dopri5 at 1e-4: NFE per row {:?}",
        free.tokens[0].nfe
    );
    assert!(
        needed > 12,
        "the unbounded solve needed only {needed} evaluations"
    );
    assert!(free.tokens.iter().all(|t| t.accepted_steps > 0));

    let budget = 8;
    let g = Generator::new(
        &base,
        Some(&path),
        adaptive.clone().with_max_nfe(budget, BudgetPolicy::Error),
    )
    .unwrap();
    let mut step = g.step();
    let err = generate(&mut step, None, &prompts(), &config, |_| Flow::Continue).unwrap_err();
    let GenerationError::Step(e) = err else {
        panic!("{err}")
    };
    match e.downcast_ref::<DiffusionGenerationError>() {
        Some(DiffusionGenerationError::BudgetExceeded {
            row, max_nfe, nfe, ..
        }) => {
            assert_eq!((*row, *max_nfe), (0, budget));
            assert!(*nfe <= budget);
        }
        other => panic!("{other:?}"),
    }

    let g = Generator::new(
        &base,
        Some(&path),
        adaptive.with_max_nfe(budget, BudgetPolicy::FixedGrid { steps: 2 }),
    )
    .unwrap();
    let (out, _, stats) = diffusion_run(&g, &prompts(), &config);
    assert_eq!(out.sequences.len(), 3);
    for t in &stats.tokens {
        assert_eq!(t.budget_fallbacks, 3);
        for &n in &t.nfe {
            // Spent within the budget, then 2 dopri5 steps (6 stages each, FSAL shares none on
            // a fresh solve), then the final evaluation.
            assert!(n > budget && n <= budget + 2 * 7 + 1, "nfe {n}");
        }
    }
}

#[test]
fn stops_streaming_and_statistics_work_with_diffusion() {
    let base = model("qwen2-bias");
    let path = random_path(&base, None, 41);
    let g = Generator::new(&base, Some(&path), DiffusionOptions::fixed(2)).unwrap();
    let prompt = vec![vec![4u32, 8, 15, 16]];
    let free = g
        .generate(None, &prompt, &GenerationConfig::greedy(6), |_| {
            Flow::Continue
        })
        .unwrap();
    let toks = &free.generation.sequences[0].tokens;
    assert_eq!(toks.len(), 6);
    // Stop on the third token: two tokens come out, the stop id is not among them.
    let config = GenerationConfig::greedy(6).with_stop_ids([toks[2]]);
    let mut streamed = Vec::new();
    let out = g
        .generate(None, &prompt, &config, |e| {
            streamed.extend(e.token);
            Flow::Continue
        })
        .unwrap();
    let seq = &out.generation.sequences[0];
    let first = toks.iter().position(|&t| t == toks[2]).unwrap();
    assert_eq!(seq.tokens, toks[..first]);
    assert_eq!(seq.stop_reason, StopReason::StopId(toks[2]));
    assert_eq!(streamed, seq.tokens);
    assert_eq!(out.diffusion.tokens.len(), first + 1);
    assert_eq!(out.diffusion.mean_nfe_per_token(), 5.0);
    assert!(out.diffusion.total_time() > std::time::Duration::ZERO);
}

#[test]
fn invalid_options_are_typed_errors() {
    let base = model("llama3-tied");
    let path = random_path(&base, None, 51);
    let with_classes = random_path(&base, Some(2), 52);
    let invalid = |options: DiffusionOptions, p: &DiffusionPath| {
        Generator::new(&base, Some(p), options)
            .unwrap_err()
            .to_string()
    };
    let e = invalid(
        DiffusionOptions::adaptive(Method::Midpoint, 1e-3, 1e-3),
        &path,
    );
    assert!(e.contains("midpoint has no error estimate"), "{e}");
    let e = invalid(DiffusionOptions::adaptive(Method::Bosh3, -1.0, 1e-3), &path);
    assert!(e.contains("tolerances"), "{e}");
    let e = invalid(DiffusionOptions::fixed(3).with_guidance(0, 2.0), &path);
    assert!(e.contains("no guidance classes"), "{e}");
    let e = invalid(
        DiffusionOptions::fixed(3).with_guidance(5, 2.0),
        &with_classes,
    );
    assert!(e.contains("class 5 is outside 0..=2"), "{e}");
    let e = invalid(
        DiffusionOptions::fixed(3).with_guidance(1, -2.0),
        &with_classes,
    );
    assert!(e.contains("guidance"), "{e}");
    // A path built for another base.
    let other = model("qwen2-bias");
    let e = Generator::new(&other, Some(&path), DiffusionOptions::fixed(3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit this base model"), "{e}");
}

#[test]
fn diffusion_modes_round_trip_through_their_text_and_bad_text_is_refused() {
    let modes = [
        DiffusionMode::Base,
        DiffusionMode::Fixed {
            steps: 7,
            method: l2d_solvers::Method::Midpoint,
        },
        DiffusionMode::Fixed {
            steps: 1,
            method: l2d_solvers::Method::Euler,
        },
        DiffusionMode::Adaptive {
            method: l2d_solvers::Method::Bosh3,
            rtol: 1e-3,
            atol: 2.5e-7,
            max_nfe: Some(64),
            on_budget: BudgetPolicy::FixedGrid { steps: 4 },
        },
        DiffusionMode::Adaptive {
            method: l2d_solvers::Method::Dopri5,
            rtol: 1e-5,
            atol: 1e-5,
            max_nfe: None,
            on_budget: BudgetPolicy::Error,
        },
        DiffusionMode::Sde {
            steps: 9,
            diffusion: Diffusion::Sigma { norm: 0.5 },
        },
        DiffusionMode::Sde {
            steps: 2,
            diffusion: Diffusion::Zero,
        },
        DiffusionMode::Sde {
            steps: 3,
            diffusion: Diffusion::IncreasingDecreasing { norm: 2.0 },
        },
        DiffusionMode::Sde {
            steps: 3,
            diffusion: Diffusion::Constant(1.5),
        },
    ];
    for mode in modes {
        let text = mode.to_string();
        assert_eq!(text.parse::<DiffusionMode>(), Ok(mode), "{text}");
    }
    // The options a setting gives are the options of its mode.
    let options = DiffusionOptions::from_mode("3:heun2".parse().unwrap());
    assert_eq!(options.nominal_nfe(), Some(3 * 2 + 1));
    for (bad, needle) in [
        ("0", "at least 1"),
        ("steps=x", "unknown setting"),
        ("7:midpoint:extra", "unexpected"),
        ("adaptive:euler", "no error estimate"),
        ("adaptive:fallback=3", "needs a `max-nfe`"),
        ("adaptive:rtol=-1", "rtol"),
        ("adaptive:max-nfe=0", "max-nfe"),
        ("adaptive:speed=2", "unknown adaptive option"),
        ("base:7", "no options"),
        ("7:warp", "warp"),
        ("sde", "needs its steps"),
        ("sde:0", "at least 1"),
        ("sde:4:brownian", "unknown diffusion coefficient"),
        ("sde:4:sigma=-1", "non-negative"),
        ("sde:4:constant", "needs a value"),
        ("sde:4:zero=2", "no value"),
        ("sde:4:zero:extra", "unexpected"),
        // What the generator would refuse, the grammar refuses (one validation).
        ("100001", "above the limit of 100000"),
        ("sde:100001", "above the limit of 100000"),
        ("adaptive:max-nfe=1000001", "above the limit of 1000000"),
        (
            "adaptive:max-nfe=8:fallback=100001",
            "above the limit of 100000",
        ),
    ] {
        let err = bad.parse::<DiffusionMode>().unwrap_err().to_string();
        assert!(err.contains(needle), "{bad}: {err}");
    }
    // A mode built without the grammar is checked by the same validation, naming the field.
    let unbounded = DiffusionMode::Adaptive {
        method: l2d_solvers::Method::Bosh3,
        rtol: 1e-3,
        atol: 1e-3,
        max_nfe: Some(0),
        on_budget: BudgetPolicy::Error,
    };
    assert!(matches!(
        unbounded.validate(),
        Err(DiffusionGenerationError::Invalid {
            field: "max_nfe",
            ..
        })
    ));
    let sde = DiffusionMode::Sde {
        steps: 0,
        diffusion: Diffusion::Zero,
    };
    assert!(matches!(
        sde.validate(),
        Err(DiffusionGenerationError::Invalid { field: "steps", .. })
    ));
}

#[test]
fn the_sde_sampler_without_noise_is_euler_and_its_noise_is_per_row_and_seeded() {
    let config = GenerationConfig::greedy(4);
    for name in ["llama3-tied", "qwen2-bias"] {
        let base = model(name);
        let vocab = base.config().vocab_size;
        let path = random_path(&base, None, 5);
        let generator = |mode: &str, seed: u64| {
            let options = DiffusionOptions::from_mode(mode.parse().unwrap()).with_seed(seed);
            Generator::new(&base, Some(&path), options).unwrap()
        };
        // g = 0: the sampler's steps are Euler's, bit for bit, at the same NFE.
        let (euler, euler_logits, euler_stats) =
            diffusion_run(&generator("4:euler", 3), &prompts(), &config);
        let (zero, zero_logits, zero_stats) =
            diffusion_run(&generator("sde:4:zero", 3), &prompts(), &config);
        assert_eq!(tokens(&zero), tokens(&euler), "{name}");
        assert_eq!(
            zero_logits, euler_logits,
            "{name}: sde:4:zero differs from 4:euler"
        );
        assert_eq!(zero_stats.mean_nfe_per_token(), 5.0);
        assert_eq!(euler_stats.mean_nfe_per_token(), 5.0);

        // g > 0: the noise changes the logits, a seed reproduces them, another seed changes
        // them, and each row's noise is its own (a batch equals one-prompt calls).
        let g = generator("sde:4:sigma=1", 3);
        let (batched, logits, stats) = diffusion_run(&g, &prompts(), &config);
        assert_eq!(stats.mean_nfe_per_token(), 5.0);
        let (_, again, _) = diffusion_run(&g, &prompts(), &config);
        assert_eq!(again, logits, "{name}: the same seed gave other logits");
        let noise_effect = max_abs_diff(&logits[0], &euler_logits[0]);
        assert!(
            noise_effect > 1e-4,
            "{name}: the SDE noise changed nothing ({noise_effect})"
        );
        let (_, other_seed, _) = diffusion_run(&generator("sde:4:sigma=1", 4), &prompts(), &config);
        let seed_effect = max_abs_diff(&other_seed[0], &logits[0]);
        assert!(
            seed_effect > 1e-4,
            "{name}: the seed changed nothing ({seed_effect})"
        );
        let batched_rec = Recorder { inner: (), logits };
        for (r, p) in prompts().iter().enumerate() {
            let (single, single_logits, _) = diffusion_run(&g, std::slice::from_ref(p), &config);
            assert_eq!(
                batched.sequences[r].tokens, single.sequences[0].tokens,
                "{name} row {r}"
            );
            let single_rec = Recorder {
                inner: (),
                logits: single_logits,
            };
            let (a, b) = (batched_rec.row(r, vocab), single_rec.row(0, vocab));
            let rel = max_abs_diff(&a, &b) / max_abs(&b);
            assert!(rel < 1e-5, "{name} row {r}: batched vs single rel {rel}");
        }
    }
    // Bad SDE options are typed errors naming the field.
    let base = model("llama3-tied");
    let path = random_path(&base, None, 5);
    for (mode, field) in [
        (
            DiffusionMode::Sde {
                steps: l2d_models::generation::MAX_SOLVER_STEPS + 1,
                diffusion: Diffusion::Zero,
            },
            "steps",
        ),
        (
            DiffusionMode::Sde {
                steps: 4,
                diffusion: Diffusion::Constant(f64::NAN),
            },
            "diffusion",
        ),
        (
            DiffusionMode::Sde {
                steps: 0,
                diffusion: Diffusion::Zero,
            },
            "steps",
        ),
    ] {
        match Generator::new(&base, Some(&path), DiffusionOptions::from_mode(mode)) {
            Err(DiffusionGenerationError::Invalid { field: f, .. }) => assert_eq!(f, field),
            Err(e) => panic!("{mode}: {e}"),
            Ok(_) => panic!("{mode}: accepted"),
        }
    }
}
