#!/usr/bin/env python3
"""Generate the Hugging Face parity fixtures of `crates/l2d-models` (fixtures/hf/).

How to run (from the repository root):

    python -m venv .venv && .venv/bin/pip install torch transformers==4.46.3 safetensors numpy
    .venv/bin/python scripts/make_hf_fixtures.py            # writes fixtures/hf/<name>/

Each folder holds a tiny random model saved by transformers itself (`config.json`,
`model.safetensors` or shards + `model.safetensors.index.json`) and `cases.safetensors`
with the inputs and the outputs transformers computes for them, in float32 with the eager
attention implementation:

| tensor | meaning |
| --- | --- |
| `input_ids` [2, S] | a batch of two token sequences |
| `logits` [2, S, V] | `model(input_ids).logits` |
| `padded.input_ids`, `padded.attention_mask` [2, S] | row 1 is left-padded (mask 0) |
| `padded.logits` [2, S, V] | `model(input_ids, attention_mask=...).logits` |
| `greedy.prompt` [1, P], `greedy.tokens` [1, 8] | greedy continuation (argmax of a full forward, 8 times) |
| `greedy.margin` [8] | top-1 minus top-2 logit at each greedy step (how robust the argmax is) |
| `logits_no_window` | (mistral-swa) the same model with `sliding_window = None`: must differ |
| `inv_freq.<variant>` | (llama3-tied) transformers' RoPE inverse frequencies for the configs in `rope_variants.json` |

Models: `llama3-tied` (llama3 RoPE scaling, tied head), `qwen2-bias` (random q/k/v biases,
untied), `qwen2-bf16` (stored in bfloat16, tied; its outputs are transformers loading that
file into float32), `mistral-swa` (sliding window 4 < sequence 12), `llama-sharded` (two
shards + index; `attention_bias`, `mlp_bias`, linear RoPE scaling with the legacy `type` key).

Weights are drawn with larger scales than the transformers initialiser so that logits are
well separated (greedy continuations are then robust to float rounding), norms get random
weights around 1 and every bias is random and non-zero.
"""

import copy
import json
import math
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "hf"
GREEDY_STEPS = 8

COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    attn_implementation="eager",
)


def randomize(model: torch.nn.Module, seed: int, embed_std: float = 0.5) -> None:
    """Random weights with O(1) activations; non-zero biases; norm weights around 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(embed_std * torch.randn(p.shape, generator=g))
            else:  # [out, in] projections and an untied lm_head
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def greedy(model, prompt: torch.Tensor):
    ids = prompt.clone()
    margins = []
    for _ in range(GREEDY_STEPS):
        logits = model(ids).logits[:, -1, :]
        top2 = torch.topk(logits, 2, dim=-1).values
        margins.append(float(top2[0, 0] - top2[0, 1]))
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids[:, prompt.shape[1] :], torch.tensor(margins)


def make_cases(model, seq_len: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    input_ids = torch.randint(3, vocab, (2, seq_len), generator=g)
    with torch.no_grad():
        logits = model(input_ids).logits
        mask = torch.ones_like(input_ids)
        mask[1, :3] = 0  # left padding on row 1
        padded_ids = input_ids.clone()
        padded_ids[1, :3] = 0
        padded_logits = model(padded_ids, attention_mask=mask).logits
        prompt = input_ids[:1, : seq_len // 2].clone()
        tokens, margins = greedy(model, prompt)
    print(f"  greedy tokens {tokens.tolist()} min margin {margins.min():.4f}")
    assert margins.min() > 1e-3, "greedy argmax too close to a tie; change the seed"
    return {
        "input_ids": input_ids,
        "logits": logits,
        "padded.input_ids": padded_ids,
        "padded.attention_mask": mask,
        "padded.logits": padded_logits,
        "greedy.prompt": prompt,
        "greedy.tokens": tokens,
        "greedy.margin": margins,
    }


def save(name: str, model, cases, dtype=torch.float32, shards: int = 1) -> Path:
    out = ROOT / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model = model.to(dtype)
    if shards == 1:
        model.save_pretrained(out, safe_serialization=True)
    else:
        total = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        model.save_pretrained(
            out, safe_serialization=True, max_shard_size=int(total / shards * 1.2)
        )
        index = json.loads((out / "model.safetensors.index.json").read_text())
        found = sorted(set(index["weight_map"].values()))
        assert len(found) == shards, f"expected {shards} shards, got {found}"
    gen = out / "generation_config.json"
    if gen.exists():
        gen.unlink()
    if cases is not None:
        write_cases(out, cases)
    check_files(out)
    return out


def write_cases(out: Path, cases: dict) -> None:
    save_file({k: v.contiguous() for k, v in cases.items()}, out / "cases.safetensors")
    check_files(out)


def check_files(out: Path) -> None:
    for f in out.iterdir():
        f.chmod(0o644)
        size = f.stat().st_size
        assert size < 1_000_000, f"{f} is {size} bytes"
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")


def llama3_tied():
    cfg = LlamaConfig(
        **COMMON,
        head_dim=16,
        rope_theta=10000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, 1, embed_std=0.15)
    cases = make_cases(model, 12, 2)
    cases["inv_freq.model"] = model.model.rotary_emb.inv_freq.clone()

    # RoPE variants: transformers' inverse frequencies for configs in several layouts.
    base = dict(hidden_size=4096, num_attention_heads=32, num_key_value_heads=8,
                max_position_embeddings=131072)
    variants = {
        "llama3_2": dict(
            base, head_dim=64, rope_theta=500000.0,
            rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        ),
        "llama3_1_type_key": dict(
            base, rope_theta=500000.0,
            rope_scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        ),
        "linear_type_key": dict(base, rope_theta=10000.0,
                                rope_scaling={"type": "linear", "factor": 4.0}),
        "linear_rope_type": dict(base, rope_theta=10000.0,
                                 rope_scaling={"rope_type": "linear", "factor": 2.0}),
        "default_null": dict(base, rope_theta=10000.0, rope_scaling=None),
        "default_explicit": dict(base, rope_theta=1000000.0,
                                 rope_scaling={"rope_type": "default"}),
    }
    configs = {}
    for vname, kw in variants.items():
        configs[vname] = {"model_type": "llama", **copy.deepcopy(kw)}  # before HF edits it
        vcfg = LlamaConfig(**kw)
        rtype = "default"
        if vcfg.rope_scaling is not None:
            rtype = vcfg.rope_scaling.get("rope_type", vcfg.rope_scaling.get("type"))
        inv_freq, attn_factor = ROPE_INIT_FUNCTIONS[rtype](vcfg, "cpu")
        assert attn_factor == 1.0
        cases[f"inv_freq.{vname}"] = inv_freq.float()
    # The newer `rope_parameters` layout (transformers >= 5) of the llama3_2 variant: same
    # frequencies, theta inside the parameters.
    p = dict(variants["llama3_2"]["rope_scaling"], rope_theta=500000.0)
    configs["llama3_2_rope_parameters"] = {
        "model_type": "llama", **base, "head_dim": 64, "rope_parameters": p,
    }
    cases["inv_freq.llama3_2_rope_parameters"] = cases["inv_freq.llama3_2"].clone()

    out = save("llama3-tied", model, cases)
    (out / "rope_variants.json").write_text(json.dumps(configs, indent=1) + "\n")
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys(), "tied model must not store lm_head"


def qwen2_bias():
    cfg = Qwen2Config(
        **{**COMMON, "intermediate_size": 128, "vocab_size": 160},
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    randomize(model, 3)
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    assert model.model.layers[0].self_attn.o_proj.bias is None
    save("qwen2-bias", model, make_cases(model, 10, 4))


def qwen2_bf16():
    cfg = Qwen2Config(**COMMON, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).eval()
    randomize(model, 9, embed_std=0.08)
    out = save("qwen2-bf16", model, None, dtype=torch.bfloat16)
    # The reference: transformers loading the bf16 file into float32 (fresh f32 RoPE buffers).
    reloaded = Qwen2ForCausalLM.from_pretrained(
        out, torch_dtype=torch.float32, attn_implementation="eager"
    ).eval()
    assert reloaded.model.embed_tokens.weight.dtype == torch.float32
    write_cases(out, make_cases(reloaded, 10, 10))


def mistral_swa():
    cfg = MistralConfig(**COMMON, head_dim=16, sliding_window=4, rope_theta=10000.0,
                        rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).eval()
    randomize(model, 5)
    seq = 12
    cases = make_cases(model, seq, 6)
    # Prove the window matters: the same weights without a window give other logits.
    model.config.sliding_window = None
    with torch.no_grad():
        no_window = model(cases["input_ids"]).logits
    model.config.sliding_window = 4
    with torch.no_grad():
        again = model(cases["input_ids"]).logits
    assert torch.equal(again, cases["logits"])
    diff = (no_window - cases["logits"]).abs()
    print(f"  window effect: first 4 positions {diff[:, :4].max():.2e}, later {diff[:, 4:].max():.3f}")
    assert diff[:, :4].max() == 0.0 and diff[:, 4:].max() > 0.1
    cases["logits_no_window"] = no_window
    save("mistral-swa", model, cases)


def llama_sharded():
    cfg = LlamaConfig(
        **COMMON,
        rope_theta=10000.0,
        rope_scaling={"type": "linear", "factor": 2.0},
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, 7)
    assert model.model.layers[0].self_attn.o_proj.bias is not None
    assert model.model.layers[0].mlp.down_proj.bias is not None
    save("llama-sharded", model, make_cases(model, 10, 8), shards=2)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    llama3_tied()
    qwen2_bias()
    qwen2_bf16()
    mistral_swa()
    llama_sharded()
