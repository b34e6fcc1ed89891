//! End-to-end `l2d train` runs on the tiny Llama GGUF fixture (seconds):
//! - the command-line arguments drive a full run that writes metrics, checkpoints and an
//!   adapter loadable for the same base;
//! - training N steps, and training N/2 then resuming to N, give bit-identical adapters and
//!   identical losses after the resume point;
//! - configuration mistakes are typed errors naming the key or file.

use std::path::{Path, PathBuf};

use burn::module::Module;
use clap::Parser;
use l2d::cli::{TrainArgs, run_train};
use l2d_models::diffusion::{AdapterLoadOptions, DiffusionPath};
use l2d_models::lora::DecoderLora;
use l2d_models::pretrained::{LoadOptions, Pretrained};
use l2d_train::checkpoint::{CHECKPOINTS, LATEST};
use l2d_train::{TrainConfig, TrainError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The tiny Llama every run here trains on.
const TINY_BASE: &str = "fixtures/gguf/tiny-llama.gguf";

/// The tiny base loaded as a model, to check what a run wrote.
fn tiny_base() -> l2d_models::decoder::CausalLm {
    Pretrained::open(
        root().join(TINY_BASE).to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap()
    .model
}

/// Whether two safetensors files hold the same tensors bit for bit and the same metadata
/// (the header's key order is not compared: safetensors writes metadata from a hash map).
fn same_safetensors(a: &Path, b: &Path) -> bool {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let (sx, sy) = (
        safetensors::SafeTensors::deserialize(&x).unwrap(),
        safetensors::SafeTensors::deserialize(&y).unwrap(),
    );
    let (_, mx) = safetensors::SafeTensors::read_metadata(&x).unwrap();
    let (_, my) = safetensors::SafeTensors::read_metadata(&y).unwrap();
    if mx.metadata() != my.metadata() {
        return false;
    }
    let mut nx = sx.names();
    let mut ny = sy.names();
    nx.sort();
    ny.sort();
    nx == ny
        && nx.iter().all(|n| {
            let (tx, ty) = (sx.tensor(n).unwrap(), sy.tensor(n).unwrap());
            tx.shape() == ty.shape() && tx.dtype() == ty.dtype() && tx.data() == ty.data()
        })
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("l2d-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small run: 6 steps of 2 × 2 sequences, the `small` L2D preset, validation and
/// checkpoints every 2 steps.
fn config_file(dir: &Path) -> PathBuf {
    let text = format!(
        r#"
seed = 7
[model]
path = "{model}"
[data]
train = ["{data}"]
validation = ["{data}"]
max_seq_len = 64
[l2d]
preset = "small"
flow_lora_rank = 4
[optim]
peak_lr = 1e-3
warmup_steps = 2
decay = "cosine"
[train]
micro_batch_size = 2
accumulation_steps = 2
steps = 6
log_every = 1
[validation]
every = 2
batch_size = 4
t_bins = 4
nstep_grid_points = 3
nstep_batches = 1
[output]
dir = "{out}"
checkpoint_every = 2
keep_last = 2
"#,
        model = root().join(TINY_BASE).display(),
        data = root().join("fixtures/train/conversations.jsonl").display(),
        out = dir.join("run").display(),
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn args(list: &[&str]) -> TrainArgs {
    let mut v = vec!["l2d-train"];
    v.extend_from_slice(list);
    Cli::try_parse_from(v).unwrap().args
}

#[test]
fn a_full_run_writes_metrics_checkpoints_and_a_loadable_adapter() {
    let dir = tmp("full");
    let config = config_file(&dir);
    let summary = run_train(&args(&["--config", config.to_str().unwrap(), "--quiet"])).unwrap();
    assert_eq!(summary.steps, 6);
    assert_eq!(summary.records.len(), 6);
    assert!(
        summary
            .records
            .iter()
            .all(|r| r.loss.is_finite() && r.grad_norm.is_finite())
    );
    // Validation at steps 0, 2, 4, 6 with per-t bins and n-step accuracy.
    let steps: Vec<usize> = summary.validations.iter().map(|v| v.0).collect();
    assert_eq!(steps, vec![0, 2, 4, 6]);
    for (_, v) in &summary.validations {
        assert!(v.loss.is_finite() && v.tokens > 0);
        assert_eq!(v.loss_by_t.len(), 4);
        assert!(v.nstep_accuracy.is_some() && v.base_accuracy.is_some());
    }
    // At t = 0 a fresh path is the base model; the loss is the base model's, and training on
    // the same data as validation lowers it.
    let first = summary.validations[0].1.loss;
    let last = summary.validations[3].1.loss;
    assert!(last < first, "validation loss {first} -> {last}");
    // metrics.jsonl: a start line, 6 train lines, 4 validations, checkpoints, an end line.
    let metrics = std::fs::read_to_string(&summary.metrics).unwrap();
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "train").count(), 6);
    assert_eq!(kinds.iter().filter(|k| *k == "validation").count(), 4);
    assert_eq!(kinds.first().map(String::as_str), Some("start"));
    assert_eq!(kinds.last().map(String::as_str), Some("end"));
    // Keep-last-2 checkpoints, `latest` names the newest.
    let ck = dir.join("run").join(CHECKPOINTS);
    let mut names: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["latest", "step-00000004", "step-00000006"]);
    assert_eq!(
        std::fs::read_to_string(ck.join(LATEST)).unwrap(),
        "step-00000006"
    );
    // The adapter loads for the base (fingerprint checked) and equals the last checkpoint's.
    let adapter = summary.adapter.unwrap();
    let base = tiny_base();
    let path = DiffusionPath::load(&adapter, &base, &AdapterLoadOptions::default()).unwrap();
    assert_eq!(path.num_params(), summary.trainable_params);
    assert!(same_safetensors(
        &adapter,
        &ck.join("step-00000006/adapter.safetensors")
    ));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resuming_from_the_middle_gives_the_same_adapter_bit_for_bit() {
    let dir = tmp("resume");
    let config = config_file(&dir);
    let c = config.to_str().unwrap();
    let straight_dir = dir.join("straight");
    let split_dir = dir.join("split");
    let straight = run_train(&args(&[
        "-c",
        c,
        "-q",
        "-o",
        straight_dir.to_str().unwrap(),
    ]))
    .unwrap();
    let half = run_train(&args(&[
        "-c",
        c,
        "-q",
        "-o",
        split_dir.to_str().unwrap(),
        "--stop-after",
        "3",
    ]))
    .unwrap();
    assert_eq!(half.steps, 3);
    assert!(half.adapter.is_none());
    let resumed = run_train(&args(&[
        "-c",
        c,
        "-q",
        "-o",
        split_dir.to_str().unwrap(),
        "--resume",
    ]))
    .unwrap();
    assert_eq!(resumed.start_step, 3);
    assert_eq!(resumed.steps, 6);
    assert!(
        same_safetensors(&straight.adapter.unwrap(), &resumed.adapter.unwrap()),
        "the resumed adapter differs from the uninterrupted one"
    );
    // Identical losses and gradient norms after the resume point.
    for (x, y) in straight.records[3..].iter().zip(&resumed.records) {
        assert_eq!(x.step, y.step);
        assert_eq!(x.loss.to_bits(), y.loss.to_bits(), "step {}", x.step);
        assert_eq!(
            x.grad_norm.to_bits(),
            y.grad_norm.to_bits(),
            "step {}",
            x.step
        );
    }
    // Resuming with another seed is refused.
    let err = run_train(&args(&[
        "-c",
        c,
        "-q",
        "-o",
        split_dir.to_str().unwrap(),
        "--resume",
        "--seed",
        "8",
    ]))
    .unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("seed"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_finished_run_is_never_overwritten_by_accident_and_leftovers_are_cleaned() {
    let dir = tmp("guard");
    let config = config_file(&dir);
    let c = config.to_str().unwrap();
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let first = run_train(&args(&["-c", c, "-q", "-o", o])).unwrap();
    let adapter = std::fs::read(first.adapter.as_ref().unwrap()).unwrap();
    let metrics = std::fs::read(&first.metrics).unwrap();
    // A user's own file in the run folder, and leftovers of a run killed mid-write.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let ck = out.join(CHECKPOINTS);
    std::fs::create_dir_all(ck.join(".step-00000008.tmp-99999")).unwrap();
    std::fs::write(ck.join(".latest.tmp-99999"), "step-00000008").unwrap();
    std::fs::create_dir_all(ck.join(".trash-step-00000002.tmp-99999")).unwrap();

    // A fresh run into it is refused, and nothing is touched.
    let err = run_train(&args(&["-c", c, "-q", "-o", o])).unwrap_err();
    assert!(matches!(err, TrainError::RunFolderInUse { .. }), "{err}");
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(
        std::fs::read(first.adapter.as_ref().unwrap()).unwrap(),
        adapter
    );
    assert_eq!(std::fs::read(&first.metrics).unwrap(), metrics);
    assert!(ck.join(".latest.tmp-99999").exists());

    // --overwrite replaces the run's outputs only: the user's file stays, leftovers go.
    let again = run_train(&args(&["-c", c, "-q", "-o", o, "--overwrite"])).unwrap();
    assert_eq!(again.steps, 6);
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    let mut names: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["latest", "step-00000004", "step-00000006"]);
    // The same seed and data give the same adapter; metrics start afresh (one start line).
    assert_eq!(
        std::fs::read(again.adapter.as_ref().unwrap()).unwrap(),
        adapter
    );
    let starts = std::fs::read_to_string(&again.metrics)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"kind\":\"start\""))
        .count();
    assert_eq!(starts, 1);
    // --resume and --overwrite together make no sense.
    assert!(Cli::try_parse_from(["l2d-train", "-c", c, "--resume", "--overwrite"]).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

/// The configuration of [`config_file`] with `method = "lora"` and `[lora]` appended.
fn lora_config_file(dir: &Path, lora: &str) -> PathBuf {
    let config = config_file(dir);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("method = \"lora\"\n{text}[lora]\n{lora}\n"),
    )
    .unwrap();
    config
}

#[test]
fn the_lora_baseline_trains_resumes_bit_for_bit_and_writes_a_peft_adapter() {
    let dir = tmp("lora");
    let config = lora_config_file(&dir, "rank = 4");
    let c = config.to_str().unwrap();
    let straight_dir = dir.join("straight");
    let straight = run_train(&args(&[
        "-c",
        c,
        "-q",
        "-o",
        straight_dir.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(straight.steps, 6);
    // Validation of a LoRA: its own greedy accuracy beside the base's, no diffusion metrics.
    for (_, v) in &straight.validations {
        assert!(v.loss.is_finite() && v.tokens > 0);
        assert!(v.accuracy.is_some() && v.base_accuracy.is_some());
        assert!(v.nstep_accuracy.is_none() && v.loss_by_t.is_empty());
    }
    // A fresh adapter (B = 0) is the base model: its accuracy is the base's; training on the
    // validation data lowers the loss.
    let (first, last) = (&straight.validations[0].1, &straight.validations[3].1);
    assert_eq!(first.accuracy, first.base_accuracy);
    // The base's accuracy is measured at the first validation and carried to the others.
    assert!(
        straight
            .validations
            .iter()
            .all(|(_, v)| v.base_accuracy == first.base_accuracy)
    );
    assert!(
        last.loss < first.loss,
        "validation loss {} -> {}",
        first.loss,
        last.loss
    );
    assert!(straight.memory.is_none());
    // The adapter is a PEFT-layout file that loads for the base.
    let adapter = straight.adapter.clone().unwrap();
    let base = tiny_base();
    let lora = DecoderLora::load(&adapter, &base, false).unwrap();
    assert_eq!(lora.config().rank, 4);
    assert_eq!(lora.num_params(), straight.trainable_params);
    assert!(
        lora.tensors()
            .iter()
            .all(|(k, _)| k.starts_with("base_model.model.model.layers."))
    );
    // Stopped at 3 and resumed: the same adapter, bit for bit.
    let split_dir = dir.join("split");
    let split = split_dir.to_str().unwrap();
    run_train(&args(&["-c", c, "-q", "-o", split, "--stop-after", "3"])).unwrap();
    let resumed = run_train(&args(&["-c", c, "-q", "-o", split, "--resume"])).unwrap();
    assert_eq!(resumed.start_step, 3);
    assert!(
        same_safetensors(&adapter, &resumed.adapter.unwrap()),
        "the resumed LoRA differs from the uninterrupted one"
    );
    // A target that is not a projection is named.
    std::fs::create_dir_all(dir.join("bad")).unwrap();
    let bad = lora_config_file(&dir.join("bad"), "targets = [\"q_proj\", \"qkv_proj\"]");
    let err = TrainConfig::from_file(&bad)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lora.targets") && err.contains("qkv_proj"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn configuration_mistakes_are_typed_errors() {
    let dir = tmp("config");
    let config = config_file(&dir);
    let text = std::fs::read_to_string(&config).unwrap();
    // An unknown key names itself and the file.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        text.replace("max_seq_len = 64", "max_seq_length = 64"),
    )
    .unwrap();
    let err = TrainConfig::from_file(&bad).unwrap_err().to_string();
    assert!(
        err.contains("max_seq_length") && err.contains("bad.toml"),
        "{err}"
    );
    // A missing data file is named.
    let mut c = TrainConfig::from_file(&config).unwrap();
    c.data.train = vec![dir.join("nope.jsonl")];
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("nope.jsonl"), "{err}");
    // An unknown L2D key (reference names) is named.
    let mut c = TrainConfig::from_file(&config).unwrap();
    c.set("l2d.flow_lora_rnak=4").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("flow_lora_rnak"), "{err}");
    // Classes without a matching L2D class count.
    let mut c = TrainConfig::from_file(&config).unwrap();
    c.set("data.classes=[\"math\"]").unwrap();
    c.set("l2d.guidance_modulation_num_classes=2").unwrap();
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("data.classes")
    );
    // --set reaches nested values and rejects wrong types.
    let mut c = TrainConfig::from_file(&config).unwrap();
    c.set("optim.peak_lr=3e-4").unwrap();
    assert_eq!(c.optim.peak_lr, 3e-4);
    assert!(c.set("train.steps=\"many\"").is_err());
    // A missing model file names the path.
    let err = run_train(&args(&[
        "-c",
        config.to_str().unwrap(),
        "-q",
        "--model",
        "/nonexistent/model.gguf",
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    // --resume without a checkpoint.
    let err = run_train(&args(&[
        "-c",
        config.to_str().unwrap(),
        "-q",
        "-o",
        dir.join("empty").to_str().unwrap(),
        "--resume",
    ]))
    .unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn guidance_classes_train_the_class_embedding() {
    let dir = tmp("classes");
    let config = config_file(&dir);
    let summary = run_train(&args(&[
        "-c",
        config.to_str().unwrap(),
        "-q",
        "--steps",
        "2",
        "--set",
        "data.classes=[\"math\", \"coding\", \"general_qa\"]",
        "--set",
        "validation.every=0",
    ]))
    .unwrap();
    let base = tiny_base();
    let path = DiffusionPath::load(
        summary.adapter.unwrap(),
        &base,
        &AdapterLoadOptions::default(),
    )
    .unwrap();
    assert_eq!(path.null_class(), Some(3));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bf16_base_trains_with_a_finite_loss() {
    let dir = tmp("bf16");
    let config = config_file(&dir);
    let summary = run_train(&args(&[
        "-c",
        config.to_str().unwrap(),
        "-q",
        "--steps",
        "3",
        "--set",
        "model.dtype=\"bf16\"",
        "--set",
        "validation.nstep_grid_points=0",
    ]))
    .unwrap();
    assert_eq!(summary.nonfinite, 0);
    assert!(summary.records.iter().all(|r| r.loss.is_finite()));
    assert!(summary.validations.iter().all(|v| v.1.loss.is_finite()));
    std::fs::remove_dir_all(&dir).ok();
}

/// A path whose parameters are NaN gives a NaN loss on every micro-batch: each is skipped
/// and counted, and past `max_nonfinite` the run stops with a typed error.
#[test]
fn non_finite_losses_are_skipped_counted_and_stop_the_run_past_the_limit() {
    use burn::module::{ModuleMapper, Param};
    use burn::tensor::Tensor;
    let dir = tmp("nan");
    let base = tiny_base();
    let mut c = TrainConfig::from_file(config_file(&dir)).unwrap();
    let fresh = DiffusionPath::init(&c.l2d_config().unwrap(), &base, 0).unwrap();
    struct Nan;
    impl ModuleMapper for Nan {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            p.map(|t| t.mul_scalar(f64::NAN))
        }
    }
    let poisoned = fresh.map(&mut Nan);
    let adapter = dir.join("nan.safetensors");
    poisoned.save(&adapter, &base).unwrap();
    c.model.init_adapter = Some(adapter);
    c.set("validation.every=0").unwrap();
    c.set("validation.nstep_grid_points=0").unwrap();
    c.set("train.max_nonfinite=2").unwrap();
    let toml = dir.join("nan.toml");
    std::fs::write(&toml, c.to_toml()).unwrap();
    let err = run_train(&args(&["-c", toml.to_str().unwrap(), "-q"])).unwrap_err();
    match err {
        TrainError::NonFinite { step, count, limit } => {
            assert_eq!((step, count, limit), (2, 3, 2)); // 2 micro-batches per step
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    // With a generous limit the run finishes, every micro-batch counted, nothing updated
    // (in the failed run's folder, which it replaces).
    let err_free = run_train(&args(&[
        "-c",
        toml.to_str().unwrap(),
        "-q",
        "--overwrite",
        "--steps",
        "2",
        "--set",
        "train.max_nonfinite=100",
    ]))
    .unwrap();
    assert_eq!(err_free.nonfinite, 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn data_inspect_marks_the_scored_tokens() {
    #[derive(Parser)]
    struct InspectCli {
        #[command(flatten)]
        args: l2d::cli::DataInspectArgs,
    }
    let model = root().join(TINY_BASE);
    let data = root().join("fixtures/train/conversations.jsonl");
    let parse = |extra: &[&str]| {
        let mut v = vec![
            "inspect",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--no-color",
        ];
        v.extend_from_slice(extra);
        InspectCli::try_parse_from(v).unwrap().args
    };
    let mut out = Vec::new();
    l2d::cli::run_data_inspect(&parse(&["-n", "2"]), &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("[[2 + 3 = 5.<|im_end|>]]"), "{text}");
    assert!(text.contains("[[Paris.<|im_end|>]]") && text.contains("[[Rome.<|im_end|>]]"));
    assert!(!text.contains("[[<|im_start|>"), "{text}");
    assert!(text.contains("7 conversations -> 6 sequences"), "{text}");
    let mut out = Vec::new();
    l2d::cli::run_data_inspect(&parse(&["-n", "1", "--format", "table"]), &mut out).unwrap();
    let table = String::from_utf8(out).unwrap();
    let scored: Vec<&str> = table.lines().filter(|l| l.contains(" * ")).collect();
    assert_eq!(scored.len(), 10, "{table}"); // "2 + 3 = 5." and <|im_end|>
    assert!(scored.last().unwrap().ends_with("<|im_end|>"));
}

/// A tokenizer that does not belong to the model (more tokens than the embedding has rows)
/// is refused before training, naming the conversation and the id.
#[test]
fn a_tokenizer_larger_than_the_models_vocabulary_is_refused() {
    let dir = tmp("vocab");
    // A 128-token model with a 626-token tokenizer and its chat template.
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    let hf = root().join("fixtures/hf/llama3-tied");
    let tok = root().join("fixtures/tokenizers/llama3");
    for (from, name) in [
        (&hf, "config.json"),
        (&hf, "model.safetensors"),
        (&tok, "tokenizer.json"),
        (&tok, "tokenizer_config.json"),
    ] {
        std::fs::copy(from.join(name), model.join(name)).unwrap();
    }
    let config = config_file(&dir);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &root().join(TINY_BASE).display().to_string(),
        &model.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let err = run_train(&args(&["-c", config.to_str().unwrap(), "-q"])).unwrap_err();
    assert!(
        matches!(&err, TrainError::TokenOutOfVocabulary { vocab: 128, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("conversation"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
