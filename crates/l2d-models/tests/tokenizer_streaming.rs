//! Streaming detokenisation: deltas never split a UTF-8 character, and their concatenation
//! equals the full decode — on byte-level BPE (qwen2, llama3, SmolLM2 rebuilt from its
//! GGUF) and on a SentencePiece-style tokenizer with byte fallback and a `Strip` decoder
//! (mistral), for accented, CJK and emoji text.

mod tokenizer_support;

use l2d_models::detokenize::TokenStream;
use l2d_models::gguf::GgufFile;
use l2d_models::tokenizer::Tokenizer;
use tokenizer_support::{read_json, smollm2_gguf, tokenizer_dir};

const MULTIBYTE: [&str; 6] = [
    "Crème brûlée, naïve façade",
    "日本語のテキストと中文文本",
    "Emoji: 🤗🚀👍🏽 and family 👨‍👩‍👧!",
    "  Ünïcödé ẞ, Ελληνικά,   Русский\n\tdone ",
    "a🤗b日c",
    " leading space then 🤗",
];

/// Streams `ids` and checks the properties; returns the number of tokens that produced no
/// delta (held back).
fn check_stream(tokenizer: &Tokenizer, ids: &[u32], skip_special: bool, label: &str) -> usize {
    let full = tokenizer.decode(ids, skip_special).unwrap();
    let mut stream = TokenStream::new(tokenizer, skip_special);
    let mut text = String::new();
    let mut held = 0;
    for &id in ids {
        match stream.next_token(id).unwrap() {
            Some(delta) => {
                assert!(
                    !delta.contains('\u{FFFD}'),
                    "{label}: delta {delta:?} splits a character"
                );
                text.push_str(&delta);
            }
            None => held += 1,
        }
    }
    if let Some(rest) = stream.finish().unwrap() {
        text.push_str(rest.as_str());
    }
    assert_eq!(
        text, full,
        "{label}: streamed text differs from the full decode"
    );
    assert_eq!(stream.tokens(), ids);
    held
}

#[test]
fn tiny_tokenizers_stream_whole_characters() {
    for name in ["llama3", "qwen2", "mistral"] {
        let tokenizer = Tokenizer::from_dir(tokenizer_dir(name)).unwrap();
        let mut held = 0;
        for text in MULTIBYTE {
            for skip in [false, true] {
                let ids = tokenizer.encode(text, true).unwrap();
                held += check_stream(&tokenizer, &ids, skip, &format!("{name} {text:?}"));
            }
            // The decode of the plain ids is the text itself (no normalisation here).
            let ids = tokenizer.encode(text, false).unwrap();
            assert_eq!(tokenizer.decode(&ids, true).unwrap(), text, "{name}");
        }
        // These vocabularies split emoji and CJK into byte tokens: some must wait.
        assert!(held > 10, "{name}: only {held} tokens were held back");
    }
}

#[test]
fn sentencepiece_leading_spaces_survive_streaming() {
    // The mistral-style decoder strips the first leading space of a decode; decoding tokens
    // one by one would lose every word's space.
    let tokenizer = Tokenizer::from_dir(tokenizer_dir("mistral")).unwrap();
    let ids = tokenizer
        .encode("The capital of France is Paris.", false)
        .unwrap();
    let one_by_one: String = ids
        .iter()
        .map(|&i| tokenizer.decode(&[i], true).unwrap())
        .collect();
    assert!(
        !one_by_one.contains(' '),
        "single-token decodes drop the spaces"
    );
    check_stream(&tokenizer, &ids, true, "mistral sentence");
}

#[test]
fn incomplete_character_is_flushed_as_the_full_decode_does() {
    let tokenizer = Tokenizer::from_dir(tokenizer_dir("qwen2")).unwrap();
    // 🦀 is not in the tiny vocabulary: it is spelled with byte tokens.
    let ids = tokenizer.encode("ok 🦀", false).unwrap();
    assert!(ids.len() >= 5, "{ids:?}");
    let cut = &ids[..ids.len() - 1]; // the crab's last byte is missing
    let mut stream = TokenStream::new(&tokenizer, true);
    let mut text = String::new();
    for &id in cut {
        text.push_str(&stream.next_token(id).unwrap().unwrap_or_default());
    }
    // The space is fused with the emoji's first byte in one byte-level token, so it waits too.
    assert_eq!(text, "ok");
    let rest = stream.finish().unwrap().unwrap();
    assert!(rest.ends_with('\u{FFFD}'));
    assert_eq!(text + &rest, tokenizer.decode(cut, true).unwrap());
    assert_eq!(stream.finish().unwrap(), None);
}

#[test]
fn smollm2_streams_multibyte_text() {
    let file = GgufFile::open(smollm2_gguf()).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    for text in MULTIBYTE {
        let ids = tokenizer.encode(text, false).unwrap();
        check_stream(&tokenizer, &ids, true, &format!("smollm2 {text:?}"));
        check_stream(&tokenizer, &ids, false, &format!("smollm2 {text:?}"));
    }
    // The greedy reply of the reference, with its `<|im_end|>`.
    let generation = read_json(tokenizer_support::fixtures().join("smollm2/generation.json"));
    let ids = tokenizer_support::ids(&generation["new_ids"]);
    check_stream(&tokenizer, &ids, true, "smollm2 reply");
    let mut stream = TokenStream::new(&tokenizer, true);
    let streamed: String = ids
        .iter()
        .filter_map(|&i| stream.next_token(i).unwrap())
        .collect();
    assert_eq!(streamed, generation["text"].as_str().unwrap());
}
