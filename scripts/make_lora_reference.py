#!/usr/bin/env python3
"""Make `fixtures/lora/`: a LoRA adapter written by Hugging Face PEFT for the tiny Llama of
`fixtures/hf/llama3-tied`, with PEFT's logits, loss and gradients, for the tests of
`l2d_models::lora` (loading PEFT's files, the adapted forward, the merged weights) and of the
LoRA objective of `l2d-train` (loss and gradients of every LoRA factor).

How to run (from the repository root):

    scripts/.venv/bin/pip install torch==2.4.0 transformers==4.46.3 peft==0.13.2 safetensors
    scripts/.venv/bin/python scripts/make_lora_reference.py

Writes
* `fixtures/lora/adapter_model.safetensors`, `fixtures/lora/adapter_config.json`: PEFT's own
  `save_pretrained` output (rank 4, alpha 8, all seven projections; A and B drawn at random
  with a fixed seed so that every update is non-zero);
* `fixtures/lora/reference.safetensors`: `input_ids` `[2, 7]`, `attention_mask` (the second
  row padded on the right), `labels` (shifted, -100 where not scored) (these three as f32), `logits` of the
  adapted model `[2, 7, vocab]`, `loss` (mean cross-entropy over the scored labels, PEFT's
  model in float64 then cast) and `grad.<PEFT key>` for every LoRA factor.
"""

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "fixtures" / "hf" / "llama3-tied"
OUT = ROOT / "fixtures" / "lora"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main() -> None:
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(BASE, torch_dtype=torch.float64)
    model.config._attn_implementation = "eager"
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0,
                        bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                # Values an f32 file holds exactly, so the float64 reference runs on the
                # weights the saved (f32) adapter has.
                p.copy_((torch.randn_like(p) * 0.2).float().double())
    model.eval()

    vocab = model.config.vocab_size
    input_ids = torch.randint(3, vocab, (2, 7))
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, 5:] = 0
    labels = torch.full((2, 7), -100, dtype=torch.long)
    labels[0, 2:6] = input_ids[0, 3:7]
    labels[1, 1:4] = input_ids[1, 2:5]

    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits
    scored = labels != -100
    loss = torch.nn.functional.cross_entropy(logits[scored], labels[scored])
    loss.backward()

    OUT.mkdir(parents=True, exist_ok=True)
    model.float().save_pretrained(OUT)
    (OUT / "README.md").unlink(missing_ok=True)  # PEFT's model card template
    config_path = OUT / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = "fixtures/hf/llama3-tied"  # not this machine's path
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    tensors = {
        # Integers as f32 (exact at these sizes), readable by any safetensors reader.
        "input_ids": input_ids.float(),
        "attention_mask": attention_mask.float(),
        "labels": labels.float(),
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().float().reshape(1),
    }
    for name, p in model.named_parameters():
        if "lora_" in name:
            # PEFT's saved key: without the adapter name ("default").
            key = name.replace(".default", "")
            tensors[f"grad.{key}"] = p.grad.detach().float().contiguous()
    save_file(tensors, OUT / "reference.safetensors")
    print(f"wrote {OUT.relative_to(ROOT)}: loss {loss.item():.6f}, "
          f"{sum('grad.' in k for k in tensors)} gradients")


if __name__ == "__main__":
    main()
