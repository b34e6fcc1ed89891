//! Chat data against independent references (`fixtures/train/template_reference.json`, made by
//! `scripts/make_train_fixtures.py` with transformers 4.46.3):
//! - the `turn` layout reproduces the authors' data code (context with the generation prompt,
//!   then the response, scored with EOS; cut at the first turn over `max_seq_len`) on a
//!   Llama-3-style tokenizer and on SmolLM2's;
//! - the `conversation` layout's loss mask equals transformers' `return_assistant_tokens_mask`
//!   on a `{% generation %}` template, and scores the same tokens as the `turn` layout on the
//!   SmolLM2 and Llama-3 templates;
//! - JSONL and Parquet readers give the same conversations.

use std::path::{Path, PathBuf};

use l2d_models::chat_template::{ChatTemplate, TemplateDate};
use l2d_models::gguf::GgufFile;
use l2d_models::tokenizer::Tokenizer;
use l2d_train::data::encode::IGNORE_INDEX;
use l2d_train::data::{ClassList, ExampleEncoder, Layout, read_chat_file};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(root().join("fixtures/train/template_reference.json"))
        .expect("fixtures/train/template_reference.json");
    serde_json::from_str(&text).unwrap()
}

#[path = "../../../tests/support/smollm2.rs"]
mod smollm2;
use smollm2::smollm2_gguf;

fn pinned() -> TemplateDate {
    TemplateDate::fixed(2024, 7, 26).unwrap()
}

fn tokenizer_and_template(name: &str) -> (Tokenizer, ChatTemplate) {
    match name {
        "smollm2" => {
            let file = GgufFile::open(smollm2_gguf()).unwrap();
            (
                file.tokenizer().unwrap(),
                file.chat_template().unwrap().with_date(pinned()),
            )
        }
        other => {
            let dir = root().join("fixtures/tokenizers").join(other);
            (
                Tokenizer::from_dir(&dir).unwrap(),
                ChatTemplate::from_model_dir(&dir)
                    .unwrap()
                    .with_date(pinned()),
            )
        }
    }
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn conversations() -> Vec<l2d_train::data::Conversation> {
    read_chat_file(root().join("fixtures/train/conversations.jsonl")).unwrap()
}

#[test]
fn turn_layout_matches_the_reference_data_code() {
    let reference = reference();
    let max = reference["max_seq_len"].as_u64().unwrap() as usize;
    let convs = conversations();
    for name in ["llama3", "smollm2"] {
        let (tok, template) = tokenizer_and_template(name);
        let r = &reference["turn"][name];
        assert_eq!(
            tok.eos_token().unwrap().id as i64,
            r["eos_id"].as_i64().unwrap()
        );
        let encoder = ExampleEncoder::new(&tok, &template, max, Layout::Turn);
        let mut compared = 0;
        for (i, c) in convs.iter().enumerate() {
            let (examples, _) = encoder.encode(c, i).unwrap();
            let expected = r["conversations"][i].as_array().unwrap();
            assert_eq!(examples.len(), expected.len(), "{name} conversation {i}");
            for (e, x) in examples.iter().zip(expected) {
                let got: Vec<i64> = e.input_ids.iter().map(|&t| t as i64).collect();
                assert_eq!(got, ids(&x["input_ids"]), "{name} conversation {i} inputs");
                assert_eq!(
                    e.labels,
                    ids(&x["labels"]),
                    "{name} conversation {i} labels"
                );
                compared += 1;
            }
        }
        assert!(compared >= 5, "{name}: only {compared} examples compared");
    }
}

#[test]
fn conversation_layout_mask_equals_transformers_assistant_mask() {
    let reference = reference();
    let (tok, template) = tokenizer_and_template("qwen2");
    let encoder = ExampleEncoder::new(&tok, &template, 10_000, Layout::Conversation)
        .with_template_name(Some("generation".into()));
    assert!(encoder.uses_generation_blocks());
    let convs = conversations();
    let masks = reference["assistant_masks"]["qwen2-generation"]
        .as_array()
        .unwrap();
    let mut scored_total = 0;
    for (i, c) in convs.iter().enumerate() {
        let hf_ids = ids(&masks[i]["input_ids"]);
        let hf_mask = ids(&masks[i]["assistant_masks"]);
        let (examples, _) = encoder.encode(c, i).unwrap();
        if hf_mask.iter().all(|&m| m == 0) {
            assert!(
                examples.is_empty(),
                "conversation {i} has no assistant turn"
            );
            continue;
        }
        assert_eq!(examples.len(), 1);
        let tokens = examples[0].tokens_with_mask();
        // Our sequence stops at the last scored token; the rest of the rendering is unscored.
        assert!(tokens.len() <= hf_ids.len());
        for (j, (id, scored)) in tokens.iter().enumerate() {
            assert_eq!(*id as i64, hf_ids[j], "conversation {i} token {j}");
            assert_eq!(*scored, hf_mask[j] == 1, "conversation {i} mask at {j}");
        }
        assert!(hf_mask[tokens.len()..].iter().all(|&m| m == 0));
        scored_total += tokens.iter().filter(|t| t.1).count();
        // Labels are the inputs shifted by one.
        let e = &examples[0];
        for j in 0..e.len() {
            if e.labels[j] != IGNORE_INDEX {
                assert_eq!(e.labels[j], tokens[j + 1].0 as i64);
            }
        }
    }
    assert!(scored_total > 100);
}

#[test]
fn conversation_layout_scores_what_the_turn_layout_scores() {
    let convs = conversations();
    for name in ["llama3", "smollm2"] {
        let (tok, template) = tokenizer_and_template(name);
        let turn = ExampleEncoder::new(&tok, &template, 10_000, Layout::Turn);
        let whole = ExampleEncoder::new(&tok, &template, 10_000, Layout::Conversation);
        for (i, c) in convs.iter().enumerate() {
            let (turns, _) = turn.encode(c, i).unwrap();
            let (one, _) = whole.encode(c, i).unwrap();
            let turn_scored: Vec<i64> = turns
                .iter()
                .flat_map(|e| e.labels.iter().copied().filter(|&l| l != IGNORE_INDEX))
                .collect();
            let whole_scored: Vec<i64> = one
                .iter()
                .flat_map(|e| e.labels.iter().copied().filter(|&l| l != IGNORE_INDEX))
                .collect();
            assert_eq!(whole_scored, turn_scored, "{name} conversation {i}");
            // The last turn's example of the turn layout is the conversation's sequence.
            if let (Some(last), Some(one)) = (turns.last(), one.first()) {
                assert_eq!(last.input_ids, one.input_ids, "{name} conversation {i}");
            }
        }
    }
}

#[test]
fn truncation_cuts_at_the_first_turn_that_does_not_fit_and_counts() {
    let reference = reference();
    let max = reference["max_seq_len"].as_u64().unwrap() as usize;
    let (tok, template) = tokenizer_and_template("smollm2");
    let convs = conversations();
    let encoder = ExampleEncoder::new(&tok, &template, max, Layout::Conversation);
    let (examples, stats) = encoder.encode_all(&convs).unwrap();
    assert!(examples.iter().all(|e| e.len() <= max));
    assert_eq!(stats.conversations, convs.len());
    assert_eq!(stats.without_assistant, 1); // conversation 3
    assert_eq!(stats.skipped_too_long, 1); // conversation 4: its only turn is too long
    assert_eq!(stats.truncated, 1); // conversation 5: "Hi!" kept, the long turn dropped
    assert_eq!(stats.dropped_turns, 1);
    assert_eq!(stats.examples, convs.len() - 2);
    let cut = examples.iter().find(|e| e.conversation == 5).unwrap();
    let text = tok
        .decode(
            &cut.tokens_with_mask()
                .iter()
                .filter(|t| t.1)
                .map(|t| t.0)
                .collect::<Vec<_>>(),
            false,
        )
        .unwrap();
    assert_eq!(text, "Hi!<|im_end|>");
    // Same counts for the turn layout as the reference's examples imply.
    let turn = ExampleEncoder::new(&tok, &template, max, Layout::Turn);
    let (turn_examples, turn_stats) = turn.encode_all(&convs).unwrap();
    let expected: usize = reference["turn"]["smollm2"]["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_array().unwrap().len())
        .sum();
    assert_eq!(turn_examples.len(), expected);
    assert_eq!(turn_stats.dropped_turns, 1);
}

#[test]
fn jsonl_and_parquet_hold_the_same_conversations() {
    let a = conversations();
    let b = read_chat_file(root().join("fixtures/train/conversations.parquet")).unwrap();
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.messages, y.messages);
        assert_eq!(x.class, y.class);
        assert_eq!(x.origin.record, y.origin.record);
        assert!(y.origin.parquet);
    }
}

#[test]
fn class_labels_map_to_ids_with_the_null_class_last() {
    let convs = conversations();
    let classes =
        ClassList::new(vec!["math".into(), "coding".into(), "general_qa".into()]).unwrap();
    let got: Vec<Option<usize>> = convs.iter().map(|c| classes.resolve(c).unwrap()).collect();
    assert_eq!(got[0], Some(0));
    assert_eq!(got[1], Some(2));
    assert_eq!(got[2], Some(3)); // unlabelled -> null class
    assert_eq!(got[6], Some(1));
    // An unknown class names the file and line.
    let short = ClassList::new(vec!["math".into()]).unwrap();
    let err = short.resolve(&convs[1]).unwrap_err().to_string();
    assert!(
        err.contains("conversations.jsonl") && err.contains("line 2"),
        "{err}"
    );
    assert!(err.contains("general_qa"), "{err}");
    // No classes configured: no ids.
    assert_eq!(ClassList::default().resolve(&convs[0]).unwrap(), None);
}

#[test]
fn malformed_records_are_typed_errors_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("l2d-train-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "{\"messages\": [{\"role\": \"user\"}]}\n",
            "messages[0].content",
        ),
        ("\n{\"nope\": 1}\n", "line 2"),
        ("{\"messages\": [], \"class\": -1}\n", "class"),
        ("not json\n", "invalid JSON"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.jsonl"));
        std::fs::write(&p, text).unwrap();
        let err = read_chat_file(&p).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains("bad"), "{err}");
    }
    let p = dir.join("data.csv");
    std::fs::write(&p, "a,b\n").unwrap();
    assert!(
        read_chat_file(&p)
            .unwrap_err()
            .to_string()
            .contains(".jsonl")
    );
    let missing = read_chat_file(dir.join("missing.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("missing.jsonl"), "{missing}");
    let not_parquet = dir.join("x.parquet");
    std::fs::write(&not_parquet, "PAR1 nope").unwrap();
    assert!(read_chat_file(&not_parquet).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
