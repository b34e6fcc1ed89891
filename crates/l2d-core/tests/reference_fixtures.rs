//! Parity with the fixtures produced by the authors' reference implementation
//! (`fixtures/reference/{llama-tiny,qwen2-tiny}`, see their README): the parts that do not
//! need a model forward.

mod common;

use std::path::PathBuf;

use burn::tensor::{DType, Int, Tensor, TensorData};
use common::{device, tensor, values};
use l2d_core::{
    flow_repr::{Rescaling, normalize_flow_representation},
    input_norm::InputNormalization,
    rng::HostRng,
    schedule::NoiseSchedule,
    temperature::TemperatureSchedule,
    timestep::timestep_embedding,
    velocity::VelocitySchedule,
    x1_estimate::X1Estimator,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const MODELS: [&str; 2] = ["llama-tiny", "qwen2-tiny"];

fn fixture_dir(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/reference")
        .join(model)
}

struct Fixture {
    cases: Vec<u8>,
    base: Vec<u8>,
    adapter: Vec<u8>,
    config: Value,
}

impl Fixture {
    fn load(model: &str) -> Self {
        let dir = fixture_dir(model);
        let read = |name: &str| {
            std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{model}/{name}: {e}"))
        };
        let config = serde_json::from_slice(&read("l2d_config.json")).unwrap();
        Self {
            cases: read("cases.safetensors"),
            base: read("base.safetensors"),
            adapter: read("adapter.safetensors"),
            config,
        }
    }
}

/// A float32 tensor of a safetensors file as `f64` values and its shape.
fn floats(bytes: &[u8], name: &str) -> (Vec<f64>, Vec<usize>) {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect();
    (values, view.shape().to_vec())
}

/// An int64 tensor of a safetensors file.
fn ints(bytes: &[u8], name: &str) -> (Vec<i64>, Vec<usize>) {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), Dtype::I64, "{name}");
    let values = view
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (values, view.shape().to_vec())
}

fn tensor2(bytes: &[u8], name: &str, dtype: DType) -> Tensor<2> {
    let (v, shape) = floats(bytes, name);
    tensor(&v, [shape[0], shape[1]], dtype)
}

/// The flow-representation table `normalize(E · Wᵀ + b)` of the whole vocabulary.
fn flow_table(fixture: &Fixture, dtype: DType) -> Tensor<2> {
    let embed = tensor2(&fixture.base, "model.embed_tokens.weight", dtype);
    let weight = tensor2(
        &fixture.adapter,
        "model.flow_token_embedder.embedder.layers_module.0.weight",
        dtype,
    );
    let (bias, bias_shape) = floats(
        &fixture.adapter,
        "model.flow_token_embedder.embedder.layers_module.0.bias",
    );
    let bias = tensor(&bias, [1, bias_shape[0]], dtype);
    let rescaling: Rescaling = fixture.config["flow_representation_rescaling"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    normalize_flow_representation(embed.matmul(weight.transpose()).add(bias), rescaling)
}

#[test]
fn token_repr_matches_reference() {
    for model in MODELS {
        let fixture = Fixture::load(model);
        let (ids, id_shape) = ints(&fixture.cases, "token_repr.input_ids");
        let (expected, repr_shape) = floats(&fixture.cases, "token_repr.flow_repr");
        assert_eq!(repr_shape[..2], id_shape[..]);
        let dim = repr_shape[2];
        assert_eq!(fixture.config["flow_representation_dim"], dim);

        for dtype in [DType::F32, DType::F64] {
            // Map the embeddings of the ids, then normalise: normalize(E[ids] Wᵀ + b).
            let embed = tensor2(&fixture.base, "model.embed_tokens.weight", dtype);
            let weight = tensor2(
                &fixture.adapter,
                "model.flow_token_embedder.embedder.layers_module.0.weight",
                dtype,
            );
            let (bias, _) = floats(
                &fixture.adapter,
                "model.flow_token_embedder.embedder.layers_module.0.bias",
            );
            let index =
                Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [ids.len()]), &device());
            let mapped = embed
                .select(0, index)
                .matmul(weight.transpose())
                .add(tensor(&bias, [1, dim], dtype));
            let repr = normalize_flow_representation(mapped, Rescaling::Mult);
            let got = values(repr);

            let scale = expected.iter().fold(0f64, |m, v| m.max(v.abs()));
            let max_err = got
                .iter()
                .zip(&expected)
                .fold(0f64, |m, (a, e)| m.max((a - e).abs()));
            eprintln!("{model} {dtype:?}: max |error| {max_err:.3e}, max |value| {scale:.3}");
            assert!(
                max_err <= 1e-5 * scale,
                "{model} {dtype:?}: max error {max_err}"
            );

            // The same rows of the whole-vocabulary table (what the x1 estimate uses).
            let table = values(flow_table(&fixture, dtype));
            for (row, &id) in ids.iter().enumerate() {
                let from_table = &table[id as usize * dim..(id as usize + 1) * dim];
                let from_case = &got[row * dim..(row + 1) * dim];
                for (a, b) in from_table.iter().zip(from_case) {
                    assert!((a - b).abs() <= 1e-6 * scale, "{model}: table row {id}");
                }
            }
            // Every representation has norm sqrt(dim) under `mult`.
            for row in got.chunks(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!(
                    (norm - (dim as f64).sqrt()).abs() < 1e-5,
                    "{model}: norm {norm}"
                );
            }
        }
    }
}

#[test]
fn fixture_configuration_parses() {
    for model in MODELS {
        let fixture = Fixture::load(model);
        let c = &fixture.config;
        let schedule: NoiseSchedule = c["noise_schedule"].as_str().unwrap().parse().unwrap();
        assert_eq!(schedule, NoiseSchedule::Identity);
        let rescaling: Rescaling = c["flow_representation_rescaling"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rescaling, Rescaling::Mult);
        let estimator = X1Estimator::from_reference(
            c["nstep_x1_estimation"].as_str().unwrap(),
            c.get("nstep_clamp_predictions")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        )
        .unwrap();
        assert_eq!(estimator, X1Estimator::Average);
        // The temperature schedule is a JSON number here (1.0).
        let temperature: TemperatureSchedule =
            serde_json::from_value(c["nstep_temperature_schedule"].clone()).unwrap();
        assert_eq!(temperature, TemperatureSchedule::Constant(1.0));

        let dim = c["flow_representation_dim"].as_u64().unwrap() as usize;
        let norm = InputNormalization::new(
            c["noise_rescaling"].as_f64().unwrap(),
            rescaling,
            dim,
            c["flow_to_lm_timestep_rescaling"].as_f64().unwrap(),
        )
        .unwrap();
        assert_eq!(norm.x1_variance(), 1.0);
        assert_eq!(norm.std_at(0.0), 64.0);

        let freq_dim = c["timestep_modulation_freq_embedding_size"]
            .as_u64()
            .unwrap() as usize;
        let (t, _) = floats(&fixture.cases, "flow.timesteps");
        let emb = timestep_embedding(tensor(&t, [t.len()], DType::F32), freq_dim).unwrap();
        assert_eq!(emb.dims(), [t.len(), freq_dim]);
    }
}

/// The `velocity_temp*` cases need the model's logits, which the models crate checks. Without
/// them, the estimate `x1_hat = x + (1 - t)·v` implied by each case must still be a convex
/// combination of the rows of our flow table (a softmax average). A point of the convex hull
/// satisfies `⟨x1_hat, u⟩ <= max_w ⟨V_w, u⟩` in every direction `u`; this checks it for the
/// table rows and 512 random directions, and `‖x1_hat‖ <= sqrt(d)`. A wrong table (another
/// rescaling, a missing bias) or a wrong velocity inversion breaks these bounds.
#[test]
fn velocity_cases_imply_estimates_inside_the_flow_table_hull() {
    for model in MODELS {
        let fixture = Fixture::load(model);
        let table = flow_table(&fixture, DType::F64);
        let [vocab, dim] = table.dims();
        let random = HostRng::new(17).normal([512, dim], (&device(), DType::F64));
        let directions = Tensor::cat(vec![table.clone(), random], 0);
        let n_dir = directions.dims()[0];
        // Support function of the hull in each direction: max over the rows.
        let support = values(
            table
                .clone()
                .matmul(directions.clone().transpose())
                .max_dim(0),
        );
        let mut estimates = Vec::new();
        for (case, temp) in [("velocity_temp1.0", 1.0), ("velocity_temp0.5", 0.5)] {
            let (t, _) = floats(&fixture.cases, &format!("{case}.t"));
            let (temperature, _) = floats(&fixture.cases, &format!("{case}.temperature"));
            let schedule = TemperatureSchedule::constant(temperature[0]).unwrap();
            assert_eq!(schedule.at(t[0]), temp);
            let (x, shape) = floats(&fixture.cases, &format!("{case}.flow_embeds"));
            let (v, _) = floats(&fixture.cases, &format!("{case}.velocity"));
            let n = shape[0] * shape[1];
            assert_eq!(shape[2], dim);
            let divisor = VelocitySchedule::Constant.divisor(t[0]);
            let x1_hat: Vec<f64> = x.iter().zip(&v).map(|(x, v)| x + divisor * v).collect();
            // Round-off of the reconstruction: x is stored in f32 and reaches a few hundred.
            let slack = 1e-6 * x.iter().fold(1f64, |m, v| m.max(v.abs()));
            let mut margin = f64::MAX;
            for row in x1_hat.chunks(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!(
                    norm <= (dim as f64).sqrt() + slack,
                    "{model} {case}: norm {norm}"
                );
            }
            let projections = values(
                tensor(&x1_hat, [n, dim], DType::F64).matmul(directions.clone().transpose()),
            );
            for (i, p) in projections.iter().enumerate() {
                let u = i % n_dir;
                margin = margin.min(support[u] - p);
                assert!(
                    *p <= support[u] + slack,
                    "{model} {case}: position {} direction {u}: {p} > {}",
                    i / n_dir,
                    support[u]
                );
            }
            eprintln!(
                "{model} {case} (vocab {vocab}): smallest hull margin {margin:.3e}, slack {slack:.1e}"
            );
            estimates.push(x1_hat);
        }
        // Lower temperature, other estimate: the cases are not trivially equal.
        let diff = estimates[0]
            .iter()
            .zip(&estimates[1])
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff > 1e-3,
            "{model}: the two temperatures give the same estimate"
        );
    }
}
