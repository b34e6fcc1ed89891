//! The quickstart pipeline end to end at toy sizes: every row of the table, NFE accounting,
//! a well-formed plot holding every L2D point, the JSON report, and determinism.

use burn::tensor::Device;
use l2d::demo::TinyLlama;
use l2d::demo::ToyDiffusionPath;
use l2d::demo::lora::LoraConfig;
use l2d::demo::pipeline::{
    AdaptiveSetting, QuickstartConfig, QuickstartReport, RowKind, run_quickstart,
};
use l2d_models::lora::LoraInit;
use l2d_solvers::Method;

mod support;

/// Runs the demo with its `tracing` events collected as lines.
fn logged(
    config: &QuickstartConfig,
) -> (Result<QuickstartReport, l2d::demo::DemoError>, Vec<String>) {
    support::lines_of(|| run_quickstart(config, &Device::flex()))
}

fn toy_config(seed: u64) -> QuickstartConfig {
    let shape = TinyLlama {
        hidden: 16,
        layers: 1,
        heads: 2,
        kv_heads: 1,
        intermediate: 32,
    };
    let mut c = QuickstartConfig::new(2, shape, seed).with_finetune_steps(6);
    c.base.steps = 40;
    c.base.batch_size = 64;
    c.lora.batch_size = 32;
    c.diffusion.batch_size = 32;
    c.diffusion.path = ToyDiffusionPath {
        mapping_dim: 8,
        lora_rank: 2,
        frequency_dim: 16,
        ..ToyDiffusionPath::default()
    };
    // The LoRA's rank matched to this path (the default path's count would ask for a rank
    // above the tiny model's widest projection, which the adapter refuses).
    c.lora.match_params = c.diffusion.path;
    // The default second baseline (PEFT's initialisation), here at another rank.
    assert_eq!(c.extra_lora.len(), 1);
    assert_eq!(c.extra_lora[0].init, LoraInit::KaimingUniform);
    c.extra_lora[0] = LoraConfig {
        rank: Some(3),
        init: LoraInit::KaimingUniform,
        ..c.lora.clone()
    };
    c.test_size = 30;
    c.eval_batch = 16;
    c.euler_steps = vec![1, 2, 4];
    c.adaptive = Some(AdaptiveSetting {
        method: Method::Bosh3,
        rtol: 1e-3,
        atol: 1e-3,
    });
    c
}

/// Checks that `xml` is a tree of balanced tags with quoted attributes; returns the attribute
/// maps of every element whose `class` is `class`.
fn well_formed_elements(xml: &str, class: &str) -> Vec<Vec<(String, String)>> {
    let mut stack: Vec<String> = Vec::new();
    let mut found = Vec::new();
    let mut rest = xml.trim();
    assert!(rest.starts_with("<svg"), "not an SVG document");
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        assert!(!rest[..open].contains('>'), "stray '>' in text");
        let close = rest[open..].find('>').expect("unterminated tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let (name, mut attrs_text) = body.split_once(' ').unwrap_or((body, ""));
        let mut attrs = Vec::new();
        loop {
            attrs_text = attrs_text.trim_start();
            if attrs_text.is_empty() {
                break;
            }
            let eq = attrs_text
                .find("=\"")
                .expect("attribute without a quoted value");
            let key = attrs_text[..eq].to_string();
            let end = attrs_text[eq + 2..].find('"').expect("unterminated value") + eq + 2;
            attrs.push((key, attrs_text[eq + 2..end].to_string()));
            attrs_text = &attrs_text[end + 1..];
        }
        if stack.is_empty() {
            roots += 1;
        }
        if attrs.iter().any(|(k, v)| k == "class" && v == class) {
            found.push(attrs);
        }
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    assert_eq!(roots, 1, "one root element");
    found
}

fn without_times(report: &QuickstartReport) -> Vec<String> {
    report
        .rows
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {:.9} {:.9} {:.9?} {}",
                r.method, r.x1_estimate, r.accuracy, r.nfe_per_token, r.digit_accuracy, r.params
            )
        })
        .chain(
            report
                .training
                .iter()
                .map(|t| format!("{} {:.6} {:.6}", t.what, t.loss_start, t.loss_end)),
        )
        .collect()
}

#[test]
fn the_toy_pipeline_reports_every_row_a_plot_and_json_deterministically() {
    support::install();
    let config = toy_config(11);
    let (report, lines) = logged(&config);
    let report = report.unwrap();
    assert!(lines.iter().any(|l| l.contains("[4/4]")), "{lines:?}");

    // Rows: base, two LoRA runs, 3 Euler step counts x 2 x1 estimates, the adaptive solver.
    let kinds: Vec<RowKind> = report.rows.iter().map(|r| r.kind).collect();
    let mut expected = vec![RowKind::Base, RowKind::Lora, RowKind::Lora];
    expected.extend([RowKind::L2dFixed; 6]);
    expected.push(RowKind::L2dAdaptive);
    assert_eq!(kinds, expected);
    assert_eq!(report.training.len(), 4);
    for r in &report.rows {
        assert_eq!(r.total, 30);
        assert_eq!(r.correct as f64 / 30.0, r.accuracy);
        assert_eq!(r.digit_accuracy.len(), 3);
        // Exact match needs every digit: it is at most the worst digit's accuracy.
        let worst = r.digit_accuracy.iter().cloned().fold(1.0, f64::min);
        assert!(r.accuracy <= worst + 1e-12, "{r:?}");
        if let Some(k) = r.steps {
            assert_eq!(r.nfe_per_token, k as f64 + 1.0);
            assert_eq!(r.forwards_per_token, k as f64);
        }
    }
    let adaptive = report.rows.last().unwrap();
    // bosh3 needs its first evaluation, the initial-step probe and 3 per step, plus the final.
    assert!(adaptive.nfe_per_token >= 6.0, "{adaptive:?}");
    // The LoRA rank matched to the (toy) diffusion path, and the extra run's rank.
    let m = config.base.model.model_config().unwrap();
    let adapter = config.lora.adapter_config(&m).unwrap();
    assert_eq!(report.rows[1].params, adapter.num_params(&m));
    assert_eq!(
        report.rows[1].method,
        format!("LoRA r{} (authors' init)", adapter.rank)
    );
    assert_eq!(report.rows[2].method, "LoRA r3 (PEFT init)");

    // The table holds every row, once.
    let table = report.table();
    assert_eq!(table.lines().count(), 2 + report.rows.len());
    for r in &report.rows {
        assert!(table.contains(&format!("| {} |", r.method)), "{table}");
    }

    // The plot: well-formed, one legend entry per series, every L2D point at its NFE.
    let svg = report.plot().to_svg();
    let legend = well_formed_elements(&svg, "legend");
    assert_eq!(legend.len(), 3 + 2 + 1, "{svg}");
    let points = well_formed_elements(&svg, "point");
    let attr = |p: &Vec<(String, String)>, k: &str| {
        p.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let mut l2d: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| attr(p, "data-label").starts_with("L2D, sample"))
        .map(|p| {
            (
                attr(p, "data-x").parse().unwrap(),
                attr(p, "data-y").parse().unwrap(),
            )
        })
        .collect();
    l2d.sort_by(|a, b| a.0.total_cmp(&b.0));
    let want: Vec<(f64, f64)> = report.rows[3..6]
        .iter()
        .map(|r| (r.nfe_per_token, r.accuracy))
        .collect();
    assert_eq!(l2d, want);

    // JSON and SVG on disk; the JSON reads back to the same report.
    let dir = std::env::temp_dir().join(format!("l2d-demo-pipeline-{}", std::process::id()));
    let (json, svg_path) = report.write(&dir).unwrap();
    let back: QuickstartReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(without_times(&back), without_times(&report));
    assert_eq!(std::fs::read_to_string(&svg_path).unwrap(), svg);
    std::fs::remove_dir_all(&dir).unwrap();

    // Same seeds, same numbers; another seed, other numbers.
    let again = run_quickstart(&config, &Device::flex()).unwrap();
    assert_eq!(without_times(&again), without_times(&report));
    let other = run_quickstart(&toy_config(12), &Device::flex()).unwrap();
    assert_ne!(without_times(&other), without_times(&report));
}

#[test]
fn a_one_token_task_gives_a_scaling_curve_without_lora_rows() {
    support::install();
    use l2d::demo::scaling::ScalingCurve;
    use l2d::demo::task::TaskKind;

    let mut config = toy_config(13);
    config.task = TaskKind::Permutation;
    // 6^4 = 1296 problems, about 130 held out.
    config.digits = 4;
    config.lora_baselines = false;
    config.average_at_temperature_one = false;
    config.euler_steps = vec![4, 1, 2];
    let (report, lines) = logged(&config);
    let report = report.unwrap();
    assert!(
        lines[0].contains("product of 4 elements of S3"),
        "{lines:?}"
    );
    let kinds: Vec<RowKind> = report.rows.iter().map(|r| r.kind).collect();
    let mut expected = vec![RowKind::Base];
    expected.extend([RowKind::L2dFixed; 3]);
    expected.push(RowKind::L2dAdaptive);
    assert_eq!(kinds, expected);
    // Training: the base and the path only.
    assert_eq!(report.training.len(), 2);
    for r in &report.rows {
        assert_eq!(r.digit_accuracy, vec![r.accuracy], "one answer token");
    }

    let curve = ScalingCurve::from_report(&report);
    assert_eq!(curve.baselines.len(), 1);
    assert_eq!(curve.baselines[0].accuracy, report.rows[0].accuracy);
    let steps: Vec<Option<usize>> = curve.curve.iter().map(|p| p.steps).collect();
    assert_eq!(steps, vec![Some(1), Some(2), Some(4)], "sorted by steps");
    for p in &curve.curve {
        let row = report.rows.iter().find(|r| r.steps == p.steps).unwrap();
        assert_eq!((p.accuracy, p.nfe), (row.accuracy, row.nfe_per_token));
    }
    assert_eq!(curve.at(2), Some(report.rows[2].accuracy));
    assert_eq!(curve.gain_2_to_16(), None, "no 16-step point");
    let adaptive = curve.adaptive.unwrap();
    assert_eq!(adaptive.nfe, report.rows[4].nfe_per_token);
    assert_eq!(curve.table().lines().count(), 2 + 1 + 3 + 1);
    // The curve's JSON has the documented shape.
    let json: serde_json::Value = serde_json::to_value(&curve).unwrap();
    assert_eq!(json["curve"][0]["steps"], 1);
    assert!(json["curve"][2]["nfe"].as_f64() == Some(5.0), "{json}");
}

#[test]
fn an_output_folder_that_cannot_be_made_fails_before_training() {
    support::install();
    let dir = std::env::temp_dir().join(format!("l2d-demo-outputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A file where a folder should be.
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let mut config = toy_config(14);
    config.adapter_out = Some(blocker.join("sub").join("adapter.safetensors"));
    let (result, lines) = logged(&config);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("file"), "{err}");
    assert!(lines.is_empty(), "nothing ran: {lines:?}");
    // A missing folder is made, and the adapter written into it.
    let mut config = toy_config(14);
    config.extra_lora.clear();
    config.euler_steps = vec![1];
    config.adaptive = None;
    config.average_at_temperature_one = false;
    let file = dir.join("new").join("deeper").join("adapter.safetensors");
    config.adapter_out = Some(file.clone());
    run_quickstart(&config, &Device::flex()).unwrap();
    assert!(file.is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
