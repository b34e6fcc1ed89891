//! Base generation on the tiny transformers models of `fixtures/hf/` (made by
//! `scripts/make_hf_fixtures.py`), through the public API: greedy continuations equal the
//! ones transformers recorded, a left-padded batch equals one-prompt calls, the token budget
//! and the callback stop, seeded sampling, and a `Pretrained` folder whose EOS union stops
//! the model.

mod common;

use burn::tensor::{DType, Device};
use common::*;
use l2d_models::decoder::CausalLm;
use l2d_models::generation::{
    BaseStep, Flow, GenerationConfig, GenerationError, GenerationOutput, StopReason, generate,
};
use l2d_models::pretrained::{LoadOptions, Pretrained, PretrainedError};
use l2d_models::sampling::SamplingConfig;

const FIXTURES: [&str; 5] = [
    "llama3-tied",
    "qwen2-bias",
    "mistral-swa",
    "llama-sharded",
    "qwen2-bf16",
];

fn load(name: &str) -> (CausalLm, Cases) {
    let dir = hf_fixture(name);
    let model = CausalLm::from_dir(&dir, &Device::flex(), DType::F32)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (model, Cases::open(&dir.join("cases.safetensors")))
}

fn ids(v: Vec<i64>) -> Vec<u32> {
    v.into_iter().map(|x| x as u32).collect()
}

fn run(model: &CausalLm, prompts: &[Vec<u32>], config: &GenerationConfig) -> GenerationOutput {
    generate(&mut BaseStep::new(model), None, prompts, config, |_| {
        Flow::Continue
    })
    .unwrap()
}

#[test]
fn greedy_continuations_equal_transformers() {
    for name in FIXTURES {
        let (model, cases) = load(name);
        let prompt = ids(cases.ids_vec("greedy.prompt"));
        let want = ids(cases.ids_vec("greedy.tokens"));
        let mut streamed = Vec::new();
        let out = generate(
            &mut BaseStep::new(&model),
            None,
            std::slice::from_ref(&prompt),
            &GenerationConfig::greedy(want.len()),
            |e| {
                streamed.push(e.token.unwrap());
                assert_eq!(e.text, "", "no tokenizer, no text");
                Flow::Continue
            },
        )
        .unwrap();
        let seq = &out.sequences[0];
        println!("{name}: {:?} ({:?})", seq.tokens, seq.stop_reason);
        assert_eq!(seq.tokens, want, "{name}: greedy differs from transformers");
        assert_eq!(streamed, want, "{name}: callback saw other tokens");
        assert_eq!(seq.stop_reason, StopReason::MaxNewTokens);
        assert_eq!(seq.prompt_len, prompt.len());
        let s = out.stats;
        assert_eq!(
            (
                s.batch_size,
                s.prompt_tokens,
                s.new_tokens,
                s.decode_tokens,
                s.decode_steps
            ),
            (1, prompt.len(), want.len(), want.len() - 1, want.len() - 1)
        );
        assert!(s.decode_tokens_per_second() > 0.0 && s.total_time >= s.decode_time);
        assert_eq!(out.step_times.len(), want.len());
        assert_eq!(
            out.step_times.iter().sum::<std::time::Duration>(),
            s.prefill_time + s.decode_time
        );
    }
}

#[test]
fn left_padded_batch_equals_one_prompt_calls() {
    for name in FIXTURES {
        let (model, cases) = load(name);
        let rows = ids(cases.ids_vec("input_ids"));
        let half = rows.len() / 2;
        let prompts = vec![
            rows[..7].to_vec(),
            rows[half..half + 10].to_vec(),
            rows[..3].to_vec(),
            rows[half..half + 1].to_vec(),
        ];
        let config = GenerationConfig::greedy(8);
        let batched = run(&model, &prompts, &config);
        for (i, p) in prompts.iter().enumerate() {
            let alone = run(&model, std::slice::from_ref(p), &config);
            assert_eq!(
                batched.sequences[i],
                alone.sequences[0],
                "{name}: row {i} (prompt length {}) differs in the batch",
                p.len()
            );
        }
        assert_eq!(batched.stats.prompt_tokens, 21);
        assert_eq!(batched.stats.new_tokens, 32);
        assert_eq!(batched.stats.decode_steps, 7);
    }
}

#[test]
fn batch_rows_stop_independently() {
    // Row 1 stops on its third token's id; row 0 keeps going to the budget. The first
    // occurrence of that id in row 0 (if any) must stop row 0 too, at that point.
    let (model, cases) = load("llama3-tied");
    let rows = ids(cases.ids_vec("input_ids"));
    let prompts = vec![rows[..6].to_vec(), rows[12..20].to_vec()];
    let free = run(&model, &prompts, &GenerationConfig::greedy(8));
    let stop = free.sequences[1].tokens[2];
    let first_in = |t: &[u32]| t.iter().position(|&x| x == stop);
    let out = run(
        &model,
        &prompts,
        &GenerationConfig::greedy(8).with_stop_ids([stop]),
    );
    for (r, seq) in out.sequences.iter().enumerate() {
        let want = &free.sequences[r].tokens;
        match first_in(want) {
            Some(k) => {
                assert_eq!(seq.tokens, want[..k], "row {r}");
                assert_eq!(seq.stop_reason, StopReason::StopId(stop));
            }
            None => {
                assert_eq!(&seq.tokens, want, "row {r}");
                assert_eq!(seq.stop_reason, StopReason::MaxNewTokens);
            }
        }
    }
    assert!(first_in(&free.sequences[1].tokens).is_some_and(|k| k <= 2));
    assert_eq!(out.sequences[1].stop_reason, StopReason::StopId(stop));
}

#[test]
fn max_new_tokens_is_always_enforced() {
    let (model, cases) = load("qwen2-bias");
    let prompt = vec![ids(cases.ids_vec("greedy.prompt"))];
    let want = ids(cases.ids_vec("greedy.tokens"));
    for n in [0, 1, 3] {
        let out = run(&model, &prompt, &GenerationConfig::greedy(n));
        assert_eq!(out.sequences[0].tokens, want[..n], "budget {n}");
        assert_eq!(out.sequences[0].stop_reason, StopReason::MaxNewTokens);
        assert_eq!(out.stats.new_tokens, n);
        assert_eq!(out.stats.decode_steps, n.saturating_sub(1));
    }
    // The budget counts a final stop id, as in transformers: with the third token as the
    // only stop id and a budget of 3, the row ends on the stop id with two tokens.
    let config = GenerationConfig::greedy(3).with_stop_ids([want[2]]);
    let out = run(&model, &prompt, &config);
    assert_eq!(out.sequences[0].tokens, want[..2]);
    assert_eq!(out.sequences[0].stop_reason, StopReason::StopId(want[2]));
    assert_eq!(out.stats.new_tokens, 3);
}

#[test]
fn callback_can_stop_a_row_or_all_rows() {
    let (model, cases) = load("mistral-swa");
    let rows = ids(cases.ids_vec("input_ids"));
    let prompts = vec![rows[..6].to_vec(), rows[12..21].to_vec()];
    let free = run(&model, &prompts, &GenerationConfig::greedy(6));
    let config = GenerationConfig::greedy(6);

    // Row 0 asks to stop at its second token; row 1 continues.
    let out = generate(&mut BaseStep::new(&model), None, &prompts, &config, |e| {
        if e.row == 0 && e.token == Some(free.sequences[0].tokens[1]) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    let k = free.sequences[0]
        .tokens
        .iter()
        .position(|&t| t == free.sequences[0].tokens[1])
        .unwrap();
    assert_eq!(out.sequences[0].tokens, free.sequences[0].tokens[..=k]);
    assert_eq!(out.sequences[0].stop_reason, StopReason::Callback);
    assert_eq!(out.sequences[1], free.sequences[1]);

    // Stop everything at the third event.
    let mut events = 0;
    let out = generate(&mut BaseStep::new(&model), None, &prompts, &config, |_| {
        events += 1;
        if events == 3 {
            Flow::StopAll
        } else {
            Flow::Continue
        }
    })
    .unwrap();
    assert_eq!(events, 3);
    assert_eq!(out.sequences[0].tokens, free.sequences[0].tokens[..2]);
    assert_eq!(out.sequences[1].tokens, free.sequences[1].tokens[..1]);
    assert!(
        out.sequences
            .iter()
            .all(|s| s.stop_reason == StopReason::Callback)
    );
    assert_eq!(out.stats.decode_steps, 1);
}

fn sampled(seed: u64) -> SamplingConfig {
    SamplingConfig {
        temperature: 1.5,
        seed,
        ..Default::default()
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_seeds_differ() {
    let (model, cases) = load("llama3-tied");
    let rows = ids(cases.ids_vec("input_ids"));
    let prompts = vec![rows[..6].to_vec(), rows[12..16].to_vec()];
    let tokens = |sampling: SamplingConfig| -> Vec<Vec<u32>> {
        run(&model, &prompts, &GenerationConfig::sampled(sampling, 16))
            .sequences
            .into_iter()
            .map(|s| s.tokens)
            .collect()
    };
    let a = tokens(sampled(7));
    assert_eq!(a, tokens(sampled(7)), "same seed, different tokens");
    let b = tokens(sampled(8));
    println!("seed 7: {a:?}\nseed 8: {b:?}");
    assert_ne!(a, b, "different seeds gave identical samples");
    let greedy = run(&model, &prompts, &GenerationConfig::greedy(16));
    let greedy: Vec<Vec<u32>> = greedy.sequences.into_iter().map(|s| s.tokens).collect();
    assert_ne!(a, greedy, "sampling at temperature 1.5 reproduced greedy");
    // Filters that keep only the best token make sampling greedy, whatever the seed.
    for filter in [
        SamplingConfig {
            top_k: Some(1),
            ..sampled(3)
        },
        SamplingConfig {
            min_p: Some(1.0),
            ..sampled(4)
        },
        SamplingConfig {
            top_p: Some(1e-6),
            ..sampled(5)
        },
    ] {
        assert_eq!(tokens(filter.clone()), greedy, "{filter:?}");
    }
}

#[test]
fn bad_requests_are_typed_errors() {
    let (model, _) = load("llama3-tied");
    let mut step = BaseStep::new(&model);
    let config = GenerationConfig::greedy(4);
    let err = |prompts: &[Vec<u32>], config: &GenerationConfig| {
        generate(&mut step.clone(), None, prompts, config, |_| Flow::Continue).unwrap_err()
    };
    assert!(matches!(err(&[], &config), GenerationError::NoPrompts));
    assert!(matches!(
        err(&[vec![1, 2], vec![]], &config),
        GenerationError::EmptyPrompt { row: 1 }
    ));
    let e = err(&[vec![1, 2, 128]], &config);
    assert!(
        matches!(
            e,
            GenerationError::TokenOutOfVocabulary {
                row: 0,
                position: 2,
                id: 128,
                vocab_size: 128
            }
        ),
        "{e}"
    );
    let e = err(&[vec![1]], &config.clone().with_stop_string("\n"));
    assert!(
        matches!(e, GenerationError::StopStringsNeedTokenizer { .. }),
        "{e}"
    );
    let bad = GenerationConfig::sampled(
        SamplingConfig {
            top_p: Some(0.0),
            ..sampled(0)
        },
        4,
    );
    let e = err(&[vec![1]], &bad);
    assert!(e.to_string().contains("top_p"), "{e}");
    // A valid call still works with the same step.
    assert!(generate(&mut step, None, &[vec![1]], &config, |_| Flow::Continue).is_ok());
}

/// `fixtures/hf/llama3-tied` with the tokenizer files of `fixtures/tokenizers/llama3`.
fn llama_folder() -> TempDir {
    let dir = copy_to_temp(&hf_fixture("llama3-tied"));
    let tok = repo_root().join("fixtures/tokenizers/llama3");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        std::fs::copy(tok.join(f), dir.path().join(f)).unwrap();
    }
    dir
}

#[test]
fn pretrained_folder_stops_on_every_eos_id_of_the_union() {
    let dir = llama_folder();
    let lm = Pretrained::from_dir(dir.path(), &LoadOptions::default()).unwrap();
    // config.json says 2; generation_config.json [1, 4, 5]; tokenizer_config <|eot_id|> = 5.
    assert_eq!(
        lm.stops.ids().iter().copied().collect::<Vec<_>>(),
        vec![1, 2, 4, 5]
    );
    assert!(lm.chat_template.is_some());

    let (model, cases) = load("llama3-tied");
    let prompt = ids(cases.ids_vec("greedy.prompt"));
    let free = run(
        &model,
        std::slice::from_ref(&prompt),
        &GenerationConfig::greedy(8),
    );
    let free = &free.sequences[0].tokens;
    assert!(free.iter().all(|t| !lm.stops.is_stop_id(*t)), "{free:?}");
    let out = lm
        .generate(
            std::slice::from_ref(&prompt),
            &GenerationConfig::greedy(8),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(&out.sequences[0].tokens, free);
    assert_eq!(
        out.sequences[0].text,
        lm.tokenizer.decode(free, true).unwrap()
    );

    // Make each of three new tokens an EOS id through a different position of the
    // generation_config list: each one alone stops the model at its first occurrence.
    let targets = [free[1], free[3], free[4]];
    for (slot, &target) in targets.iter().enumerate() {
        let mut list = vec![
            serde_json::json!(1),
            serde_json::json!(4),
            serde_json::json!(5),
        ];
        list.insert(slot, serde_json::json!(target));
        edit_json(&dir.path().join("generation_config.json"), |v| {
            v["eos_token_id"] = serde_json::Value::Array(list.clone())
        });
        let lm = Pretrained::from_dir(dir.path(), &LoadOptions::default()).unwrap();
        let out = lm
            .generate(
                std::slice::from_ref(&prompt),
                &GenerationConfig::greedy(8),
                |e| {
                    assert_ne!(e.token, Some(target), "the stop id reached the callback");
                    Flow::Continue
                },
            )
            .unwrap();
        let k = free.iter().position(|&t| t == target).unwrap();
        assert_eq!(
            out.sequences[0].tokens,
            free[..k],
            "EOS {target} in slot {slot}"
        );
        assert_eq!(out.sequences[0].stop_reason, StopReason::StopId(target));
    }

    // The chat prompt holds exactly one BOS although both the template and the tokenizer's
    // post-processor add one; its ids go beyond the tiny model's 128: a typed error.
    let prompt = lm
        .chat_prompt(&[l2d_models::chat_template::ChatMessage::user("Hello")])
        .unwrap();
    let bos = lm.tokenizer.bos_token().unwrap().id;
    assert!(lm.tokenizer.adds_bos());
    assert_eq!(prompt[0], bos);
    assert_eq!(prompt.iter().filter(|&&t| t == bos).count(), 1);
    let e = lm.generate(&[prompt], &GenerationConfig::greedy(2), |_| Flow::Continue);
    assert!(matches!(
        e,
        Err(GenerationError::TokenOutOfVocabulary { .. })
    ));
}

#[test]
fn pretrained_load_errors_name_the_file() {
    let opts = LoadOptions::default();
    // A folder without tokenizer.json.
    let dir = copy_to_temp(&hf_fixture("qwen2-bias"));
    let e = Pretrained::from_dir(dir.path(), &opts).unwrap_err();
    assert!(matches!(e, PretrainedError::Tokenizer(_)), "{e}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    // A missing GGUF file.
    let missing = dir.path().join("nope.gguf");
    let e = Pretrained::open(missing.to_str().unwrap(), &opts).unwrap_err();
    assert!(e.to_string().contains("nope.gguf"), "{e}");
    // A file that is not GGUF.
    let cfg = dir.path().join("config.json");
    let e = Pretrained::open(cfg.to_str().unwrap(), &opts).unwrap_err();
    assert!(matches!(e, PretrainedError::NotAModel { .. }), "{e}");
    assert!(e.to_string().contains("config.json"), "{e}");
    // An unknown model name.
    let e = Pretrained::open("no-such-org/no-such-model-l2d", &opts).unwrap_err();
    assert!(
        e.to_string().contains("no-such-org/no-such-model-l2d"),
        "{e}"
    );
    // A truncated GGUF.
    let gguf = repo_root().join("fixtures/gguf/tiny-llama.gguf");
    let bytes = std::fs::read(&gguf).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let e = Pretrained::open(cut.to_str().unwrap(), &opts).unwrap_err();
    assert!(matches!(e, PretrainedError::Gguf(_)), "{e}");
    assert!(e.to_string().contains("cut.gguf"), "{e}");
}

/// A model of `context` positions (random weights).
fn model_with_context(context: usize) -> CausalLm {
    let config = l2d_models::config::ModelConfig::from_value(&serde_json::json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
        "vocab_size": 32, "max_position_embeddings": context
    }))
    .unwrap();
    CausalLm::random(&config, &Device::flex(), DType::F32, 7)
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_and_rows_stop_when_it_is_full() {
    let model = model_with_context(12);
    let config = GenerationConfig::greedy(100);
    // 13 tokens for a context of 12: refused before any forward, naming the row.
    let long: Vec<u32> = (0..13).map(|i| i % 30).collect();
    let err = generate(
        &mut BaseStep::new(&model),
        None,
        &[vec![1, 2], long],
        &config,
        |_| Flow::Continue,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            GenerationError::PromptTooLong {
                row: 1,
                len: 13,
                context: 12
            }
        ),
        "{err}"
    );
    // Rows of 3 and 12 tokens (left-padded together): each stops when its sequence holds 12
    // positions, before max_new_tokens; a full-length prompt still gets its one token.
    let out = run(&model, &[vec![1, 2, 3], (0..12).collect()], &config);
    for (s, prompt) in out.sequences.iter().zip([3, 12]) {
        assert_eq!(s.stop_reason, StopReason::ContextFull);
        assert_eq!(s.prompt_len + s.tokens.len(), 12.max(prompt + 1));
    }
    // Within the context, max_new_tokens still decides.
    let out = run(&model, &[vec![1, 2, 3]], &GenerationConfig::greedy(4));
    assert_eq!(out.sequences[0].stop_reason, StopReason::MaxNewTokens);
    assert_eq!(out.sequences[0].tokens.len(), 4);
}

/// Corrupt weights (a NaN in the head) give non-finite logits: a typed error, not arbitrary
/// tokens or an empty reply.
#[test]
fn non_finite_logits_are_an_error() {
    let mut model = model_with_context(64);
    let head = model.lm_head.as_mut().expect("an untied head");
    let w = head.weight.as_ref().expect("float weights").val();
    let mut values: Vec<f32> = w.clone().into_data().try_to_vec().unwrap();
    values[3] = f32::NAN;
    head.weight = Some(burn::module::Param::from_tensor(
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(values, w.dims()),
            &w.device(),
        ),
    ));
    let err = generate(
        &mut BaseStep::new(&model),
        None,
        &[vec![1, 2, 3]],
        &GenerationConfig::greedy(4),
        |_| Flow::Continue,
    )
    .unwrap_err();
    assert!(err.to_string().contains("non-finite logits"), "{err}");
}
