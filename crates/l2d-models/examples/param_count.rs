//! Prints the diffusion path's trainable parameter count at the released configuration
//! (mapping space 256, LoRA rank 32, DiT modulation heads of width 256) for Llama-3.2-1B,
//! Qwen2.5-1.5B and SmolLM2-135M sizes. Only the diffusion path is built (LoRA needs no base
//! weights); its `num_params()` is checked against the analytic count.
//!
//! ```text
//! cargo run -p l2d-models --example param_count
//! ```

use burn::module::Module;
use burn::tensor::Device;
use l2d_models::diffusion::{DiffusionPath, diffusion_param_count};
use l2d_models::l2d_config::L2dConfig;
use l2d_models::presets::preset as preset_config;

/// Display names of the presets counted.
const MODELS: [(&str, &str); 3] = [
    ("Llama-3.2-1B", "llama-3.2-1b"),
    ("Qwen2.5-1.5B", "qwen2.5-1.5b"),
    ("SmolLM2-135M", "smollm2-135m"),
];

fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = L2dConfig::default();
    let device = Device::flex();
    println!(
        "L2D diffusion path at the released configuration (rank {}, alpha {}, flow dim {}, \
         conditioning {})",
        config.flow_lora_rank,
        config.lora_alpha(),
        config.flow_representation_dim.unwrap_or_default(),
        config.timestep_modulation_hidden_size.unwrap_or_default()
    );
    for (name, preset) in MODELS {
        let base = preset_config(preset).ok_or("unknown preset")?;
        let count = diffusion_param_count(&config, &base)?;
        let path = DiffusionPath::init_without_base(&config, &base, &device, 0)?;
        let built = path.num_params();
        assert_eq!(
            built,
            count.total(),
            "{name}: analytic count differs from the built path"
        );
        println!(
            "\n{name}: {} trainable parameters ({built})",
            millions(built)
        );
        for (part, n) in [
            ("LoRA q/o/gate/up/down", count.projections),
            ("per-layer modulation heads", count.modulation_heads),
            ("final gate head", count.final_head),
            ("timestep embedder", count.timestep_embedder),
            ("token map W_v", count.token_embedder),
            ("flow-to-LM encoder", count.encoder),
            ("class embeddings", count.class_embedder),
        ] {
            println!("  {part:<28} {:>9} ({n})", millions(n));
        }
    }
    Ok(())
}
