//! `l2d chat`: a conversation through the model's chat template, one user message per line of
//! standard input (end with an empty input, `/exit` or end of file), each reply streamed as it
//! is generated, with its statistics line.
//!
//! ```text
//! l2d chat --model .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --adapter runs/smollm2-arithmetic/adapter.safetensors --steps 7
//! ```

use std::io::{BufRead, Write};

use l2d_models::chat_template::ChatMessage;
use l2d_models::generation::{Flow, Generator};

use super::generate::describe;
use super::{
    CliError, DiffusionArgs, ModelArgs, SamplingArgs, check_adapter_given, emit, note,
    note_context_full, stats_line,
};

/// Arguments of `l2d chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    /// A system message opening the conversation.
    #[arg(long)]
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

/// Runs `l2d chat`: reads user messages from `input`, writes the replies to `out` (streamed),
/// prompts, notes and statistics to `log`. Returns the number of replies.
///
/// # Errors
/// [`CliError`] for invalid flags, files that do not exist, a model without a chat template, a
/// model or adapter that cannot be loaded, and generation failures.
pub fn run_chat(
    args: &ChatArgs,
    input: &mut impl BufRead,
    out: &mut impl Write,
    log: &mut impl Write,
) -> Result<usize, CliError> {
    check_adapter_given(&args.model, &args.diffusion)?;
    let options = args.diffusion.options()?;
    let config = args.sampling.generation_config(args.diffusion.seed)?;
    let loaded = args.model.load(args.diffusion.base_only)?;
    let lm = &loaded.lm;
    let generator = Generator::new(&lm.model, loaded.adapter.as_ref(), options)?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::system(s.clone()));
    }
    // Fail now, not after the first message, for a model without a chat template.
    lm.chat_prompt(&[ChatMessage::user("")])?;
    note(log, describe(&generator));
    note(
        log,
        "type a message (empty line, /exit or end of input to quit)",
    );
    let mut replies = 0;
    loop {
        let _ = emit(log, "> ");
        let mut line = String::new();
        if input.read_line(&mut line).map_err(CliError::Input)? == 0 {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() || text == "/exit" {
            break;
        }
        messages.push(ChatMessage::user(text));
        let context = lm.model.config().max_position_embeddings;
        let prompt = args
            .sampling
            .fit_prompt(lm.chat_prompt(&messages)?, context, log);
        let mut step = generator.step();
        let mut io_error = None;
        let output = lm.generate_with(&mut step, &[prompt], &config, |event| {
            if let Err(e) = emit(out, event.text) {
                io_error = Some(e);
                return Flow::StopAll;
            }
            Flow::Continue
        })?;
        if let Some(e) = io_error {
            return Err(e.into());
        }
        writeln!(out)?;
        note_context_full(log, &output, context);
        note(log, stats_line(&output, step.stats()));
        messages.push(ChatMessage::assistant(output.sequences[0].text.clone()));
        replies += 1;
    }
    Ok(replies)
}
