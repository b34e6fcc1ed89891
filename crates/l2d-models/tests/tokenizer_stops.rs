//! The stop set: the union of `config.json`, `generation_config.json` (int or list) and
//! `tokenizer_config.json` EOS, user ids and strings; typed errors for bad inputs.

mod tokenizer_support;

use l2d_models::gguf::GgufFile;
use l2d_models::stops::{StopError, StopSet};
use l2d_models::tokenizer::Tokenizer;
use tokenizer_support::{smollm2_gguf, temp_dir, tokenizer_dir};

fn id(t: &Tokenizer, s: &str) -> u32 {
    t.token_to_id(s).unwrap()
}

#[test]
fn union_of_every_eos_source() {
    // llama3: config/generation_config list end_of_text, eom, eot; tokenizer_config says eot.
    let dir = tokenizer_dir("llama3");
    let t = Tokenizer::from_dir(&dir).unwrap();
    let stops = StopSet::from_model_dir(&dir, &t).unwrap();
    let expected: Vec<u32> = {
        let mut v = vec![
            id(&t, "<|end_of_text|>"),
            id(&t, "<|eom_id|>"),
            id(&t, "<|eot_id|>"),
        ];
        v.sort();
        v
    };
    assert_eq!(stops.ids().iter().copied().collect::<Vec<_>>(), expected);

    // qwen2: config.json has one int (<|endoftext|>), generation_config a list, the
    // tokenizer_config EOS is <|im_end|> as an object.
    let dir = tokenizer_dir("qwen2");
    let t = Tokenizer::from_dir(&dir).unwrap();
    let stops = StopSet::from_model_dir(&dir, &t).unwrap();
    assert!(stops.is_stop_id(id(&t, "<|endoftext|>")) && stops.is_stop_id(id(&t, "<|im_end|>")));
    assert_eq!(stops.ids().len(), 2);
    assert!(!stops.is_stop_id(id(&t, "<|im_start|>")));
}

#[test]
fn each_source_alone_is_honoured() {
    let base = tokenizer_dir("qwen2");
    let t = Tokenizer::from_dir(&base).unwrap();
    let (eot, eos, start) = (
        id(&t, "<|im_end|>"),
        id(&t, "<|endoftext|>"),
        id(&t, "<|im_start|>"),
    );
    for (file, content, expected) in [
        (
            "config.json",
            format!(r#"{{"eos_token_id": {start}}}"#),
            vec![start],
        ),
        (
            "config.json",
            format!(r#"{{"eos_token_id": [{start}, {eos}]}}"#),
            vec![eos, start],
        ),
        (
            "generation_config.json",
            format!(r#"{{"eos_token_id": {eos}}}"#),
            vec![eos],
        ),
        (
            "config.json",
            r#"{"eos_token_id": null}"#.to_string(),
            vec![],
        ),
        (
            "tokenizer_config.json",
            r#"{"eos_token": "<|im_end|>"}"#.to_string(),
            vec![eot],
        ),
    ] {
        let dir = temp_dir("stops");
        std::fs::write(dir.join(file), content).unwrap();
        let stops = StopSet::from_model_dir(&dir, &t).unwrap();
        let mut expected = expected;
        expected.sort();
        assert_eq!(
            stops.ids().iter().copied().collect::<Vec<_>>(),
            expected,
            "{file}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn user_ids_and_strings_join_the_set() {
    let dir = tokenizer_dir("llama3");
    let t = Tokenizer::from_dir(&dir).unwrap();
    let stops = StopSet::from_model_dir(&dir, &t)
        .unwrap()
        .with_ids([7])
        .with_string("Observation:")
        .with_string("\n\n");
    assert!(stops.is_stop_id(7));
    assert_eq!(
        stops.find_stop_string("a\n\nObservation:"),
        Some((1, "\n\n"))
    );
    assert_eq!(
        stops.find_stop_string("Thought. Observation: x"),
        Some((9, "Observation:"))
    );
    assert_eq!(stops.find_stop_string("nothing here"), None);
    // A streaming printer holds back a possible beginning of a stop string.
    assert_eq!(stops.pending_prefix_len("Answer: 4\n"), 1);
    assert_eq!(stops.pending_prefix_len("Answer. Obser"), 5);
    assert_eq!(stops.pending_prefix_len("Answer 🤗"), 0);
    // Union of two sets.
    let gguf = StopSet::new().with_ids([1, 2]);
    let all = stops.union(&gguf);
    assert!(all.is_stop_id(1) && all.is_stop_id(7) && all.strings().len() == 2);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let t = Tokenizer::from_dir(tokenizer_dir("qwen2")).unwrap();
    let dir = temp_dir("stops-bad");
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": "two"}"#,
    )
    .unwrap();
    let err = StopSet::from_model_dir(&dir, &t).unwrap_err();
    assert!(matches!(err, StopError::InvalidEosId { .. }), "{err:?}");
    assert!(err.to_string().contains("generation_config.json"), "{err}");

    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"eos_token_id": [1, 999999]}"#,
    )
    .unwrap();
    let err = StopSet::from_model_dir(&dir, &t).unwrap_err();
    assert!(
        matches!(err, StopError::EosIdOutOfRange { id: 999999, .. }),
        "{err:?}"
    );

    std::fs::write(dir.join("generation_config.json"), "{").unwrap();
    let err = StopSet::from_model_dir(&dir, &t).unwrap_err();
    assert!(matches!(err, StopError::File { .. }), "{err:?}");

    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"eos_token": {"content": "</s>"}}"#,
    )
    .unwrap();
    let err = StopSet::from_model_dir(&dir, &t).unwrap_err();
    match &err {
        StopError::UnknownEosToken { token, path } => {
            assert_eq!(token, "</s>");
            assert!(path.ends_with("tokenizer_config.json"));
        }
        other => panic!("expected UnknownEosToken, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn smollm2_gguf_stops_on_im_end() {
    let file = GgufFile::open(smollm2_gguf()).unwrap();
    let t = file.tokenizer().unwrap();
    let stops = file.stop_set().unwrap();
    assert_eq!(
        stops.ids().iter().copied().collect::<Vec<_>>(),
        vec![id(&t, "<|im_end|>")]
    );
    assert_eq!(t.eos_token().unwrap().content, "<|im_end|>");
}
