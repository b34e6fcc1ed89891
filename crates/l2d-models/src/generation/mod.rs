//! Base generation: prefill once, then key/value-cached decoding, greedy or sampled, with
//! stop ids, stop strings, a token budget, streaming and statistics.
//!
//! [`generate`] runs the loop over any [`TokenStep`] (the per-token model evaluation; the
//! frozen model is [`BaseStep`]), so the diffusion [`Generator`] ([`diffusion`]) reuses
//! padding, positions, sampling, stops, streaming and statistics and replaces only the step
//! ([`DiffusionStep`]).
//!
//! What one call does:
//! * **Batch with left padding.** Prompts of different lengths are left-padded into one
//!   `[batch, longest]` prefill with an attention mask and transformers' positions
//!   (`cumsum(mask) − 1`); each decode step extends the mask by one column and feeds every
//!   row its next position, so a row's tokens equal those of a one-prompt call (greedy).
//! * **Choosing tokens** with a [`Sampler`] (greedy at temperature 0; temperature, top-k,
//!   top-p, min-p; a seeded host RNG).
//! * **Stopping** a row on any id of the [`StopSet`] (the id is not part of the output), on
//!   a stop string (the text is cut before it; a string split across tokens is held back
//!   until it is decided, see [`StreamingText`]), when the callback asks, or after
//!   `max_new_tokens` sampled tokens (a stop id counts, as in transformers). The budget is
//!   always enforced.
//! * **Streaming**: the callback receives every accepted token with the UTF-8-safe text it
//!   made final, and a last event without a token for text held back until the end.
//!
//! ```
//! use burn::tensor::{DType, Device};
//! use l2d_models::config::ModelConfig;
//! use l2d_models::decoder::CausalLm;
//! use l2d_models::generation::{generate, BaseStep, Flow, GenerationConfig, StopReason};
//!
//! let config = ModelConfig::from_json_str(r#"{"model_type": "llama", "hidden_size": 32,
//!     "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "vocab_size": 50}"#)?;
//! let model = CausalLm::random(&config, &Device::flex(), DType::F32, 0);
//! let prompts = vec![vec![1, 5, 7, 9], vec![3, 4]];
//! let config = GenerationConfig::greedy(6);
//! let out = generate(&mut BaseStep::new(&model), None, &prompts, &config, |_| Flow::Continue)?;
//! assert_eq!(out.sequences[0].tokens.len(), 6);
//! assert_eq!(out.sequences[1].stop_reason, StopReason::MaxNewTokens);
//! assert_eq!(out.stats.new_tokens, 12);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod diffusion;
mod diffusion_error;
mod options;
mod stats;
mod step;
mod text;

pub use diffusion::{
    BudgetPolicy, DEFAULT_ADAPTIVE_METHOD, DEFAULT_FIXED_METHOD, DEFAULT_TOLERANCE,
    DiffusionGenerationError, DiffusionMode, DiffusionOptions, DiffusionOutput, DiffusionStats,
    DiffusionStep, Generator, GuidanceOptions, InvalidDiffusionMode, MAX_NFE_PER_TOKEN,
    MAX_SOLVER_STEPS, TemperatureOffset, TokenStats,
};
pub use step::{BaseStep, TokenStep};
pub use text::{StreamingText, TextDelta};

use std::time::{Duration, Instant};

use burn::tensor::{Int, Tensor, TensorData};

use crate::decoder::{ForwardOptions, KvCache, positions_from_attention_mask};
use crate::sampling::{Sampler, SamplingConfig, SamplingError};
use crate::stops::StopSet;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Errors of a generation call.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// No prompt was given.
    #[error("no prompts to generate from")]
    NoPrompts,
    /// A prompt has no tokens.
    #[error("prompt {row} is empty: generation needs at least one token to condition on")]
    EmptyPrompt {
        /// The prompt's index in the batch.
        row: usize,
    },
    /// A prompt id is outside the model's vocabulary.
    #[error(
        "prompt {row} holds id {id} at position {position}, outside the vocabulary of {vocab_size}"
    )]
    TokenOutOfVocabulary {
        /// The prompt's index in the batch.
        row: usize,
        /// The position in the prompt.
        position: usize,
        /// The id.
        id: u32,
        /// The model's vocabulary size.
        vocab_size: usize,
    },
    /// A prompt is longer than the model's context.
    #[error(
        "prompt {row} has {len} tokens, more than the model's context of {context} positions \
         (shorten it, or truncate it: `--truncate left` on the command line)"
    )]
    PromptTooLong {
        /// The prompt's index in the batch.
        row: usize,
        /// Its length in tokens.
        len: usize,
        /// The model's context (`max_position_embeddings`).
        context: usize,
    },
    /// Stop strings are matched on text, which needs a tokenizer.
    #[error("stop strings {strings:?} need a tokenizer to match decoded text")]
    StopStringsNeedTokenizer {
        /// The stop strings given.
        strings: Vec<String>,
    },
    /// The sampling parameters are invalid.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// Decoding generated ids failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A [`TokenStep`] returned logits of the wrong shape.
    #[error("the token step returned logits of shape {found:?}, expected {expected:?}")]
    LogitsShape {
        /// `[batch, vocab]`.
        expected: [usize; 2],
        /// What came back.
        found: [usize; 2],
    },
    /// A [`TokenStep`] implementation failed.
    #[error("token step failed: {0}")]
    Step(Box<dyn std::error::Error + Send + Sync>),
}

/// Parameters of one generation call.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens sampled per row (stop ids included). Always enforced.
    pub max_new_tokens: usize,
    /// How the next token is chosen.
    pub sampling: SamplingConfig,
    /// Stop ids and strings. [`generate`] uses exactly this set;
    /// [`Pretrained`](crate::pretrained::Pretrained) adds the model's EOS ids.
    pub stops: StopSet,
    /// Leave special tokens out of the text (they stay in the token ids).
    pub skip_special_tokens: bool,
}

impl Default for GenerationConfig {
    /// Greedy, 256 new tokens, no extra stops, special tokens left out of the text.
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            sampling: SamplingConfig::greedy(),
            stops: StopSet::new(),
            skip_special_tokens: true,
        }
    }
}

impl GenerationConfig {
    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenerationConfig {
            max_new_tokens,
            ..Default::default()
        }
    }

    /// Sampling with `sampling`, at most `max_new_tokens` tokens.
    pub fn sampled(sampling: SamplingConfig, max_new_tokens: usize) -> Self {
        GenerationConfig {
            max_new_tokens,
            sampling,
            ..Default::default()
        }
    }

    /// Adds a stop string.
    pub fn with_stop_string(mut self, s: impl Into<String>) -> Self {
        self.stops.add_string(s);
        self
    }

    /// Adds stop ids.
    pub fn with_stop_ids(mut self, ids: impl IntoIterator<Item = u32>) -> Self {
        self.stops = self.stops.with_ids(ids);
        self
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced this stop id (not part of the output).
    StopId(u32),
    /// The text reached this stop string (cut from the text).
    StopString(String),
    /// `max_new_tokens` tokens were sampled.
    MaxNewTokens,
    /// The sequence filled the model's context (`max_position_embeddings` positions).
    ContextFull,
    /// The token callback asked to stop.
    Callback,
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// The prompt's length in tokens.
    pub prompt_len: usize,
    /// The generated ids, without a final stop id. When a stop string ended the row, the
    /// tokens spelling it are kept (as transformers and vLLM do) while [`Sequence::text`]
    /// is cut before it.
    pub tokens: Vec<u32>,
    /// The generated text (empty without a tokenizer), never containing a stop string.
    pub text: String,
    /// Why the row stopped.
    pub stop_reason: StopReason,
}

/// Timings and counts of one call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GenerationStats {
    /// Rows in the batch.
    pub batch_size: usize,
    /// Prompt tokens, padding excluded.
    pub prompt_tokens: usize,
    /// Tokens sampled in all rows (stop ids included).
    pub new_tokens: usize,
    /// Of those, the tokens sampled after decode steps (the first comes from the prefill).
    pub decode_tokens: usize,
    /// Model evaluations after the prefill.
    pub decode_steps: usize,
    /// The prefill's forward and the first sampling.
    pub prefill_time: Duration,
    /// The decode steps' forwards and samplings.
    pub decode_time: Duration,
    /// The whole call, detokenisation and callbacks included.
    pub total_time: Duration,
}

impl GenerationStats {
    /// Decode throughput: tokens sampled after decode steps per second of decode time.
    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.decode_tokens, self.decode_time)
    }

    /// Prompt tokens per second of prefill time.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_time)
    }

    /// New tokens per second of the whole call.
    pub fn tokens_per_second(&self) -> f64 {
        rate(self.new_tokens, self.total_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// One sequence per prompt, in order.
    pub sequences: Vec<Sequence>,
    /// Timings and counts.
    pub stats: GenerationStats,
    /// The time of each model evaluation and sampling: the prefill first, then one entry
    /// per decode step.
    pub step_times: Vec<Duration>,
}

/// What the streaming callback receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenEvent<'a> {
    /// The prompt's index in the batch.
    pub row: usize,
    /// The accepted token; `None` for the final event that releases text held back until
    /// the row ended (a possible stop-string start, an incomplete character).
    pub token: Option<u32>,
    /// The text made final by this event (UTF-8-safe, may be empty; empty without a
    /// tokenizer).
    pub text: &'a str,
}

/// The callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    /// Keep generating.
    #[default]
    Continue,
    /// Stop this row ([`StopReason::Callback`]); the token just received is kept.
    Stop,
    /// Stop every row ([`StopReason::Callback`]); rows after this one drop the token of
    /// this step.
    StopAll,
}

struct Row<'t> {
    prompt_len: usize,
    tokens: Vec<u32>,
    sampled: usize,
    text: Option<StreamingText<'t>>,
    stop: Option<StopReason>,
}

/// Shared state of the loop's token handling.
struct Rows<'t, 'c, F> {
    rows: Vec<Row<'t>>,
    config: &'c GenerationConfig,
    /// The model's context, when it has one.
    context: Option<usize>,
    on_token: F,
}

impl<'c, F: FnMut(&TokenEvent<'_>) -> Flow> Rows<'_, 'c, F> {
    fn active(&self) -> bool {
        self.rows.iter().any(|r| r.stop.is_none())
    }

    /// Handles the sampled ids of one step; returns how many were sampled for active rows.
    fn accept(&mut self, ids: &[u32]) -> Result<usize, GenerationError> {
        let mut sampled = 0;
        let mut stop_all = false;
        for (r, &id) in ids.iter().enumerate() {
            if self.rows[r].stop.is_some() {
                continue;
            }
            sampled += 1;
            if self.token(r, id)? == Flow::StopAll {
                stop_all = true;
                break;
            }
        }
        if stop_all {
            for r in 0..self.rows.len() {
                if self.rows[r].stop.is_none() {
                    self.rows[r].stop = Some(StopReason::Callback);
                    self.flush(r)?;
                }
            }
        }
        Ok(sampled)
    }

    fn token(&mut self, r: usize, id: u32) -> Result<Flow, GenerationError> {
        let config: &'c GenerationConfig = self.config;
        let stops = &config.stops;
        let row = &mut self.rows[r];
        row.sampled += 1;
        if stops.is_stop_id(id) {
            row.stop = Some(StopReason::StopId(id));
            self.flush(r)?;
            return Ok(Flow::Continue);
        }
        row.tokens.push(id);
        let delta = match &mut row.text {
            Some(text) => text.push(id, stops)?,
            None => TextDelta {
                text: String::new(),
                stop_string: None,
            },
        };
        if let Some(s) = delta.stop_string {
            row.stop = Some(StopReason::StopString(s));
        }
        let flow = (self.on_token)(&TokenEvent {
            row: r,
            token: Some(id),
            text: &delta.text,
        });
        let row = &mut self.rows[r];
        if row.stop.is_none() {
            if flow != Flow::Continue {
                row.stop = Some(StopReason::Callback);
            } else if row.sampled >= config.max_new_tokens {
                row.stop = Some(StopReason::MaxNewTokens);
            } else if self
                .context
                .is_some_and(|c| row.prompt_len + row.sampled >= c)
            {
                row.stop = Some(StopReason::ContextFull);
            }
            if row.stop.is_some() {
                self.flush(r)?;
            }
        }
        Ok(flow)
    }

    /// Releases a finished row's held-back text.
    fn flush(&mut self, r: usize) -> Result<(), GenerationError> {
        let config: &'c GenerationConfig = self.config;
        let stops = &config.stops;
        if let Some(text) = &mut self.rows[r].text {
            let delta = text.finish(stops)?;
            if !delta.text.is_empty() {
                (self.on_token)(&TokenEvent {
                    row: r,
                    token: None,
                    text: &delta.text,
                });
            }
        }
        Ok(())
    }
}

/// Generates a continuation of every prompt with `step`.
///
/// `tokenizer` gives the text (streamed deltas, [`Sequence::text`]) and is required for stop
/// strings; without it only ids are produced. `on_token` is called for every accepted token
/// of every row in row order (see [`TokenEvent`]) and may stop its row or all rows.
///
/// # Errors
/// [`GenerationError::NoPrompts`], [`GenerationError::EmptyPrompt`],
/// [`GenerationError::TokenOutOfVocabulary`], [`GenerationError::PromptTooLong`],
/// [`GenerationError::StopStringsNeedTokenizer`],
/// [`GenerationError::Sampling`] for invalid sampling parameters, and the step's and
/// tokenizer's errors.
pub fn generate<S, F>(
    step: &mut S,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    on_token: F,
) -> Result<GenerationOutput, GenerationError>
where
    S: TokenStep + ?Sized,
    F: FnMut(&TokenEvent<'_>) -> Flow,
{
    let start = Instant::now();
    validate(step, tokenizer, prompts, config)?;
    let mut sampler = Sampler::new(config.sampling.clone())?;
    let batch = prompts.len();
    let mut rows = Rows {
        rows: prompts
            .iter()
            .map(|p| Row {
                prompt_len: p.len(),
                tokens: Vec::new(),
                sampled: 0,
                text: tokenizer.map(|t| StreamingText::new(t, config.skip_special_tokens)),
                stop: (config.max_new_tokens == 0).then_some(StopReason::MaxNewTokens),
            })
            .collect(),
        config,
        context: step.context_length(),
        on_token,
    };
    let mut stats = GenerationStats {
        batch_size: batch,
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        ..Default::default()
    };

    let mut step_times = Vec::new();
    if rows.active() {
        let device = step.device();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let padded = prompts.iter().any(|p| p.len() < longest);
        let mut ids = Vec::with_capacity(batch * longest);
        let mut mask = Vec::with_capacity(batch * longest);
        for p in prompts {
            let pad = longest - p.len();
            ids.extend(std::iter::repeat_n(0i64, pad));
            ids.extend(p.iter().map(|&id| id as i64));
            mask.extend(std::iter::repeat_n(0i64, pad));
            mask.extend(std::iter::repeat_n(1i64, p.len()));
        }
        let ints = |v: Vec<i64>, cols: usize| {
            Tensor::<2, Int>::from_data(TensorData::new(v, [batch, cols]), &device)
        };
        let mut attention_mask = padded.then(|| ints(mask, longest));
        let options = ForwardOptions {
            position_ids: attention_mask.clone().map(positions_from_attention_mask),
            attention_mask: attention_mask.clone(),
        };
        let mut cache = KvCache::new();

        let t = Instant::now();
        let logits = step.next_logits(ints(ids, longest), &mut cache, &options)?;
        let mut next = sample(&mut sampler, logits, batch, step.vocab_size())?;
        stats.prefill_time = t.elapsed();
        step_times.push(stats.prefill_time);
        stats.new_tokens += rows.accept(&next)?;

        while rows.active() {
            let t = Instant::now();
            let input = ints(next.iter().map(|&id| id as i64).collect(), 1);
            let options = match attention_mask.take() {
                Some(m) => {
                    let m = Tensor::cat(vec![m, Tensor::ones([batch, 1], &device)], 1);
                    let positions = rows
                        .rows
                        .iter()
                        .map(|r| (r.prompt_len + stats.decode_steps) as i64)
                        .collect();
                    attention_mask = Some(m.clone());
                    ForwardOptions {
                        attention_mask: Some(m),
                        position_ids: Some(ints(positions, 1)),
                    }
                }
                None => ForwardOptions::default(),
            };
            let logits = step.next_logits(input, &mut cache, &options)?;
            next = sample(&mut sampler, logits, batch, step.vocab_size())?;
            let elapsed = t.elapsed();
            step_times.push(elapsed);
            stats.decode_time += elapsed;
            stats.decode_steps += 1;
            let n = rows.accept(&next)?;
            stats.new_tokens += n;
            stats.decode_tokens += n;
        }
    }

    let sequences = rows
        .rows
        .into_iter()
        .map(|r| Sequence {
            prompt_len: r.prompt_len,
            tokens: r.tokens,
            text: r.text.map(StreamingText::into_text).unwrap_or_default(),
            stop_reason: r.stop.unwrap_or(StopReason::MaxNewTokens),
        })
        .collect();
    stats.total_time = start.elapsed();
    Ok(GenerationOutput {
        sequences,
        stats,
        step_times,
    })
}

fn validate<S: TokenStep + ?Sized>(
    step: &S,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<(), GenerationError> {
    if prompts.is_empty() {
        return Err(GenerationError::NoPrompts);
    }
    let vocab_size = step.vocab_size();
    for (row, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(GenerationError::EmptyPrompt { row });
        }
        if let Some(context) = step.context_length()
            && p.len() > context
        {
            return Err(GenerationError::PromptTooLong {
                row,
                len: p.len(),
                context,
            });
        }
        if let Some((position, &id)) = p
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= vocab_size)
        {
            return Err(GenerationError::TokenOutOfVocabulary {
                row,
                position,
                id,
                vocab_size,
            });
        }
    }
    if tokenizer.is_none() && !config.stops.strings().is_empty() {
        return Err(GenerationError::StopStringsNeedTokenizer {
            strings: config.stops.strings().to_vec(),
        });
    }
    config.sampling.validate()?;
    Ok(())
}

fn sample(
    sampler: &mut Sampler,
    logits: Tensor<2>,
    batch: usize,
    vocab: usize,
) -> Result<Vec<u32>, GenerationError> {
    let found = logits.dims();
    if found != [batch, vocab] {
        return Err(GenerationError::LogitsShape {
            expected: [batch, vocab],
            found,
        });
    }
    Ok(sampler.sample(logits)?)
}
