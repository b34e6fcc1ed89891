//! The `l2d` binary end to end (`generate`, `chat`, `info`, `eval`) on the tiny GGUF fixture
//! with adapters written by the library, and SmolLM2 for the chat template: output, the
//! statistics line, and clear errors with non-zero exit codes for bad flags, missing files and
//! adapters that do not fit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use burn::module::Module;
use burn::tensor::{DType, Device};
use l2d_models::decoder::CausalLm;
use l2d_models::diffusion::{DiffusionPath, diffusion_param_count};
use l2d_models::generation::{Flow, GenerationConfig};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::{LoadOptions, Pretrained};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_gguf() -> String {
    root()
        .join("fixtures/gguf/tiny-llama.gguf")
        .display()
        .to_string()
}

mod support;
use support::smollm2::smollm2_gguf as smollm2;

/// A temporary folder removed on drop.
struct Temp(PathBuf);

impl Temp {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("l2d-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tiny_l2d(classes: Option<usize>) -> L2dConfig {
    L2dConfig {
        flow_representation_dim: Some(8),
        flow_to_lm_hidden_size: Some(16),
        timestep_modulation_hidden_size: Some(16),
        timestep_modulation_freq_embedding_size: Some(16),
        flow_lora_rank: 4,
        guidance_modulation_num_classes: classes,
        ..L2dConfig::default()
    }
}

/// Writes an adapter for `base` (random non-zero parameters) and returns its path.
fn write_adapter(dir: &Path, name: &str, base: &CausalLm, classes: Option<usize>) -> PathBuf {
    let path = DiffusionPath::init(&tiny_l2d(classes), base, 1)
        .unwrap()
        .with_random_parameters(2, 0.05);
    let file = dir.join(name);
    path.save(&file, base).unwrap();
    file
}

fn l2d(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_l2d"))
        .args(args)
        .output()
        .expect("the l2d binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a failure with `code` whose standard error contains every one of `needles`.
fn fails(out: &Output, code: i32, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in stderr: {err}");
    }
}

fn succeeds(out: &Output) -> (String, String) {
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {o}\nstderr: {e}",
        out.status
    );
    (o, e)
}

#[test]
fn generate_streams_the_reply_and_reports_nfe() {
    let dir = Temp::new("generate");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, None);
    let adapter = adapter.to_str().unwrap();
    let model = tiny_gguf();
    let common = ["generate", "--model", &model, "--max-new-tokens", "6"];

    // Base model: the frozen reply, NFE 0; the same as the library's greedy generation.
    let (base_out, base_err) = succeeds(&l2d(&[&common[..], &["Hello world"]].concat()));
    let want = lm
        .generate(
            &[lm.encode("Hello world").unwrap()],
            &GenerationConfig::greedy(6),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(base_out, format!("{}\n", want.sequences[0].text));
    assert!(base_err.contains("frozen model"), "{base_err}");
    assert!(
        base_err.contains("NFE per token 0.0 (base model)"),
        "{base_err}"
    );
    assert!(base_err.contains("tokens/s"), "{base_err}");

    // --steps 0 with an adapter, and --base-only, are the base model too.
    for extra in [
        &["--adapter", adapter, "--steps", "0"][..],
        &["--adapter", adapter, "--base-only", "--steps", "5"],
    ] {
        let (o, _) = succeeds(&l2d(&[&common[..], extra, &["Hello world"]].concat()));
        assert_eq!(o, base_out, "{extra:?}");
    }

    // Diffusion: midpoint, 3 steps = 7 NFE per token, the first stage fused.
    let (_, err) = succeeds(&l2d(&[
        &common[..],
        &["--adapter", adapter, "--steps", "3", "Hello world"],
    ]
    .concat()));
    assert!(err.contains("3 midpoint steps (7 NFE per token)"), "{err}");
    assert!(err.contains("NFE per token 7.0"), "{err}");
    assert!(err.contains("6.0 diffusion forwards per step"), "{err}");

    // Adaptive with a budget and a fallback; a batch of two prompts printed in order.
    let (out, err) = succeeds(&l2d(&[
        &common[..],
        &[
            "--adapter",
            adapter,
            "--solver",
            "bosh3",
            "--rtol",
            "1e-3",
            "--atol",
            "1e-3",
            "--max-nfe",
            "200",
            "--budget-fallback-steps",
            "4",
            "--x1",
            "average",
            "Hello world",
            "1 2 3",
        ],
    ]
    .concat()));
    assert!(
        out.contains("--- 1: Hello world") && out.contains("--- 2: 1 2 3"),
        "{out}"
    );
    assert!(err.contains("adaptive bosh3"), "{err}");
}

#[test]
fn bad_flags_missing_files_and_mismatched_adapters_fail_clearly() {
    let dir = Temp::new("errors");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, None);
    let adapter = adapter.to_str().unwrap();
    let model = tiny_gguf();
    let generate = |extra: &[&str]| {
        l2d(&[
            &["generate", "--model", &model, "--max-new-tokens", "2"][..],
            extra,
            &["Hi"],
        ]
        .concat())
    };

    // clap: malformed values and unknown flags exit with 2.
    fails(&generate(&["--steps", "many"]), 2, &["--steps"]);
    fails(&generate(&["--no-such-flag"]), 2, &["--no-such-flag"]);
    fails(&l2d(&["generate", "Hi"]), 2, &["--model"]);
    // Missing files.
    fails(
        &l2d(&["generate", "--model", "/no/such/model.gguf", "Hi"]),
        1,
        &["model `/no/such/model.gguf` does not exist"],
    );
    fails(
        &generate(&["--adapter", "/no/such/adapter.safetensors"]),
        1,
        &["adapter `/no/such/adapter.safetensors` does not exist"],
    );
    // Diffusion flags without an adapter, contradictory solver flags, unknown names.
    fails(
        &generate(&["--steps", "4"]),
        1,
        &["--steps", "needs a trained adapter"],
    );
    fails(
        &generate(&["--adapter", adapter, "--solver", "dopri5", "--steps", "4"]),
        1,
        &["adaptive solver dopri5"],
    );
    fails(
        &generate(&["--adapter", adapter, "--rtol", "1e-3"]),
        1,
        &["--rtol", "only adaptive solvers"],
    );
    fails(
        &generate(&["--adapter", adapter, "--solver", "rk45"]),
        1,
        &["unknown solver \"rk45\""],
    );
    fails(
        &generate(&["--adapter", adapter, "--solver", "bosh3", "--rtol=-1"]),
        1,
        &["--rtol/--atol", "positive"],
    );
    fails(
        &generate(&["--adapter", adapter, "--x1", "mode"]),
        1,
        &["--x1"],
    );
    fails(&generate(&["--temperature=-1"]), 1, &["temperature"]);
    fails(
        &generate(&[
            "--adapter",
            adapter,
            "--guidance-class",
            "1",
            "--guidance-weight",
            "2",
        ]),
        1,
        &["no guidance classes"],
    );
    fails(&generate(&["--device", "tpu"]), 1, &["--device", "tpu"]);
    // Work is bounded: huge step counts and budgets fail at once (no grid is built).
    fails(
        &generate(&["--adapter", adapter, "--steps", "1000000000"]),
        1,
        &["--steps", "above the limit of 100000"],
    );
    fails(
        &generate(&[
            "--adapter",
            adapter,
            "--solver",
            "bosh3",
            "--max-nfe",
            "10",
            "--budget-fallback-steps",
            "1000000000",
        ]),
        1,
        &["--budget-fallback-steps", "above the limit of 100000"],
    );
    fails(
        &generate(&[
            "--adapter",
            adapter,
            "--solver",
            "bosh3",
            "--max-nfe",
            "4000000000",
        ]),
        1,
        &["--max-nfe", "above the limit"],
    );
    // Each flag's value is checked by the mode's one validation, the error naming the flag.
    for (flags, names) in [
        (&["--max-nfe", "0"][..], &["--max-nfe", "at least 1"][..]),
        (
            &["--max-nfe", "8", "--budget-fallback-steps", "0"],
            &["--budget-fallback-steps", "at least 1"],
        ),
    ] {
        let mut args = vec!["--adapter", adapter, "--solver", "bosh3"];
        args.extend_from_slice(flags);
        fails(&generate(&args), 1, names);
    }
    let report = dir.0.join("report.json");
    fails(
        &l2d(&[
            "eval",
            "--model",
            &model,
            "--adapter",
            adapter,
            "--tasks",
            root()
                .join("fixtures/eval/arithmetic.jsonl")
                .to_str()
                .unwrap(),
            "--settings",
            "1000000000",
            "--report",
            report.to_str().unwrap(),
        ]),
        2,
        &["--settings", "above the limit of 100000"],
    );
    assert!(!report.exists());

    // An adapter built for another architecture.
    let other = CausalLm::from_dir(
        &root().join("fixtures/hf/qwen2-bias"),
        &Device::flex(),
        DType::F32,
    )
    .unwrap();
    let foreign = write_adapter(&dir.0, "foreign.safetensors", &other, None);
    fails(
        &generate(&["--adapter", foreign.to_str().unwrap()]),
        1,
        &[
            "foreign.safetensors",
            "architecture \"qwen2\": the base model is `llama`",
        ],
    );
    // An adapter trained on other weights of the same shape: refused unless forced.
    let twin = CausalLm::random(lm.model.config(), &Device::flex(), DType::F32, 99);
    let twin_adapter = write_adapter(&dir.0, "twin.safetensors", &twin, None);
    let twin_adapter = twin_adapter.to_str().unwrap();
    fails(
        &generate(&["--adapter", twin_adapter]),
        1,
        &["fingerprint", "force"],
    );
    succeeds(&generate(&[
        "--adapter",
        twin_adapter,
        "--force-adapter",
        "--steps",
        "1",
    ]));
}

#[test]
fn guidance_runs_with_an_adapter_that_has_classes() {
    let dir = Temp::new("guidance");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "classes.safetensors", &lm.model, Some(3));
    let (_, err) = succeeds(&l2d(&[
        "generate",
        "--model",
        &tiny_gguf(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--steps",
        "2",
        "--guidance-class",
        "1",
        "--guidance-weight",
        "2.5",
        "--guidance-interval",
        "0,0.8",
        "--max-new-tokens",
        "3",
        "Hello",
    ]));
    assert!(
        err.contains("guidance toward class 1 with weight 2.5"),
        "{err}"
    );
    assert!(err.contains("NFE per token 5.0"), "{err}");
    fails(
        &l2d(&[
            "generate",
            "--model",
            &tiny_gguf(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--guidance-class",
            "7",
            "Hello",
        ]),
        1,
        &["class 7 is outside 0..=3"],
    );
}

#[test]
fn info_prints_the_model_the_adapter_and_the_counts() {
    let dir = Temp::new("info");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, Some(2));
    let (out, _) = succeeds(&l2d(&["info", "--model", &tiny_gguf()]));
    let default = diffusion_param_count(&L2dConfig::default(), lm.model.config()).unwrap();
    assert!(out.contains("llama: 2 layers, hidden 64"), "{out}");
    assert!(
        out.contains(&format!("parameters: {}", lm.model.num_params())),
        "{out}"
    );
    assert!(out.contains("released configuration"), "{out}");
    assert!(
        out.contains(&format!("diffusion path parameters: {}", default.total())),
        "{out}"
    );

    let (out, _) = succeeds(&l2d(&[
        "info",
        "--model",
        &tiny_gguf(),
        "--adapter",
        adapter.to_str().unwrap(),
    ]));
    let count = diffusion_param_count(&tiny_l2d(Some(2)), lm.model.config()).unwrap();
    assert!(out.contains("trained on: this base"), "{out}");
    assert!(
        out.contains(&format!("loaded parameters: {}", count.total())),
        "{out}"
    );
    assert!(
        out.contains(&format!("diffusion path parameters: {}", count.total())),
        "{out}"
    );
    assert!(out.contains("2 guidance classes"), "{out}");
    fails(
        &l2d(&[
            "info",
            "--model",
            &tiny_gguf(),
            "--l2d-config",
            "/no/such.json",
        ]),
        1,
        &["does not exist"],
    );
}

#[test]
fn eval_sweeps_base_and_diffusion_settings_through_the_binary() {
    let dir = Temp::new("eval");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, None);
    let report = dir.0.join("report.json");
    let tasks = root().join("fixtures/eval/arithmetic.jsonl");
    let args = |settings: &str, adapter: Option<&str>| {
        let mut a = vec![
            "eval".to_string(),
            "--model".into(),
            tiny_gguf(),
            "--tasks".into(),
            tasks.display().to_string(),
            "--settings".into(),
            settings.into(),
            "--raw".into(),
            "--limit".into(),
            "2".into(),
            "--max-new-tokens".into(),
            "3".into(),
            "--report".into(),
            report.display().to_string(),
            "--plot".into(),
            dir.0.join("plot.svg").display().to_string(),
        ];
        if let Some(p) = adapter {
            a.extend(["--adapter".into(), p.into()]);
        }
        a
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_l2d"))
            .args(a)
            .output()
            .unwrap()
    };
    succeeds(&run(args("base,2", Some(adapter.to_str().unwrap()))));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let settings = json["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 2);
    assert_eq!(settings[0]["mean_nfe_per_token"].as_f64(), Some(0.0));
    assert_eq!(settings[1]["mean_nfe_per_token"].as_f64(), Some(5.0));
    fails(
        &run(args("base,2", None)),
        1,
        &["steps=2:midpoint", "needs a trained adapter"],
    );
}

#[test]
fn chat_replies_line_by_line_with_smollm2() {
    let gguf = smollm2();
    let mut child = Command::new(env!("CARGO_BIN_EXE_l2d"))
        .args([
            "chat",
            "--model",
            gguf.to_str().unwrap(),
            "--max-new-tokens",
            "8",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"What is the capital of France?\nAnd of Italy?\n/exit\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = succeeds(&out);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains("Paris"), "{stdout}");
    assert_eq!(stderr.matches("NFE per token 0.0").count(), 2, "{stderr}");
}

/// `l2d` with standard error on `/dev/full` (every write fails with "no space left").
fn l2d_with_full_stderr(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    Command::new(env!("CARGO_BIN_EXE_l2d"))
        .args(args)
        .stderr(Stdio::from(full))
        .stdout(Stdio::piped())
        .output()
        .expect("the l2d binary runs")
}

#[test]
fn a_standard_error_that_cannot_be_written_never_panics_or_stops_the_work() {
    let model = tiny_gguf();
    let common = ["generate", "--model", &model, "--max-new-tokens", "4"];
    // The reply still comes, whole, on standard output; the statistics are lost quietly.
    let normal = succeeds(&l2d(&[&common[..], &["Hello world"]].concat())).0;
    let out = l2d_with_full_stderr(&[&common[..], &["Hello world"]].concat());
    assert!(out.status.success(), "exit {:?}", out.status);
    assert_eq!(text(&out.stdout), normal);
    // A failing command exits with 1 (not a panic's 101) when its message cannot be written.
    let out = l2d_with_full_stderr(&["generate", "--model", "/no/such/model.gguf", "Hi"]);
    assert_eq!(out.status.code(), Some(1));
    let out = l2d_with_full_stderr(&["info", "--model", "/no/such/model.gguf"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bytes_on_chats_standard_input_that_are_not_utf8_are_a_read_error() {
    let gguf = smollm2();
    assert!(
        gguf.exists(),
        "SmolLM2 GGUF not found at {}",
        gguf.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_l2d"))
        .args([
            "chat",
            "--model",
            gguf.to_str().unwrap(),
            "--max-new-tokens",
            "2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"caf\xff\xfe\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    fails(&out, 1, &["cannot read standard input"]);
    assert!(!text(&out.stderr).contains("cannot write the output"));
}

#[test]
fn prompts_and_replies_are_bounded_by_the_models_context() {
    let model = tiny_gguf();
    // The tiny model's context is 256 positions.
    let info = succeeds(&l2d(&["info", "--model", &model])).0;
    assert!(info.contains("context 256 positions"), "{info}");
    let long = "hello world ".repeat(300);
    fails(
        &l2d(&[
            "generate",
            "--model",
            &model,
            "--max-new-tokens",
            "4",
            &long,
        ]),
        1,
        &[
            "tokens, more than the model's context of 256",
            "--truncate left",
        ],
    );
    // --truncate left keeps the last 256 - 4 tokens and says so.
    let (out, err) = succeeds(&l2d(&[
        "generate",
        "--model",
        &model,
        "--max-new-tokens",
        "4",
        "--truncate",
        "left",
        &long,
    ]));
    assert!(!out.trim().is_empty());
    assert!(err.contains("were dropped (--truncate left)"), "{err}");
    // A reply that would run past the context stops there, with a note.
    let (_, err) = succeeds(&l2d(&[
        "generate",
        "--model",
        &model,
        "--max-new-tokens",
        "600",
        "Hello world",
    ]));
    assert!(
        err.contains("filled the model's context of 256 positions"),
        "{err}"
    );
}

#[test]
fn generate_with_a_lora_folds_it_into_the_model() {
    use l2d_models::decoder::Projection;
    use l2d_models::lora::{DecoderLora, LoraConfig};

    let dir = Temp::new("lora");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let fresh = DecoderLora::init(
        &LoraConfig::new(2, 4.0, Projection::ALL.to_vec()),
        &lm.model,
        3,
    )
    .unwrap();
    let zero = dir.0.join("zero.safetensors");
    fresh.save(&zero, &lm.model).unwrap();
    let model = tiny_gguf();
    let common = ["generate", "--model", &model, "--max-new-tokens", "6"];
    let plain = succeeds(&l2d(&[&common[..], &["Hello"]].concat())).0;
    // A fresh LoRA (B = 0) is the base model: the same reply.
    let with_zero = succeeds(&l2d(&[
        &common[..],
        &["--lora", zero.to_str().unwrap(), "Hello"],
    ]
    .concat()))
    .0;
    assert_eq!(plain, with_zero);
    // Missing files, a LoRA beside a diffusion adapter, a file that is not a LoRA.
    fails(
        &l2d(&[&common[..], &["--lora", "/no/such/lora.safetensors", "Hi"]].concat()),
        1,
        &["LoRA adapter", "/no/such/lora.safetensors"],
    );
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, None);
    let adapter = adapter.to_str().unwrap();
    fails(
        &l2d(&[
            &common[..],
            &["--lora", zero.to_str().unwrap(), "--adapter", adapter, "Hi"],
        ]
        .concat()),
        2,
        &["--lora", "--adapter"],
    );
    fails(
        &l2d(&[&common[..], &["--lora", adapter, "Hi"]].concat()),
        1,
        &["--lora", "not a LoRA adapter"],
    );
}

#[test]
fn a_setting_in_the_eval_grammar_equals_its_flags() {
    let dir = Temp::new("setting");
    let lm = Pretrained::open(&tiny_gguf(), &LoadOptions::default()).unwrap();
    let adapter = write_adapter(&dir.0, "adapter.safetensors", &lm.model, None);
    let adapter = adapter.to_str().unwrap();
    let model = tiny_gguf();
    let common = [
        "generate",
        "--model",
        &model,
        "--max-new-tokens",
        "4",
        "--adapter",
        adapter,
    ];
    for (setting, flags) in [
        ("3:heun2", &["--steps", "3", "--solver", "heun2"][..]),
        (
            "adaptive:bosh3:rtol=1e-3:atol=1e-3:max-nfe=40:fallback=3",
            &[
                "--solver",
                "bosh3",
                "--rtol",
                "1e-3",
                "--atol",
                "1e-3",
                "--max-nfe",
                "40",
                "--budget-fallback-steps",
                "3",
            ],
        ),
        ("base", &["--steps", "0"]),
    ] {
        let (a, a_err) = succeeds(&l2d(&[&common[..], &["--setting", setting, "Hi"]].concat()));
        let (b, b_err) = succeeds(&l2d(&[&common[..], flags, &["Hi"]].concat()));
        assert_eq!(a, b, "{setting}");
        let nfe = |e: &str| e.rsplit("NFE per token").next().map(str::to_string);
        assert_eq!(nfe(&a_err), nfe(&b_err), "{setting}: {a_err} / {b_err}");
    }
    fails(
        &l2d(&[&common[..], &["--setting", "adaptive:euler", "Hi"]].concat()),
        1,
        &["--setting", "no error estimate"],
    );
    fails(
        &l2d(&[&common[..], &["--setting", "3", "--steps", "3", "Hi"]].concat()),
        2,
        &["--setting", "--steps"],
    );
    fails(
        &l2d(&["generate", "--model", &model, "--setting", "7", "Hi"]),
        1,
        &["--setting", "--adapter"],
    );
}
