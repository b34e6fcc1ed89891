//! SmolLM2-135M-Instruct (GGUF, `scripts/fetch-smollm2.sh`) through the diffusion
//! [`Generator`]: zero steps, and no adapter, give the frozen model's greedy reply token for
//! token; a freshly initialised diffusion path (gated to zero until trained) integrated over
//! 3 midpoint steps gives it too, at 7 NFE per token.

mod tokenizer_support;

use l2d_models::chat_template::ChatMessage;
use l2d_models::diffusion::DiffusionPath;
use l2d_models::generation::{DiffusionOptions, Flow, GenerationConfig, Generator};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::{LoadOptions, Pretrained};
use tokenizer_support::smollm2_gguf;

#[test]
fn zero_steps_and_a_fresh_path_reproduce_the_base_reply() {
    let path = smollm2_gguf();
    let lm = Pretrained::open(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompt = lm
        .chat_prompt(&[ChatMessage::user("What is the capital of France?")])
        .unwrap();
    let prompts = [prompt];
    let config = GenerationConfig::greedy(8);
    let base = lm.generate(&prompts, &config, |_| Flow::Continue).unwrap();
    let want = &base.sequences[0].tokens;
    assert!(!want.is_empty());

    let fresh = DiffusionPath::init(&L2dConfig::default(), &lm.model, 0).unwrap();
    let cases = [
        ("no adapter", None, DiffusionOptions::fixed(7), 0.0),
        ("zero steps", Some(&fresh), DiffusionOptions::fixed(0), 0.0),
        (
            "fresh path, 3 steps",
            Some(&fresh),
            DiffusionOptions::fixed(3),
            7.0,
        ),
    ];
    for (what, path, options, nfe) in cases {
        let generator = Generator::new(&lm.model, path, options).unwrap();
        let mut step = generator.step();
        let out = lm
            .generate_with(&mut step, &prompts, &config, |_| Flow::Continue)
            .unwrap();
        println!(
            "{what}: {:?} ({:.1} tokens/s, {} NFE per token)",
            out.sequences[0].text,
            out.stats.tokens_per_second(),
            step.stats().mean_nfe_per_token()
        );
        assert_eq!(&out.sequences[0].tokens, want, "{what}");
        assert_eq!(out.sequences[0].text, base.sequences[0].text, "{what}");
        assert_eq!(step.stats().mean_nfe_per_token(), nfe, "{what}");
    }
}
