//! The sweep end to end on the tiny GGUF fixture: scoring through generation with a scripted
//! step, the base setting against direct generation, the report and plot files, diffusion
//! settings through the diffusion generator (and the typed error without an adapter).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use l2d::eval::report::EvalReport;
use l2d::eval::run::{EvalArgs, evaluate_setting, evaluate_with_step, prepare_prompts, run_eval};
use l2d::eval::setting::Setting;
use l2d::eval::task_file::TaskItem;
use l2d::eval::{EvalError, Extraction};
use l2d_models::decoder::{ForwardOptions, KvCache};
use l2d_models::diffusion::DiffusionPath;
use l2d_models::generation::{Flow, GenerationConfig, GenerationError, TokenStep};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::{LoadOptions, Pretrained};

mod support;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_gguf() -> PathBuf {
    root().join("fixtures/gguf/tiny-llama.gguf")
}

fn tiny() -> Pretrained {
    Pretrained::open(tiny_gguf().to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Emits a fixed token script per batch row (row `r` uses `scripts[r % len]`), then EOS.
struct Scripted {
    scripts: Vec<Vec<u32>>,
    eos: u32,
    vocab: usize,
    position: usize,
}

impl TokenStep for Scripted {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn device(&self) -> Device {
        Device::flex()
    }

    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        cache: &mut KvCache,
        _options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let [batch, seq] = input_ids.dims();
        if cache.is_empty() {
            self.position = 0;
        }
        // Keep the cache's length in step with the sequence, as a model would.
        let kv = Tensor::<4>::zeros([batch, 1, seq, 1], &Device::flex());
        cache.append(0, kv.clone(), kv);
        let mut logits = vec![0f32; batch * self.vocab];
        for r in 0..batch {
            let script = &self.scripts[r % self.scripts.len()];
            let id = script.get(self.position).copied().unwrap_or(self.eos);
            logits[r * self.vocab + id as usize] = 10.0;
        }
        self.position += 1;
        Ok(Tensor::from_data(
            TensorData::new(logits, [batch, self.vocab]),
            &Device::flex(),
        ))
    }
}

fn item(prompt: &str, answer: &str) -> TaskItem {
    TaskItem {
        prompt: prompt.into(),
        answer: answer.into(),
    }
}

#[test]
fn scoring_goes_through_generation_detokenisation_and_extraction() {
    support::install();
    let lm = tiny();
    let enc = |t: &str| lm.tokenizer.encode(t, false).unwrap();
    let eos = lm
        .stops
        .ids()
        .iter()
        .next()
        .copied()
        .expect("the fixture has an EOS id");
    let mut step = Scripted {
        scripts: vec![enc("The answer is 1,234."), enc("so -7"), enc("no idea")],
        eos,
        vocab: lm.model.config().vocab_size,
        position: 0,
    };
    // With batches of 3, row r of each batch gets script r.
    let items = vec![
        item("a", "1234"),
        item("b", "-7"),
        item("c", "0"),
        item("d", "1234"),
        item("e", "7"),
        item("f", "0"),
    ];
    let prompts = prepare_prompts(&lm, &items, true, None).unwrap();
    let generation = GenerationConfig::greedy(32);
    let r = evaluate_with_step(
        &lm,
        &mut step,
        Setting::Base,
        &prompts,
        &items,
        Extraction::Number,
        &generation,
        3,
    )
    .unwrap();
    assert_eq!((r.correct, r.total), (3, 6));
    assert_eq!(r.accuracy, 0.5);
    let verdicts: Vec<bool> = r.items.iter().map(|i| i.correct).collect();
    assert_eq!(verdicts, [true, true, false, true, false, false]);
    assert_eq!(r.items[0].output, "The answer is 1,234.");
    assert_eq!(r.items[0].extracted.as_deref(), Some("1234"));
    assert_eq!(r.items[1].extracted.as_deref(), Some("-7"));
    assert_eq!(r.items[2].extracted, None);
    assert_eq!(r.items[5].index, 5);
    // EOS ends each row: tokens are the script's, without the stop id.
    assert_eq!(r.items[0].tokens, enc("The answer is 1,234.").len());
    assert_eq!(
        r.generated_tokens,
        2 * (enc("The answer is 1,234.").len() + enc("so -7").len() + enc("no idea").len())
    );
    assert_eq!(r.mean_nfe_per_token, 0.0);
    assert!(r.seconds_per_answer > 0.0);
}

#[test]
fn the_base_setting_equals_direct_greedy_generation() {
    support::install();
    let lm = tiny();
    let items = vec![
        item("Hello world", "x"),
        item("How are you today?", "y"),
        item("1 2 3", "z"),
    ];
    let prompts = prepare_prompts(&lm, &items, true, None).unwrap();
    assert_eq!(prompts[0], lm.encode("Hello world").unwrap());
    let generation = GenerationConfig::greedy(6);
    let r = evaluate_setting(
        &lm,
        None,
        None,
        Setting::Base,
        &prompts,
        &items,
        Extraction::ExactMatch,
        &generation,
        2,
    )
    .unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let alone = lm
            .generate(std::slice::from_ref(p), &generation, |_| Flow::Continue)
            .unwrap();
        assert_eq!(r.items[i].output, alone.sequences[0].text, "item {i}");
        assert_eq!(r.items[i].tokens, alone.sequences[0].tokens.len());
        assert_eq!(
            r.items[i].correct,
            alone.sequences[0].text.trim() == items[i].answer
        );
    }
}

#[test]
fn diffusion_settings_need_an_adapter_and_run_through_the_generator() {
    support::install();
    let lm = tiny();
    let items = vec![item("Hello world", "1"), item("1 2 3", "2")];
    let prompts = prepare_prompts(&lm, &items, true, None).unwrap();
    let generation = GenerationConfig::greedy(4);
    for s in ["8", "adaptive:bosh3", "sde:4"] {
        let setting: Setting = s.parse().unwrap();
        match evaluate_setting(
            &lm,
            None,
            None,
            setting,
            &prompts,
            &items,
            Extraction::Number,
            &generation,
            1,
        ) {
            Err(EvalError::AdapterRequired { setting: named }) => {
                assert_eq!(named, setting.to_string())
            }
            other => panic!("{other:?}"),
        }
    }
    // A freshly initialised path is gated to zero: every setting reproduces the base
    // setting's answers, at the setting's NFE.
    let config = L2dConfig {
        flow_representation_dim: Some(8),
        flow_to_lm_hidden_size: Some(16),
        timestep_modulation_hidden_size: Some(16),
        timestep_modulation_freq_embedding_size: Some(16),
        flow_lora_rank: 4,
        ..L2dConfig::default()
    };
    let path = DiffusionPath::init(&config, &lm.model, 0).unwrap();
    let run = |s: &str| {
        evaluate_setting(
            &lm,
            Some(&path),
            None,
            s.parse().unwrap(),
            &prompts,
            &items,
            Extraction::Number,
            &generation,
            2,
        )
        .unwrap()
    };
    let base = run("base");
    for (s, nfe) in [
        ("3", Some(7.0)),
        ("2:euler", Some(3.0)),
        ("sde:3", Some(4.0)),
        ("adaptive:bosh3:rtol=1e-3:atol=1e-3", None),
    ] {
        let r = run(s);
        let outputs = |r: &l2d::eval::SettingResult| {
            r.items.iter().map(|i| i.output.clone()).collect::<Vec<_>>()
        };
        assert_eq!(outputs(&r), outputs(&base), "{s}");
        match nfe {
            Some(n) => assert_eq!(r.mean_nfe_per_token, n, "{s}"),
            None => assert!(r.mean_nfe_per_token > 1.0, "{s}: {}", r.mean_nfe_per_token),
        }
    }
}

fn args(dir: &Path, settings: Vec<Setting>) -> EvalArgs {
    EvalArgs {
        model: tiny_gguf().display().to_string(),
        adapter: None,
        lora: None,
        tasks: root().join("fixtures/eval/arithmetic.jsonl"),
        extract: Extraction::Number,
        settings,
        raw: true,
        system: None,
        max_new_tokens: 4,
        stops: vec![],
        limit: Some(5),
        batch_size: 4,
        seed: 3,
        device: "cpu".into(),
        dtype: "f32".into(),
        report: dir.join("out/report.json"),
        plot: dir.join("out/plot.svg"),
        append: false,
    }
}

#[test]
fn append_adds_settings_to_a_report_of_the_same_sweep_and_refuses_another() {
    support::install();
    let dir = std::env::temp_dir().join(format!("l2d-eval-append-{}", std::process::id()));
    let first = run_eval(&args(&dir, vec![Setting::Base])).unwrap();
    // Appending to a report that does not exist is an error naming the file.
    let mut a = args(&dir, vec!["2".parse().unwrap()]);
    a.append = true;
    a.report = dir.join("out/none.json");
    assert!(matches!(
        run_eval(&a),
        Err(EvalError::AdapterRequired { .. })
    ));
    let mut a = args(&dir, vec![Setting::Base]);
    a.append = true;
    a.report = dir.join("out/none.json");
    assert!(matches!(run_eval(&a), Err(EvalError::Io { path, .. }) if path.ends_with("none.json")));
    // A LoRA setting added later: the report holds both, the first unchanged, and names the
    // LoRA file; the plot draws both.
    let base = tiny().model;
    let lora = dir.join("lora.safetensors");
    fresh_lora(&base).save(&lora, &base).unwrap();
    let mut a = args(&dir, vec![Setting::Lora]);
    a.append = true;
    a.lora = Some(lora.clone());
    let merged = run_eval(&a).unwrap();
    let labels: Vec<&str> = merged.settings.iter().map(|r| r.label.as_str()).collect();
    assert_eq!(labels, ["base", "lora"]);
    assert_eq!(merged.settings[0], first.settings[0]);
    assert_eq!(merged.lora.as_deref(), lora.to_str());
    assert_eq!(EvalReport::read_json(&a.report).unwrap(), merged);
    let svg = std::fs::read_to_string(&a.plot).unwrap();
    assert!(svg.contains("base (") && svg.contains("lora ("), "{svg}");
    // Running a setting again replaces it in place.
    let mut a = args(&dir, vec![Setting::Base]);
    a.append = true;
    let again = run_eval(&a).unwrap();
    assert_eq!(again.settings.len(), 2);
    assert_eq!(again.settings[0].label, "base");
    // Another sweep is refused, naming what differs, and the report is left as it was.
    for (edit, field) in [
        (
            Box::new(|a: &mut EvalArgs| a.max_new_tokens = 5) as Box<dyn Fn(&mut EvalArgs)>,
            "max new tokens",
        ),
        (Box::new(|a: &mut EvalArgs| a.limit = Some(4)), "items"),
        (Box::new(|a: &mut EvalArgs| a.seed = 4), "seed"),
        (Box::new(|a: &mut EvalArgs| a.raw = false), "chat template"),
        (
            Box::new(|a: &mut EvalArgs| a.lora = Some("other.safetensors".into())),
            "lora",
        ),
    ] {
        let before = std::fs::read(&a.report).unwrap();
        let mut b = args(&dir, vec![Setting::Base]);
        b.append = true;
        edit(&mut b);
        if b.lora.is_some() {
            std::fs::copy(&lora, dir.join("other.safetensors")).unwrap();
            b.lora = Some(dir.join("other.safetensors"));
        }
        let err = run_eval(&b).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("append"),
            "{field}: {err}"
        );
        assert_eq!(std::fs::read(&a.report).unwrap(), before, "{field}");
    }
    // `cpu` and `flex` name one device; a report made on another device is refused.
    let mut b = args(&dir, vec![Setting::Base]);
    b.append = true;
    b.device = "flex".into();
    run_eval(&b).unwrap();
    let mut gpu = EvalReport::read_json(&a.report).unwrap();
    gpu.device = "vulkan".into();
    gpu.write_json(&a.report).unwrap();
    let before = std::fs::read(&a.report).unwrap();
    let err = run_eval(&b).unwrap_err().to_string();
    assert!(err.contains("device vulkan"), "{err}");
    assert_eq!(std::fs::read(&a.report).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh LoRA of the tiny model.
fn fresh_lora(base: &l2d_models::decoder::CausalLm) -> l2d_models::lora::DecoderLora {
    use l2d_models::decoder::Projection;
    use l2d_models::lora::{DecoderLora, LoraConfig};
    DecoderLora::init(&LoraConfig::new(2, 4.0, Projection::ALL.to_vec()), base, 1).unwrap()
}

#[test]
fn run_eval_writes_a_report_and_a_plot() {
    support::install();
    let dir = std::env::temp_dir().join(format!("l2d-eval-{}", std::process::id()));
    let a = args(&dir, vec![Setting::Base]);
    // Its progress goes out as two events, one before the items and one per setting.
    let (report, lines) = support::lines_of(|| run_eval(&a));
    let report = report.unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].starts_with("base: accuracy "), "{lines:?}");
    assert_eq!(report.num_items, 5);
    assert_eq!(report.settings.len(), 1);
    let r = &report.settings[0];
    assert_eq!(r.label, "base");
    assert_eq!(r.total, 5);
    assert_eq!(r.correct, r.items.iter().filter(|i| i.correct).count());
    for i in &r.items {
        assert!(i.tokens <= 4);
        assert_eq!(
            i.correct,
            Extraction::Number.is_correct(&i.output, &i.expected)
        );
    }
    assert_eq!(report.extraction, "number");
    assert_eq!((report.seed, report.device.as_str()), (3, "cpu"));
    assert!(!report.chat_template);
    if let Some(c) = &report.git_commit {
        assert_eq!(c.len(), 40);
    }
    let back = EvalReport::read_json(&a.report).unwrap();
    // JSON keeps everything.
    assert_eq!(back.settings[0], *r);
    assert_eq!(
        (back.model.as_str(), back.num_items),
        (report.model.as_str(), 5)
    );
    assert_eq!(back.git_commit, report.git_commit);
    let svg = std::fs::read_to_string(&a.plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("base ("));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_eval_rejects_bad_arguments_before_loading_anything() {
    support::install();
    let dir = std::env::temp_dir().join(format!("l2d-eval-bad-{}", std::process::id()));
    let mut a = args(&dir, vec![Setting::Base, "16".parse().unwrap()]);
    a.model = "/no/such/model".into();
    assert!(matches!(
        run_eval(&a),
        Err(EvalError::AdapterRequired { setting }) if setting == "steps=16:midpoint"
    ));
    let mut a = args(&dir, vec![Setting::Base]);
    a.adapter = Some("no-such-adapter.safetensors".into());
    assert!(matches!(
        run_eval(&a),
        Err(EvalError::Io { path, .. }) if path.ends_with("no-such-adapter.safetensors")
    ));
    let mut a = args(&dir, vec![Setting::Base]);
    a.device = "tpu".into();
    let err = run_eval(&a).unwrap_err().to_string();
    assert!(err.contains("device") && err.contains("tpu"), "{err}");
    let mut a = args(&dir, vec![Setting::Base]);
    a.dtype = "f8".into();
    assert!(run_eval(&a).unwrap_err().to_string().contains("dtype"));
    let mut a = args(&dir, vec![Setting::Base]);
    a.model = "/no/such/model".into();
    assert!(matches!(run_eval(&a), Err(EvalError::Model(_))));
    let mut a = args(&dir, vec![Setting::Base]);
    a.tasks = dir.join("missing.jsonl");
    assert!(matches!(run_eval(&a), Err(EvalError::Io { .. })));
    assert!(!dir.join("out").exists(), "nothing written on error");
}

#[test]
fn the_report_plot_draws_each_kind_of_setting() {
    support::install();
    use l2d::eval::report::SettingResult;
    let result = |setting: Setting, acc: f64, nfe: f64| SettingResult {
        setting,
        label: setting.to_string(),
        correct: (acc * 10.0) as usize,
        total: 10,
        accuracy: acc,
        mean_nfe_per_token: nfe,
        generated_tokens: 10,
        seconds_per_answer: 0.1,
        tokens_per_second: 100.0,
        items: vec![],
    };
    let report = EvalReport {
        model: "models/tiny".into(),
        adapter: Some("adapter".into()),
        lora: None,
        tasks: "tasks/arith.jsonl".into(),
        num_items: 10,
        extraction: "number".into(),
        chat_template: true,
        system: None,
        stops: vec![],
        max_new_tokens: 8,
        seed: 0,
        device: "cpu".into(),
        dtype: "f32".into(),
        git_commit: None,
        created_unix: 0,
        settings: vec![
            result(Setting::Base, 0.5, 0.0),
            result("2".parse().unwrap(), 0.6, 4.0),
            result("4".parse().unwrap(), 0.7, 8.0),
            result("4:euler".parse().unwrap(), 0.65, 4.0),
            result("adaptive".parse().unwrap(), 0.72, 11.5),
            result("sde:8".parse().unwrap(), 0.66, 9.0),
            result("sde:2".parse().unwrap(), 0.55, 3.0),
        ],
    };
    let plot = report.plot();
    let labels: Vec<&str> = plot.series.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "base (0.500)",
            "L2D midpoint",
            "L2D euler",
            "L2D sde sigma=1",
            "adaptive:dopri5:rtol=0.00001:atol=0.00001"
        ]
    );
    assert_eq!(plot.series[1].points, vec![(4.0, 0.6), (8.0, 0.7)]);
    assert_eq!(plot.series[3].points, vec![(3.0, 0.55), (9.0, 0.66)]);
    assert_eq!(plot.series[4].points, vec![(11.5, 0.72)]);
    assert!(plot.log2_x);
    assert_eq!(plot.title, "tiny on arith.jsonl");
    let table = report.table();
    assert_eq!(table.lines().count(), 2 + 7);
    assert!(
        table.contains("| steps=4:euler | 0.650 | 6/10 | 4.00 |"),
        "{table}"
    );
}

/// Every float of a report reads back bit for bit (`--append` compares the settings already in a
/// report with what it keeps; serde_json's default float parser can be one ULP off, which once
/// made this fail on a value like `1675.3063611801365`).
#[test]
fn a_report_reads_back_every_float_bit_for_bit() {
    support::install();
    let dir = std::env::temp_dir().join(format!("l2d-eval-floats-{}", std::process::id()));
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut floats = vec![1675.3063611801365, 0.0023876229999999997, 1.0 / 3.0, 5e-324];
    for _ in 0..2000 {
        // xorshift64: a spread of magnitudes and mantissas, all finite.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
        let exponent = (state % 40) as i32 - 20;
        floats.push(mantissa * 10f64.powi(exponent));
    }
    let settings = floats
        .chunks(4)
        .map(|f| l2d::eval::report::SettingResult {
            setting: Setting::Base,
            label: "base".into(),
            correct: 0,
            total: 1,
            accuracy: f[0],
            mean_nfe_per_token: f[1 % f.len()],
            generated_tokens: 1,
            seconds_per_answer: f[2 % f.len()],
            tokens_per_second: f[3 % f.len()],
            items: vec![],
        })
        .collect();
    let report = EvalReport {
        model: "m".into(),
        adapter: None,
        lora: None,
        tasks: "t".into(),
        num_items: 1,
        extraction: "number".into(),
        chat_template: true,
        system: None,
        stops: vec![],
        max_new_tokens: 1,
        seed: 0,
        device: "cpu".into(),
        dtype: "f32".into(),
        git_commit: None,
        created_unix: 0,
        settings,
    };
    let path = dir.join("floats.json");
    report.write_json(&path).unwrap();
    let back = EvalReport::read_json(&path).unwrap();
    let bits = |r: &EvalReport| -> Vec<u64> {
        r.settings
            .iter()
            .flat_map(|s| {
                [
                    s.accuracy,
                    s.mean_nfe_per_token,
                    s.seconds_per_answer,
                    s.tokens_per_second,
                ]
            })
            .map(f64::to_bits)
            .collect()
    };
    assert_eq!(bits(&back), bits(&report));
    std::fs::remove_dir_all(&dir).ok();
}

/// Adds `delta` to every parameter of a module.
struct Shift(f64);

impl burn::module::ModuleMapper for Shift {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let (id, t, mapper) = param.consume();
        burn::module::Param::from_mapped_value(id, t.add_scalar(self.0), mapper)
    }
}

#[test]
fn the_lora_setting_runs_the_model_with_its_lora() {
    support::install();
    use burn::module::Module;
    use l2d_models::decoder::Projection;
    use l2d_models::lora::{DecoderLora, LoraConfig};

    let dir = std::env::temp_dir().join(format!("l2d-eval-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // `lora` without a LoRA file is refused before anything loads.
    let a = args(&dir, vec![Setting::Base, Setting::Lora]);
    assert!(matches!(
        run_eval(&a),
        Err(EvalError::AdapterRequired { setting }) if setting == "lora"
    ));
    let base = tiny().model;
    let fresh =
        DecoderLora::init(&LoraConfig::new(2, 4.0, Projection::ALL.to_vec()), &base, 1).unwrap();
    // A fresh LoRA (B = 0) answers exactly as the base model.
    let zero = dir.join("zero.safetensors");
    fresh.save(&zero, &base).unwrap();
    let mut a = args(&dir, vec![Setting::Base, Setting::Lora]);
    a.lora = Some(zero.clone());
    let report = run_eval(&a).unwrap();
    assert_eq!(report.lora.as_deref(), Some(zero.to_str().unwrap()));
    let outputs = |i: usize| -> Vec<String> {
        report.settings[i]
            .items
            .iter()
            .map(|x| x.output.clone())
            .collect()
    };
    assert_eq!(report.settings[1].label, "lora");
    assert_eq!(outputs(0), outputs(1));
    // A trained (here: shifted) LoRA changes the answers.
    let shifted = dir.join("shifted.safetensors");
    fresh.map(&mut Shift(0.05)).save(&shifted, &base).unwrap();
    let mut a = args(&dir, vec![Setting::Base, Setting::Lora]);
    a.lora = Some(shifted);
    let report = run_eval(&a).unwrap();
    let changed = report.settings[0]
        .items
        .iter()
        .zip(&report.settings[1].items)
        .filter(|(x, y)| x.output != y.output)
        .count();
    assert!(changed > 0, "the LoRA changed no answer");
    // The plot draws the LoRA as a level beside the base.
    let svg = report.plot().to_svg();
    assert!(svg.contains("lora ("), "{svg}");
    std::fs::remove_dir_all(&dir).ok();
}
