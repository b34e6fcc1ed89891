//! `l2d info`: what a model (and adapter) is, and how many parameters the diffusion path has
//! at the adapter's configuration (or at the released default without an adapter).
//!
//! ```text
//! l2d info --model .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! l2d info --model ... --adapter runs/smollm2-arithmetic/adapter.safetensors
//! ```

use std::io::Write;
use std::path::PathBuf;

use burn::module::Module;
use l2d_models::diffusion::{AdapterMetadata, ParamCount, base_fingerprint, diffusion_param_count};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::pretrained::ModelSource;

use super::{CliError, ModelArgs};

/// Arguments of `l2d info`.
#[derive(Debug, Clone, clap::Args)]
pub struct InfoArgs {
    /// The model and adapter.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Count the diffusion path at this L2D configuration (JSON or reference `.cfg`) instead
    /// of the adapter's or the released default.
    #[arg(long, value_name = "FILE")]
    pub l2d_config: Option<PathBuf>,
}

fn millions(n: usize) -> String {
    format!("{n} ({:.1}M)", n as f64 / 1e6)
}

fn count_lines(out: &mut impl Write, count: &ParamCount) -> std::io::Result<()> {
    writeln!(
        out,
        "  diffusion path parameters: {}",
        millions(count.total())
    )?;
    for (part, n) in [
        ("token embedder", count.token_embedder),
        ("flow-to-LM encoder", count.encoder),
        ("timestep embedder", count.timestep_embedder),
        ("class embedder", count.class_embedder),
        ("per-layer modulation heads", count.modulation_heads),
        ("q/o/gate/up/down projections", count.projections),
        ("final gate head", count.final_head),
    ] {
        writeln!(out, "    {part:<30} {}", millions(n))?;
    }
    Ok(())
}

fn describe_config(c: &L2dConfig) -> String {
    let projections = if !c.separate_flow_params {
        "shared frozen projections".to_string()
    } else if c.separate_flow_params_with_lora {
        format!("LoRA rank {} alpha {}", c.flow_lora_rank, c.lora_alpha())
    } else {
        "full projection copies".to_string()
    };
    format!(
        "{:?} space of {} dims, {projections}, noise scale {}, {} guidance classes, x1 {} at \
         temperature {}",
        c.flow_representation_space,
        c.flow_representation_dim
            .map_or("hidden".into(), |d| d.to_string()),
        c.noise_rescaling,
        c.num_classes(),
        c.nstep_x1_estimation,
        c.nstep_temperature_schedule
    )
}

/// Runs `l2d info`, writing the report to `out`.
///
/// # Errors
/// [`CliError`] for files that do not exist, a model that cannot be loaded, an adapter that
/// cannot be read or does not fit the model (unless `--force-adapter` for a fingerprint
/// mismatch), an invalid configuration file.
pub fn run_info(args: &InfoArgs, out: &mut impl Write) -> Result<(), CliError> {
    let l2d_config = match &args.l2d_config {
        Some(p) if !p.is_file() => {
            return Err(CliError::Missing {
                what: "L2D configuration",
                path: p.clone(),
            });
        }
        Some(p) => Some(L2dConfig::from_file(p)?),
        None => None,
    };
    let loaded = args.model.load(false)?;
    let lm = &loaded.lm;
    let c = lm.model.config();
    let kind = match &lm.source {
        ModelSource::Gguf(_) => "GGUF",
        ModelSource::Folder(_) => "Hugging Face folder",
    };
    writeln!(out, "model: {} ({kind})", lm.source.path().display())?;
    writeln!(
        out,
        "  {}: {} layers, hidden {}, MLP {}, {} heads ({} key/value, head dim {}), vocabulary \
         {}, context {} positions, tied embeddings: {}",
        c.architecture.model_type(),
        c.num_hidden_layers,
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.vocab_size,
        c.max_position_embeddings,
        if c.tie_word_embeddings { "yes" } else { "no" }
    )?;
    writeln!(
        out,
        "  parameters: {} = {:.1} MiB in {:?} on {:?}",
        millions(lm.model.num_params()),
        lm.model.weight_bytes() as f64 / (1u64 << 20) as f64,
        lm.model.dtype(),
        lm.model.device()
    )?;
    writeln!(
        out,
        "  tokenizer: {} tokens; chat template: {}; stop ids: {:?}",
        lm.tokenizer.vocab_size(),
        if lm.chat_template.is_some() {
            "yes"
        } else {
            "no"
        },
        lm.stops.ids()
    )?;
    writeln!(out, "  base fingerprint: {}", base_fingerprint(&lm.model))?;

    let counted_at = match (&l2d_config, &loaded.adapter) {
        (Some(config), _) => {
            writeln!(out, "L2D configuration: {}", describe_config(config))?;
            config.clone()
        }
        (None, Some(path)) => path.config().clone(),
        (None, None) => {
            writeln!(
                out,
                "no adapter: the diffusion path below is counted at the released configuration"
            )?;
            writeln!(out, "  {}", describe_config(&L2dConfig::default()))?;
            L2dConfig::default()
        }
    };
    if let (Some(path), Some(file)) = (&loaded.adapter, &args.model.adapter) {
        let meta = AdapterMetadata::read(file).map_err(|source| CliError::Adapter {
            path: file.clone(),
            source: Box::new(source),
        })?;
        writeln!(out, "adapter: {}", file.display())?;
        writeln!(
            out,
            "  format: {}; trained on: {}",
            meta.format.as_deref().unwrap_or("reference checkpoint"),
            match &meta.base_fingerprint {
                None => "unrecorded base".to_string(),
                Some(f) if *f == base_fingerprint(&lm.model) =>
                    format!("this base (fingerprint {f})"),
                Some(f) => format!("ANOTHER base (fingerprint {f}), loaded with --force-adapter"),
            }
        )?;
        writeln!(out, "  {}", describe_config(path.config()))?;
        writeln!(out, "  loaded parameters: {}", millions(path.num_params()))?;
    }
    let count = diffusion_param_count(&counted_at, c).map_err(|source| CliError::Adapter {
        path: args.l2d_config.clone().unwrap_or_default(),
        source: Box::new(source),
    })?;
    count_lines(out, &count)?;
    Ok(())
}
