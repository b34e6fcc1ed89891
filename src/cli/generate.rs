//! `l2d generate`: complete prompts with the frozen model or its diffusion path.
//!
//! ```text
//! l2d generate --model .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --chat \
//!     --adapter runs/smollm2-arithmetic/adapter.safetensors --steps 7 "What is 12 + 30?"
//! ```
//!
//! One prompt is streamed token by token; several are generated as one left-padded batch and
//! printed in order. The closing line on standard error gives tokens/s and NFE per token.

use std::io::Write;

use l2d_models::chat_template::ChatMessage;
use l2d_models::generation::{Flow, Generator};

use super::{
    CliError, DiffusionArgs, ModelArgs, SamplingArgs, check_adapter_given, emit, invalid, note,
    note_context_full, stats_line,
};

/// Arguments of `l2d generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// The prompts (several make one batch).
    #[arg(required = true, value_name = "PROMPT")]
    pub prompts: Vec<String>,
    /// Wrap each prompt in the model's chat template as a user message.
    #[arg(long)]
    pub chat: bool,
    /// A system message before each prompt (with `--chat`).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// The model and adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Diffusion.
    #[command(flatten)]
    pub diffusion: DiffusionArgs,
    /// Sampling of the final token.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `l2d generate`: the completions go to `out` (streamed for one prompt), notes and the
/// statistics line to `log`.
///
/// # Errors
/// [`CliError`] for invalid flags, files that do not exist, a model or adapter that cannot be
/// loaded or does not fit, and generation failures.
pub fn run_generate(
    args: &GenerateArgs,
    out: &mut impl Write,
    log: &mut impl Write,
) -> Result<(), CliError> {
    check_adapter_given(&args.model, &args.diffusion)?;
    let options = args.diffusion.options()?;
    let config = args.sampling.generation_config(args.diffusion.seed)?;
    if args.prompts.iter().any(String::is_empty) {
        return Err(invalid("PROMPT", "an empty prompt"));
    }
    let loaded = args.model.load(args.diffusion.base_only)?;
    let lm = &loaded.lm;
    let generator = Generator::new(&lm.model, loaded.adapter.as_ref(), options)?;
    let prompts = args
        .prompts
        .iter()
        .map(|p| {
            if args.chat {
                let mut messages = Vec::new();
                if let Some(s) = &args.system {
                    messages.push(ChatMessage::system(s.clone()));
                }
                messages.push(ChatMessage::user(p.clone()));
                lm.chat_prompt(&messages)
            } else {
                lm.encode(p)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let context = lm.model.config().max_position_embeddings;
    let prompts: Vec<Vec<u32>> = prompts
        .into_iter()
        .map(|ids| args.sampling.fit_prompt(ids, context, log))
        .collect();
    note(log, describe(&generator));

    let single = prompts.len() == 1;
    let mut io_error = None;
    let mut step = generator.step();
    let output = lm.generate_with(&mut step, &prompts, &config, |event| {
        if single && let Err(e) = emit(out, event.text) {
            io_error = Some(e);
            return Flow::StopAll;
        }
        Flow::Continue
    })?;
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if single {
        writeln!(out)?;
    } else {
        for (i, seq) in output.sequences.iter().enumerate() {
            writeln!(out, "--- {}: {}", i + 1, args.prompts[i])?;
            writeln!(out, "{}", seq.text)?;
        }
    }
    note_context_full(log, &output, context);
    note(log, stats_line(&output, step.stats()));
    Ok(())
}

/// One line saying how tokens are produced.
pub fn describe(generator: &Generator<'_>) -> String {
    if !generator.is_diffusion() {
        return "generating with the frozen model (no diffusion)".into();
    }
    let o = generator.options();
    let how = match o.mode {
        l2d_models::generation::DiffusionMode::Fixed { steps, method } => format!(
            "{steps} {method} steps ({} NFE per token)",
            o.nominal_nfe().unwrap_or_default()
        ),
        l2d_models::generation::DiffusionMode::Adaptive {
            method,
            rtol,
            atol,
            max_nfe,
            ..
        } => format!(
            "adaptive {method} (rtol {rtol:e}, atol {atol:e}{})",
            max_nfe.map_or(String::new(), |m| format!(", at most {m} NFE"))
        ),
        l2d_models::generation::DiffusionMode::Sde { steps, diffusion } => format!(
            "{steps} SDE steps with diffusion {diffusion} ({} NFE per token)",
            o.nominal_nfe().unwrap_or_default()
        ),
        l2d_models::generation::DiffusionMode::Base => "no steps".into(),
    };
    let guidance = o.guidance.map_or(String::new(), |g| {
        format!(
            ", guidance toward class {} with weight {}",
            g.class, g.weight
        )
    });
    let temperature = generator.temperature();
    let x1 = if temperature == l2d_core::TemperatureSchedule::Constant(0.0) {
        "argmax".to_string()
    } else {
        format!(
            "{} at temperature {temperature}",
            generator.estimation().estimator
        )
    };
    format!(
        "generating with diffusion: {how}, x1 estimate {x1}{guidance}, seed {}",
        o.seed
    )
}
