//! SmolLM2-135M-Instruct (Q4_1 GGUF fetched by `scripts/fetch-smollm2.sh`) through the public
//! `Pretrained` API: the chat prompt and the greedy reply equal transformers' `generate` on
//! the same GGUF (`fixtures/smollm2/generation.json`, `scripts/make_smollm2_reference.py`),
//! stopping at `<|im_end|>` without emitting it.

mod tokenizer_support;

use l2d_models::chat_template::ChatMessage;
use l2d_models::generation::{Flow, GenerationConfig, StopReason};
use l2d_models::pretrained::{LoadOptions, ModelSource, Pretrained};
use tokenizer_support::{fixtures, read_json, smollm2_gguf};

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_chat_reply_equals_transformers() {
    let fixture = read_json(fixtures().join("smollm2/generation.json"));
    let path = smollm2_gguf();
    let lm = Pretrained::open(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(lm.source, ModelSource::Gguf(path.clone()));
    let im_end = lm.tokenizer.token_to_id("<|im_end|>").unwrap();
    assert!(lm.stops.is_stop_id(im_end));
    assert_eq!(fixture["eos_token_id"].as_u64(), Some(im_end as u64));

    let messages = [ChatMessage::user(fixture["prompt"].as_str().unwrap())];
    let prompt = lm.chat_prompt(&messages).unwrap();
    assert_eq!(prompt, u32s(&fixture["input_ids"]));

    let want = u32s(&fixture["new_ids"]);
    assert_eq!(want.last(), Some(&im_end));
    let max_new = fixture["max_new_tokens"].as_u64().unwrap() as usize;
    let mut streamed = String::new();
    let mut events = Vec::new();
    let out = lm
        .chat(&messages, &GenerationConfig::greedy(max_new), |e| {
            streamed.push_str(e.text);
            events.push(e.token);
            Flow::Continue
        })
        .unwrap();
    let reply = &out.sequences[0];
    println!(
        "SmolLM2 reply {:?} ({:?}); prefill {} tokens in {:.2?}, decode {:.1} tokens/s",
        reply.text,
        reply.stop_reason,
        out.stats.prompt_tokens,
        out.stats.prefill_time,
        out.stats.decode_tokens_per_second()
    );
    assert_eq!(reply.tokens, want[..want.len() - 1]);
    assert_eq!(reply.stop_reason, StopReason::StopId(im_end));
    assert_eq!(reply.text, fixture["text"].as_str().unwrap());
    assert_eq!(streamed, reply.text);
    assert!(!events.contains(&Some(im_end)));
    assert_eq!(out.stats.prompt_tokens, prompt.len());
    assert_eq!(out.stats.new_tokens, want.len());

    // A stop string cuts the same reply, and the budget ends it early.
    let cut = lm
        .chat(
            &messages,
            &GenerationConfig::greedy(max_new).with_stop_string(" Paris"),
            |_| Flow::Continue,
        )
        .unwrap();
    assert_eq!(cut.sequences[0].text, "The capital of France is");
    let short = lm
        .chat(&messages, &GenerationConfig::greedy(3), |_| Flow::Continue)
        .unwrap();
    assert_eq!(short.sequences[0].tokens, want[..3]);
    assert_eq!(short.sequences[0].stop_reason, StopReason::MaxNewTokens);
}

/// With `--dtype q8_0` the GGUF's own blocks are kept (Q4_1 projections, the Q8_0 embedding
/// as the tied head's blocks): the same weights as the f32 expansion, multiplied in another
/// order. Greedy replies to a set of chat prompts are the same tokens.
#[test]
fn greedy_replies_with_kept_blocks_equal_the_f32_expansion() {
    use l2d_models::pretrained::WeightFormat;
    let path = smollm2_gguf();
    let open = |format: WeightFormat| {
        let options = LoadOptions::with_format(burn::tensor::Device::flex(), format);
        Pretrained::open(path.to_str().unwrap(), &options).unwrap()
    };
    let (f32_lm, q_lm) = (open(WeightFormat::default()), open("q8_0".parse().unwrap()));
    println!(
        "SmolLM2 weights: f32 {:.1} MiB, q8_0 (kept Q4_1 + Q8_0 head) {:.1} MiB",
        f32_lm.model.weight_bytes() as f64 / (1 << 20) as f64,
        q_lm.model.weight_bytes() as f64 / (1 << 20) as f64
    );
    assert!(q_lm.model.weight_bytes() * 2 < f32_lm.model.weight_bytes());
    // The same weights: the same fingerprint, so an adapter trained on one loads on the other.
    assert_eq!(
        l2d_models::diffusion::base_fingerprint(&q_lm.model),
        l2d_models::diffusion::base_fingerprint(&f32_lm.model)
    );
    for prompt in [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "If I have 3 apples and eat one, how many are left?",
        "Name three primary colors.",
    ] {
        let messages = [ChatMessage::user(prompt)];
        let reply = |lm: &Pretrained| {
            lm.chat(&messages, &GenerationConfig::greedy(24), |_| Flow::Continue)
                .unwrap()
                .sequences
                .remove(0)
        };
        let (a, b) = (reply(&f32_lm), reply(&q_lm));
        println!("{prompt:?}: {:?}", b.text);
        assert_eq!(
            a.tokens, b.tokens,
            "{prompt:?}: {:?} vs {:?}",
            a.text, b.text
        );
    }
}
