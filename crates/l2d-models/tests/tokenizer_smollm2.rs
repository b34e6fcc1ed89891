//! SmolLM2-135M-Instruct's tokenizer and chat template rebuilt from its GGUF, against
//! transformers 4.46.3 loading the same file (`fixtures/smollm2/tokenizer_reference.json`,
//! `scripts/make_tokenizer_fixtures.py`), and the chat prompt of the logits reference.

mod tokenizer_support;

use l2d_models::chat_template::{ChatMessage, RenderOptions};
use l2d_models::gguf::GgufFile;
use tokenizer_support::{fixtures, ids, read_json, safetensors, smollm2_gguf};

fn reference() -> serde_json::Value {
    read_json(fixtures().join("smollm2/tokenizer_reference.json"))
}

#[test]
fn ids_and_decodes_equal_transformers() {
    let file = GgufFile::open(smollm2_gguf()).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    let reference = reference();
    assert_eq!(
        tokenizer.vocab_size(),
        reference["vocab_size"].as_u64().unwrap() as usize
    );
    let bos = tokenizer.bos_token().unwrap().id;
    assert!(
        !tokenizer.adds_bos(),
        "tokenizer.ggml.add_bos_token = false"
    );
    let records = reference["encode"].as_array().unwrap();
    for rec in records {
        let text = rec["text"].as_str().unwrap();
        let plain = tokenizer.encode(text, false).unwrap();
        assert_eq!(plain, ids(&rec["ids"]), "ids of {text:?}");
        // transformers prepends <|im_start|> despite add_bos_token = false (see the fixture's
        // notes); that is its only difference.
        let hf_special = ids(&rec["ids_with_special_tokens"]);
        assert_eq!(hf_special[0], bos);
        assert_eq!(&hf_special[1..], plain.as_slice());
        assert_eq!(tokenizer.encode(text, true).unwrap(), plain);
        assert_eq!(
            tokenizer.decode(&hf_special, false).unwrap(),
            rec["decoded"].as_str().unwrap(),
            "{text:?}"
        );
        assert_eq!(
            tokenizer.decode(&hf_special, true).unwrap(),
            rec["decoded_skip_special"].as_str().unwrap(),
            "{text:?}"
        );
    }
    assert!(
        records
            .iter()
            .any(|r| r["text"].as_str().unwrap().contains("1234567890"))
    );
}

#[test]
fn chat_template_renders_and_encodes_like_transformers() {
    let file = GgufFile::open(smollm2_gguf()).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    let template = file.chat_template().unwrap();
    let reference = reference();
    assert_eq!(template.bos_token(), Some("<|im_start|>"));
    assert_eq!(template.eos_token(), Some("<|im_end|>"));
    let mut n = 0;
    for rec in reference["chat"].as_array().unwrap() {
        let messages = rec["messages"].as_array().unwrap();
        let opts = RenderOptions {
            add_generation_prompt: rec["add_generation_prompt"].as_bool().unwrap(),
            ..Default::default()
        };
        let text = template.render(messages, &opts).unwrap();
        assert_eq!(text, rec["text"].as_str().unwrap(), "{}", rec["name"]);
        assert_eq!(
            template.encode(&tokenizer, messages, &opts).unwrap(),
            ids(&rec["ids"]),
            "{}",
            rec["name"]
        );
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn chat_prompt_of_the_logits_reference() {
    let file = GgufFile::open(smollm2_gguf()).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    let template = file.chat_template().unwrap();
    let generation = read_json(fixtures().join("smollm2/generation.json"));
    let messages = [ChatMessage::user(generation["prompt"].as_str().unwrap())];
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    let ids_rust = template.encode(&tokenizer, &messages, &opts).unwrap();
    assert_eq!(ids_rust, ids(&generation["input_ids"]));
    let logits = safetensors(fixtures().join("smollm2/logits.safetensors"));
    let input_ids: Vec<u32> = logits["input_ids"].1.iter().map(|&x| x as u32).collect();
    assert_eq!(ids_rust, input_ids);
    // The reference reply decodes to the expected sentence and ends with EOS.
    let new_ids = ids(&generation["new_ids"]);
    assert_eq!(
        tokenizer.decode(&new_ids, true).unwrap(),
        "The capital of France is Paris."
    );
    assert!(
        file.stop_set()
            .unwrap()
            .is_stop_id(*new_ids.last().unwrap())
    );
}
