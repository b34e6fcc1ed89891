//! The inverse of [`CausalLm::load`]: a model's weights under their Hugging Face names and in
//! the checkpoint layout, and a safetensors file that `CausalLm::load` and transformers read.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};

use super::transpose_2d;
use crate::decoder::{CausalLm, FrozenLinear, RmsNorm};
use crate::weights::{WeightError, serialize_f32, write_atomically};

impl CausalLm {
    /// Every weight under its Hugging Face name (`model.layers.0.self_attn.q_proj.weight`, ...),
    /// projections in the checkpoint's `[out, in]` layout, in the weights' dtype. A tied head
    /// is not repeated as `lm_head.weight`.
    ///
    /// ```
    /// use burn::tensor::{DType, Device};
    /// use l2d_models::config::ModelConfig;
    /// use l2d_models::decoder::CausalLm;
    /// use l2d_models::loading::expected_tensors;
    ///
    /// let config = ModelConfig::from_value(&serde_json::json!({
    ///     "model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
    ///     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    ///     "vocab_size": 10, "tie_word_embeddings": false
    /// }))?;
    /// let model = CausalLm::random(&config, &Device::flex(), DType::F32, 0);
    /// // Exactly the tensors a checkpoint of this config holds, in their checkpoint shapes.
    /// let mut ours: Vec<(String, Vec<usize>)> = model
    ///     .hf_tensors()
    ///     .into_iter()
    ///     .map(|(n, d)| (n, d.shape().to_vec()))
    ///     .collect();
    /// let mut expected: Vec<(String, Vec<usize>)> =
    ///     expected_tensors(&config).into_iter().map(|t| (t.name, t.shape)).collect();
    /// ours.sort();
    /// expected.sort();
    /// assert_eq!(ours, expected);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn hf_tensors(&self) -> Vec<(String, TensorData)> {
        let mut out = Vec::new();
        let data = |p: &Param<Tensor<1>>| p.val().into_data();
        let (device, dtype) = (self.device(), self.dtype());
        let linear = |out: &mut Vec<(String, TensorData)>, prefix: String, l: &FrozenLinear| {
            // Quantized weights are written dequantized, in the model's dtype.
            out.push((
                format!("{prefix}.weight"),
                transpose_2d(l.weight_tensor(&device, dtype).into_data()),
            ));
            if let Some(b) = &l.bias {
                out.push((format!("{prefix}.bias"), data(b)));
            }
        };
        let norm = |out: &mut Vec<(String, TensorData)>, name: String, n: &RmsNorm| {
            out.push((name, data(&n.weight)));
        };
        out.push((
            "model.embed_tokens.weight".into(),
            self.model.embed_tokens.weight.val().into_data(),
        ));
        for (l, layer) in self.model.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let a = &layer.self_attn;
            linear(&mut out, format!("{p}.self_attn.q_proj"), &a.q_proj);
            linear(&mut out, format!("{p}.self_attn.k_proj"), &a.k_proj);
            linear(&mut out, format!("{p}.self_attn.v_proj"), &a.v_proj);
            linear(&mut out, format!("{p}.self_attn.o_proj"), &a.o_proj);
            linear(&mut out, format!("{p}.mlp.gate_proj"), &layer.mlp.gate_proj);
            linear(&mut out, format!("{p}.mlp.up_proj"), &layer.mlp.up_proj);
            linear(&mut out, format!("{p}.mlp.down_proj"), &layer.mlp.down_proj);
            norm(
                &mut out,
                format!("{p}.input_layernorm.weight"),
                &layer.input_layernorm,
            );
            norm(
                &mut out,
                format!("{p}.post_attention_layernorm.weight"),
                &layer.post_attention_layernorm,
            );
        }
        norm(&mut out, "model.norm.weight".into(), &self.model.norm);
        if let Some(head) = &self.lm_head {
            linear(&mut out, "lm_head".into(), head);
        }
        out
    }

    /// Writes [`CausalLm::hf_tensors`] as one f32 safetensors file at `path` (atomically: the
    /// file is replaced whole or not at all). With the model's `config.json` beside it, the
    /// folder loads with [`CausalLm::from_dir`] or transformers' `from_pretrained`.
    ///
    /// # Errors
    /// [`WeightError::Write`] naming `path` when it cannot be written.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), WeightError> {
        let path = path.as_ref();
        let err = |reason: String| WeightError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = serialize_f32(self.hf_tensors(), meta).map_err(|e| err(e.to_string()))?;
        write_atomically(path, &bytes).map_err(|e| err(e.to_string()))
    }
}
