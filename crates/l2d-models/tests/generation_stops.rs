//! Stop ids, stop strings, streaming and the token budget of the generation loop, on real
//! tokenizers (`fixtures/tokenizers/`) with a scripted [`TokenStep`] that makes "the model"
//! produce a chosen token sequence, so each case's text and stop point are known exactly.
//! The step also checks that the loop feeds back the tokens it sampled.

mod tokenizer_support;

use burn::tensor::{Device, Int, Tensor, TensorData};
use l2d_models::decoder::{ForwardOptions, KvCache};
use l2d_models::generation::{
    Flow, GenerationConfig, GenerationError, GenerationOutput, StopReason, TokenStep, generate,
};
use l2d_models::stops::StopSet;
use l2d_models::tokenizer::Tokenizer;
use tokenizer_support::tokenizer_dir;

/// Emits `scripts[row][call]` (then `filler`) as the argmax of its logits.
struct Scripted {
    scripts: Vec<Vec<u32>>,
    filler: u32,
    vocab: usize,
    calls: usize,
    /// The tokens fed to each decode call, per row.
    fed: Vec<Vec<u32>>,
}

impl Scripted {
    fn new(scripts: Vec<Vec<u32>>, vocab: usize, filler: u32) -> Self {
        let rows = scripts.len();
        Scripted {
            scripts,
            filler,
            vocab,
            calls: 0,
            fed: vec![Vec::new(); rows],
        }
    }
}

impl TokenStep for Scripted {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn device(&self) -> Device {
        Device::flex()
    }
    fn next_logits(
        &mut self,
        input_ids: Tensor<2, Int>,
        _cache: &mut KvCache,
        _options: &ForwardOptions,
    ) -> Result<Tensor<2>, GenerationError> {
        let [batch, seq] = input_ids.dims();
        assert_eq!(batch, self.scripts.len());
        if self.calls > 0 {
            assert_eq!(seq, 1, "decode steps feed one token per row");
            let ids = input_ids
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap();
            for (r, id) in ids.into_iter().enumerate() {
                self.fed[r].push(id as u32);
            }
        }
        let mut logits = vec![0f32; batch * self.vocab];
        for (r, script) in self.scripts.iter().enumerate() {
            let id = script.get(self.calls).copied().unwrap_or(self.filler);
            logits[r * self.vocab + id as usize] = 10.0;
        }
        self.calls += 1;
        Ok(Tensor::from_data(
            TensorData::new(logits, [batch, self.vocab]),
            &Device::flex(),
        ))
    }
}

struct Run {
    out: GenerationOutput,
    /// Per row: `(token, text)` of each event.
    events: Vec<Vec<(Option<u32>, String)>>,
    step: Scripted,
}

fn run(tokenizer: &Tokenizer, scripts: Vec<Vec<u32>>, config: &GenerationConfig) -> Run {
    let filler = tokenizer.encode("x", false).unwrap()[0];
    let mut step = Scripted::new(scripts, tokenizer.vocab_size(), filler);
    let rows = step.scripts.len();
    let mut events = vec![Vec::new(); rows];
    let prompts = vec![vec![filler]; rows];
    let out = generate(&mut step, Some(tokenizer), &prompts, config, |e| {
        events[e.row].push((e.token, e.text.to_string()));
        Flow::Continue
    })
    .unwrap();
    // The loop fed back exactly what it sampled (stop ids included) until every row ended.
    for (r, seq) in out.sequences.iter().enumerate() {
        let n = seq.tokens.len();
        assert_eq!(
            step.fed[r][..n.min(step.fed[r].len())],
            seq.tokens[..n.min(step.fed[r].len())]
        );
    }
    Run { out, events, step }
}

fn streamed(events: &[(Option<u32>, String)]) -> String {
    events.iter().map(|(_, t)| t.as_str()).collect()
}

fn tok(name: &str) -> Tokenizer {
    Tokenizer::from_dir(tokenizer_dir(name)).unwrap()
}

#[test]
fn every_eos_id_of_the_union_stops_and_is_never_emitted() {
    // llama3: config.json and generation_config.json list <|end_of_text|>, <|eom_id|>,
    // <|eot_id|>; tokenizer_config.json names <|eot_id|>.
    let dir = tokenizer_dir("llama3");
    let t = Tokenizer::from_dir(&dir).unwrap();
    let stops = StopSet::from_model_dir(&dir, &t).unwrap();
    assert_eq!(stops.ids().len(), 3);
    let hello = t.encode("Hello world", false).unwrap();
    for &eos in stops.ids() {
        let script = [
            hello.clone(),
            vec![eos],
            t.encode(" more text", false).unwrap(),
        ]
        .concat();
        let config = GenerationConfig {
            stops: stops.clone(),
            ..GenerationConfig::greedy(50)
        };
        let r = run(&t, vec![script], &config);
        let seq = &r.out.sequences[0];
        assert_eq!(seq.tokens, hello, "EOS {eos}");
        assert_eq!(seq.stop_reason, StopReason::StopId(eos));
        assert_eq!(seq.text, "Hello world");
        assert_eq!(streamed(&r.events[0]), "Hello world");
        assert!(r.events[0].iter().all(|(id, _)| *id != Some(eos)));
        // Prefill + one decode step per token up to the EOS; nothing after it is computed.
        assert_eq!(r.step.calls, hello.len() + 1);
        assert_eq!(r.out.stats.new_tokens, hello.len() + 1);
    }
}

#[test]
fn stop_string_split_across_tokens_is_never_streamed() {
    let t = tok("qwen2");
    let text = "The capital of France is Paris. It is";
    let script = t.encode(text, false).unwrap();
    // "s Pa" spans the tokens of " is" and " Paris"; nothing from its start may be printed.
    for (stop, want) in [
        ("s Pa", "The capital of France i"),
        ("Paris.", "The capital of France is "),
        (" It", "The capital of France is Paris."),
        ("The", ""),
    ] {
        let config = GenerationConfig::greedy(100).with_stop_string(stop);
        let r = run(&t, vec![script.clone()], &config);
        let seq = &r.out.sequences[0];
        assert_eq!(seq.text, want, "stop {stop:?}");
        assert_eq!(seq.stop_reason, StopReason::StopString(stop.into()));
        assert_eq!(streamed(&r.events[0]), want, "stop {stop:?}");
        // At every event, what has been printed is a prefix of the final text.
        let mut shown = String::new();
        for (_, delta) in &r.events[0] {
            shown.push_str(delta);
            assert!(want.starts_with(&shown), "{stop:?}: printed {shown:?}");
        }
        // Generation stopped at the token completing the stop string; the tokens kept
        // decode to the text plus the stop string's beginning.
        let decoded = t.decode(&seq.tokens, true).unwrap();
        assert!(decoded.starts_with(&format!("{want}{stop}")), "{decoded:?}");
        let shorter = t.decode(&seq.tokens[..seq.tokens.len() - 1], true).unwrap();
        assert!(!shorter.contains(stop), "{shorter:?} already held {stop:?}");
    }
}

#[test]
fn held_back_prefix_is_released_when_the_stop_string_does_not_complete() {
    let t = tok("qwen2");
    let text = "The capital of France is Paris.";
    let script = t.encode(text, false).unwrap();
    let stop = "s Pb";
    let config = GenerationConfig::greedy(script.len()).with_stop_string(stop);
    let r = run(&t, vec![script.clone()], &config);
    let seq = &r.out.sequences[0];
    assert_eq!(seq.text, text);
    assert_eq!(seq.stop_reason, StopReason::MaxNewTokens);
    assert_eq!(streamed(&r.events[0]), text);
    // Mid-stream, the printed text never ends in a proper prefix of the stop string.
    let mut shown = String::new();
    for (_, delta) in &r.events[0][..r.events[0].len() - 1] {
        shown.push_str(delta);
        for k in 1..stop.len() {
            assert!(!shown.ends_with(&stop[..k]), "printed {shown:?}");
        }
    }
}

#[test]
fn multibyte_text_and_stop_strings_stream_whole_characters() {
    let t = tok("qwen2");
    let text = "Crème brûlée 🤗 et café";
    let script = t.encode(text, false).unwrap();
    for (stop, want) in [
        ("û", "Crème br"),
        ("🤗", "Crème brûlée "),
        ("t caf", "Crème brûlée 🤗 e"),
    ] {
        let config = GenerationConfig::greedy(script.len()).with_stop_string(stop);
        let r = run(&t, vec![script.clone()], &config);
        assert_eq!(r.out.sequences[0].text, want, "stop {stop:?}");
        assert_eq!(streamed(&r.events[0]), want);
        assert!(r.events[0].iter().all(|(_, d)| !d.contains('\u{FFFD}')));
    }
    // No stop string: the whole text, character-safe deltas.
    let r = run(
        &t,
        vec![script.clone()],
        &GenerationConfig::greedy(script.len()),
    );
    assert_eq!(streamed(&r.events[0]), text);
    assert!(
        r.events[0]
            .iter()
            .all(|(id, d)| id.is_some() && !d.contains('\u{FFFD}'))
    );
}

#[test]
fn rows_of_a_batch_stop_for_their_own_reasons() {
    let t = tok("llama3");
    let eot = t.token_to_id("<|eot_id|>").unwrap();
    let a = [t.encode("Yes.", false).unwrap(), vec![eot]].concat();
    let b = t.encode("No. Stop here and more", false).unwrap();
    let c = t
        .encode(
            "Maybe a long answer that keeps going on and on, well past the others",
            false,
        )
        .unwrap();
    let n = c.len() - 2;
    assert!(t.encode("No. Stop here", false).unwrap().len() < n);
    let config = GenerationConfig::greedy(n)
        .with_stop_ids([eot])
        .with_stop_string(" here");
    let r = run(&t, vec![a, b, c.clone()], &config);
    let s = &r.out.sequences;
    assert_eq!(
        (s[0].text.as_str(), &s[0].stop_reason),
        ("Yes.", &StopReason::StopId(eot))
    );
    assert_eq!(s[1].text, "No. Stop");
    assert_eq!(s[1].stop_reason, StopReason::StopString(" here".into()));
    assert_eq!(s[2].tokens, c[..n]);
    assert_eq!(s[2].text, t.decode(&c[..n], true).unwrap());
    assert_eq!(s[2].stop_reason, StopReason::MaxNewTokens);
    for (row, seq) in s.iter().enumerate() {
        assert_eq!(streamed(&r.events[row]), seq.text, "row {row}");
    }
    // The batch ran until its longest row ended: prefill + n - 1 decode steps.
    assert_eq!(r.step.calls, n);
}

#[test]
fn special_tokens_are_kept_in_ids_and_skipped_in_text() {
    let t = tok("qwen2");
    let start = t.token_to_id("<|im_start|>").unwrap();
    let script = [
        t.encode("Hi", false).unwrap(),
        vec![start],
        t.encode("there", false).unwrap(),
    ]
    .concat();
    let n = script.len();
    let r = run(&t, vec![script.clone()], &GenerationConfig::greedy(n));
    assert_eq!(r.out.sequences[0].tokens, script);
    assert_eq!(r.out.sequences[0].text, "Hithere");
    let keep = GenerationConfig {
        skip_special_tokens: false,
        ..GenerationConfig::greedy(n)
    };
    let r = run(&t, vec![script], &keep);
    assert_eq!(r.out.sequences[0].text, "Hi<|im_start|>there");
}
