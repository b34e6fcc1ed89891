//! The sizes of a few released models, for benchmarks and parameter counts without a
//! download: the `config.json` fields that set the shapes (and the RoPE of each), no weights.

use crate::config::ModelConfig;

/// The preset names, smallest first.
pub const PRESETS: [&str; 4] = [
    "smollm2-135m",
    "llama-3.2-1b",
    "qwen2.5-1.5b",
    "llama-3.1-8b",
];

/// The configuration of the preset `name` (one of [`PRESETS`]); `None` for another name.
///
/// ```
/// let c = l2d_models::presets::preset("llama-3.2-1b").unwrap();
/// assert_eq!((c.hidden_size, c.num_hidden_layers, c.vocab_size), (2048, 16, 128256));
/// assert!(l2d_models::presets::preset("gpt-5").is_none());
/// ```
pub fn preset(name: &str) -> Option<ModelConfig> {
    let json = match name {
        "smollm2-135m" => {
            r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "head_dim": 64, "vocab_size": 49152, "tie_word_embeddings": true,
            "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192}"#
        }
        "llama-3.2-1b" => {
            r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": true,
            "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#
        }
        "qwen2.5-1.5b" => {
            r#"{"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
            "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
            "vocab_size": 151936, "tie_word_embeddings": true, "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 32768}"#
        }
        "llama-3.1-8b" => {
            r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": false,
            "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
            "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}"#
        }
        _ => return None,
    };
    Some(ModelConfig::from_json_str(json).expect("the presets are valid configurations"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_builds_a_valid_configuration() {
        for name in PRESETS {
            let c = preset(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(c.hidden_size % c.num_attention_heads, 0, "{name}");
        }
    }
}
