//! Chat templates rendered and encoded exactly as transformers' `apply_chat_template`
//! (fixtures of `scripts/make_tokenizer_fixtures.py`: a Llama-3.x-style, Qwen2 ChatML,
//! `{% generation %}`, Python-methods and Mistral `[INST]` templates, several
//! conversations, tools, a pinned date), plus the typed errors.

mod tokenizer_support;

use l2d_models::chat_template::{
    ChatMessage, ChatTemplate, ChatTemplateError, RenderOptions, TemplateDate,
};
use l2d_models::tokenizer::Tokenizer;
use serde_json::Value;
use tokenizer_support::{ids, read_json, temp_dir, tokenizer_dir};

fn pinned() -> TemplateDate {
    let reference = read_json(tokenizer_dir("reference.json"));
    let date = reference["pinned_date"].as_str().unwrap();
    let parts: Vec<u32> = date.split('-').map(|p| p.parse().unwrap()).collect();
    TemplateDate::fixed(parts[0] as i32, parts[1], parts[2]).unwrap()
}

fn options(rec: &Value) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: rec["add_generation_prompt"].as_bool().unwrap(),
        tools: (!rec["tools"].is_null()).then(|| rec["tools"].clone()),
        template_name: Some(rec["template"].as_str().unwrap().to_string()),
        ..Default::default()
    }
}

#[test]
fn renders_and_ids_equal_hugging_face() {
    let reference = read_json(tokenizer_dir("reference.json"));
    let mut checked = 0;
    let mut raised = 0;
    for name in ["llama3", "qwen2", "mistral"] {
        let dir = tokenizer_dir(name);
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let template = ChatTemplate::from_model_dir(&dir)
            .unwrap()
            .with_date(pinned());
        for rec in reference["tokenizers"][name]["chat"].as_array().unwrap() {
            let messages = rec["messages"].as_array().unwrap();
            let mut opts = options(rec);
            if template.names().is_empty() {
                opts.template_name = None; // a single unnamed template ("default" in the fixture)
            }
            let label = format!(
                "{name}/{}/{} tools={}",
                rec["template"],
                rec["name"],
                !rec["tools"].is_null()
            );
            match rec.get("error") {
                Some(hf_error) => {
                    let err = template.render(messages, &opts).unwrap_err();
                    match err {
                        ChatTemplateError::Raised { message, .. } => {
                            assert_eq!(message, hf_error.as_str().unwrap(), "{label}");
                            raised += 1;
                        }
                        other => panic!("{label}: expected Raised, got {other:?}"),
                    }
                }
                None => {
                    let text = template.render(messages, &opts).unwrap();
                    assert_eq!(
                        text,
                        rec["text"].as_str().unwrap(),
                        "{label}: rendered text"
                    );
                    let encoded = template.encode(&tokenizer, messages, &opts).unwrap();
                    assert_eq!(encoded, ids(&rec["ids"]), "{label}: ids");
                    checked += 1;
                }
            }
        }
    }
    // 5 conversations: llama3 ×2 (tools), qwen2 default/tool_use ×2 + generation + features,
    // mistral + 1 raising.
    assert_eq!(checked, 10 + 30 + 5, "number of rendered conversations");
    assert_eq!(raised, 1);
}

#[test]
fn template_bos_and_post_processor_bos_give_one_bos() {
    for name in ["llama3", "mistral"] {
        let dir = tokenizer_dir(name);
        let tokenizer = Tokenizer::from_dir(&dir).unwrap();
        let bos = tokenizer.bos_token().unwrap().clone();
        assert!(
            tokenizer.adds_bos(),
            "{name}: the post-processor adds BOS to plain text"
        );
        let template = ChatTemplate::from_model_dir(&dir)
            .unwrap()
            .with_date(pinned());
        let messages = [
            ChatMessage::user("Hi!"),
            ChatMessage::assistant("Hello."),
            ChatMessage::user("Bye"),
        ];
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        let text = template.render(&messages, &opts).unwrap();
        assert!(
            text.starts_with(&bos.content),
            "{name}: the template writes BOS"
        );
        let ids = template.encode(&tokenizer, &messages, &opts).unwrap();
        assert_eq!(ids[0], bos.id, "{name}");
        assert_eq!(
            ids.iter().filter(|&&i| i == bos.id).count(),
            1,
            "{name}: exactly one BOS"
        );
        // Encoding the text naively with special tokens would double it.
        let naive = tokenizer.encode(&text, true).unwrap();
        assert_eq!(&naive[..2], &[bos.id, bos.id], "{name}");
    }
}

#[test]
fn strftime_now_follows_the_pinned_date() {
    let dir = tokenizer_dir("llama3");
    let messages = [ChatMessage::user("Hi")];
    let opts = RenderOptions::default();
    let t = ChatTemplate::from_model_dir(&dir).unwrap();
    let a = t
        .clone()
        .with_date(TemplateDate::fixed(2024, 7, 26).unwrap())
        .render(&messages, &opts)
        .unwrap();
    let b = t
        .with_date(TemplateDate::fixed(2025, 1, 3).unwrap())
        .render(&messages, &opts)
        .unwrap();
    assert!(a.contains("Today Date: 26 Jul 2024\n"), "{a}");
    assert!(b.contains("Today Date: 03 Jan 2025\n"), "{b}");
    // A `date_string` variable overrides strftime_now, as in the Llama 3.1 template.
    let mut opts = RenderOptions::default();
    opts.extra
        .insert("date_string".into(), "01 Feb 2000".into());
    let c = ChatTemplate::from_model_dir(&dir)
        .unwrap()
        .render(&messages, &opts)
        .unwrap();
    assert!(c.contains("Today Date: 01 Feb 2000\n"), "{c}");
}

#[test]
fn named_templates_are_selected_like_transformers() {
    let t = ChatTemplate::from_model_dir(tokenizer_dir("qwen2")).unwrap();
    assert_eq!(t.names(), ["default", "tool_use", "generation", "features"]);
    let messages = [ChatMessage::user("Hi")];
    let tools = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
    let with_tools = RenderOptions {
        tools: Some(tools),
        ..Default::default()
    };
    // With tools and no name, `tool_use` is chosen (it prints the tools).
    assert!(
        t.render(&messages, &with_tools)
            .unwrap()
            .contains("<tools>")
    );
    let err = t
        .render(
            &messages,
            &RenderOptions {
                template_name: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, ChatTemplateError::UnknownName { ref name, .. } if name == "nope"),
        "{err}"
    );

    let dir = temp_dir("nodefault");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "a", "template": "A"}, {"name": "b", "template": "B"}]}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_model_dir(&dir).unwrap();
    let err = t.render(&messages, &RenderOptions::default()).unwrap_err();
    assert!(
        matches!(err, ChatTemplateError::NoDefault { .. }),
        "{err:?}"
    );
    let b = RenderOptions {
        template_name: Some("b".into()),
        ..Default::default()
    };
    assert_eq!(t.render(&messages, &b).unwrap(), "B");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn chat_template_jinja_takes_precedence() {
    let dir = temp_dir("jinja");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>"}, "chat_template": "from config"}"#,
    )
    .unwrap();
    let opts = RenderOptions::default();
    let msgs = [ChatMessage::user("x")];
    assert_eq!(
        ChatTemplate::from_model_dir(&dir)
            .unwrap()
            .render(&msgs, &opts)
            .unwrap(),
        "from config"
    );
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{{ bos_token }}from jinja\n",
    )
    .unwrap();
    let t = ChatTemplate::from_model_dir(&dir).unwrap();
    // bos_token as an object in tokenizer_config; the final newline is dropped as in Jinja2.
    assert_eq!(t.render(&msgs, &opts).unwrap(), "<s>from jinja");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn base_model_without_template_is_a_typed_error() {
    let err = ChatTemplate::from_model_dir(tokenizer_dir("base")).unwrap_err();
    assert!(
        matches!(err, ChatTemplateError::NoTemplate { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("base model"), "{err}");
    let err =
        ChatTemplate::from_tokenizer_config(tokenizer_dir("base").join("tokenizer_config.json"))
            .unwrap_err();
    assert!(
        matches!(err, ChatTemplateError::NoTemplate { .. }),
        "{err:?}"
    );
}

#[test]
fn syntax_errors_and_tojson_options() {
    let bad = ChatTemplate::new("{% for m in messages %}{{ m.role }", "bad");
    let err = bad
        .render(&[ChatMessage::user("x")], &RenderOptions::default())
        .unwrap_err();
    assert!(matches!(err, ChatTemplateError::Syntax { .. }), "{err:?}");

    // Python: json.dumps({"a": [1, 2.5e-07], "é": "<b>&"}, ensure_ascii=..., separators=...)
    let t = ChatTemplate::new(
        "{{ x | tojson }}|{{ x | tojson(ensure_ascii=true) }}|{{ x | tojson(separators=[',', ':'], sort_keys=true) }}",
        "tojson",
    );
    let mut opts = RenderOptions::default();
    opts.extra.insert(
        "x".into(),
        serde_json::json!({"a": [1, 2.5e-7], "é": "<b>&"}),
    );
    assert_eq!(
        t.render(&[ChatMessage::user("x")], &opts).unwrap(),
        r#"{"a": [1, 2.5e-07], "é": "<b>&"}|{"a": [1, 2.5e-07], "\u00e9": "<b>&"}|{"a":[1,2.5e-07],"é":"<b>&"}"#
    );
}

/// A template is code from the model's files: a runaway one stops on its execution budget,
/// quickly and with a typed error, while a long real conversation renders.
#[test]
fn a_runaway_template_stops_on_its_budget() {
    let nested = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "nested.jinja",
    );
    let start = std::time::Instant::now();
    let err = nested
        .render(&[ChatMessage::user("hi")], &RenderOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, ChatTemplateError::Render { reason, .. } if reason.contains("budget")),
        "{err}"
    );
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    // A big string built at once is refused before it is allocated.
    let huge = ChatTemplate::new("{{ 'x' * 100000000000 }}", "huge.jinja");
    assert!(
        huge.render(&[ChatMessage::user("hi")], &RenderOptions::default())
            .is_err()
    );
    // 2,000 messages of 2 kB each fit comfortably.
    let echo = ChatTemplate::new(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}",
        "echo.jinja",
    );
    let messages: Vec<ChatMessage> = (0..2000)
        .map(|i| ChatMessage::user(format!("{i}{}", "y".repeat(2000))))
        .collect();
    let text = echo.render(&messages, &RenderOptions::default()).unwrap();
    assert!(text.len() > 4_000_000);
}
