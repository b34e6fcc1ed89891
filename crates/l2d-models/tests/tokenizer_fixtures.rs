//! The `Tokenizer` against Hugging Face on the three tiny tokenizers of
//! `fixtures/tokenizers/` (made by `scripts/make_tokenizer_fixtures.py`), and its load
//! errors.

mod tokenizer_support;

use l2d_models::tokenizer::{Tokenizer, TokenizerError};
use tokenizer_support::{ids, read_json, temp_dir, tokenizer_dir};

const NAMES: [&str; 3] = ["llama3", "qwen2", "mistral"];

#[test]
fn encode_and_decode_match_hugging_face() {
    let reference = read_json(tokenizer_dir("reference.json"));
    for name in NAMES {
        let tokenizer = Tokenizer::from_dir(tokenizer_dir(name)).unwrap();
        let records = reference["tokenizers"][name]["encode"].as_array().unwrap();
        assert_eq!(records.len(), 13);
        for rec in records {
            let text = rec["text"].as_str().unwrap();
            let plain = tokenizer.encode(text, false).unwrap();
            let special = tokenizer.encode(text, true).unwrap();
            assert_eq!(plain, ids(&rec["ids"]), "{name}: ids of {text:?}");
            assert_eq!(
                special,
                ids(&rec["ids_with_special_tokens"]),
                "{name}: {text:?}"
            );
            assert_eq!(
                tokenizer.decode(&special, false).unwrap(),
                rec["decoded"].as_str().unwrap(),
                "{name}: decode of {text:?}"
            );
            assert_eq!(
                tokenizer.decode(&special, true).unwrap(),
                rec["decoded_skip_special"].as_str().unwrap(),
                "{name}: decode (skip special) of {text:?}"
            );
        }
    }
}

#[test]
fn special_tokens_come_from_tokenizer_config() {
    let reference = read_json(tokenizer_dir("reference.json"));
    for name in NAMES {
        let tokenizer = Tokenizer::from_dir(tokenizer_dir(name)).unwrap();
        let hf = &reference["tokenizers"][name];
        assert_eq!(
            tokenizer.bos_token().map(|t| t.content.as_str()),
            hf["bos_token"].as_str(),
            "{name}"
        );
        assert_eq!(
            tokenizer.eos_token().map(|t| t.content.as_str()),
            hf["eos_token"].as_str(),
            "{name}"
        );
        let bos_first = hf["encode"][0]["ids_with_special_tokens"][0]
            .as_u64()
            .map(|i| i as u32);
        // The post-processor of llama3 and mistral prepends BOS; qwen2 has none.
        assert_eq!(tokenizer.adds_bos(), name != "qwen2", "{name}");
        if tokenizer.adds_bos() {
            assert_eq!(bos_first, tokenizer.bos_token().map(|t| t.id));
            assert!(tokenizer.is_special(bos_first.unwrap()));
        }
    }
    // qwen2's tokenizer_config gives the EOS as an AddedToken object.
    let qwen = Tokenizer::from_dir(tokenizer_dir("qwen2")).unwrap();
    assert_eq!(
        qwen.eos_token().unwrap().id,
        qwen.token_to_id("<|im_end|>").unwrap()
    );
    assert_eq!(qwen.pad_token().unwrap().content, "<|endoftext|>");
}

#[test]
fn truncated_tokenizer_json_is_an_error_naming_the_file() {
    let dir = temp_dir("truncated");
    let full = std::fs::read_to_string(tokenizer_dir("qwen2").join("tokenizer.json")).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, &full[..full.len() / 2]).unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn git_lfs_pointer_is_recognised() {
    let dir = temp_dir("lfs");
    let path = dir.join("tokenizer.json");
    std::fs::write(
        &path,
        "version https://git-lfs.github.com/spec/v1\noid sha256:4f2c0e\nsize 9085657\n",
    )
    .unwrap();
    let err = Tokenizer::from_file(&path).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TokenizerError::Parse { .. }), "{err:?}");
    assert!(
        message.contains("Git LFS pointer") && message.contains("tokenizer.json"),
        "{message}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn missing_file_and_unknown_special_token_are_typed_errors() {
    let dir = temp_dir("missing");
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, TokenizerError::Io { .. }), "{err:?}");

    std::fs::copy(
        tokenizer_dir("qwen2").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": "<|not_a_token|>"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_dir(&dir).unwrap_err();
    match &err {
        TokenizerError::UnknownToken {
            role,
            token,
            source_name,
        } => {
            assert_eq!(role, "EOS");
            assert_eq!(token, "<|not_a_token|>");
            assert!(source_name.contains("tokenizer_config.json"));
        }
        other => panic!("expected UnknownToken, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}
