#!/usr/bin/env python3
"""Records the gradients of the reference training loss by running the authors' L2D code.

For `llama-tiny` and `qwen2-tiny` of fixtures/reference (weights, and the `loss` case's
input ids, labels, timesteps and unit noise), runs the reference model's own training forward
(`FlowLlamaForCausalLM.forward(..., labels=...)`, its noise draw replaced by the fixture's),
backpropagates the loss and saves the gradient of every trainable (diffusion-path) tensor
under its reference name, with the loss as `__loss__`.

Output: crates/l2d-train/tests/fixtures/reference-grads/<model>.safetensors, read by
crates/l2d-train/tests/reference_gradients.rs.

Run (torch, transformers 4.46.3, torchdiffeq 0.2.5, safetensors, a checkout of SakanaAI/L2D):

    L2D_REFERENCE_SRC=/path/to/SakanaAI-L2D python3 scripts/make_grad_reference.py
"""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_code import add_reference_to_path  # noqa: E402

add_reference_to_path()

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers import Qwen2Config, Qwen2ForCausalLM  # noqa: E402
from flow_llms.llama import FlowLlamaForCausalLM  # noqa: E402
from flow_llms.qwen2 import FlowQwen2ForCausalLM  # noqa: E402

OUT = ROOT / "crates/l2d-train/tests/fixtures/reference-grads"
MODELS = {
    "llama-tiny": (LlamaConfig, LlamaForCausalLM, FlowLlamaForCausalLM),
    "qwen2-tiny": (Qwen2Config, Qwen2ForCausalLM, FlowQwen2ForCausalLM),
}


def run(name):
    config_cls, base_cls, flow_cls = MODELS[name]
    folder = ROOT / "fixtures/reference" / name
    l2d = json.loads((folder / "l2d_config.json").read_text())
    kwargs = dict(l2d)
    kwargs.pop("arch", None)
    config = config_cls.from_json_file(str(folder / "config.json"))
    config._attn_implementation = "sdpa"
    base = base_cls(config)
    base.load_state_dict(load_file(str(folder / "base.safetensors")))
    model = flow_cls(base, **kwargs)
    adapter = load_file(str(folder / "adapter.safetensors"))
    missing, unexpected = model.load_state_dict(adapter, strict=False)
    assert not unexpected, unexpected
    base_keys = set(load_file(str(folder / "base.safetensors")).keys())
    for n, p in model.named_parameters():
        p.requires_grad_(n in adapter)
    cases = load_file(str(folder / "cases.safetensors"))
    ids, labels = cases["loss.input_ids"], cases["loss.labels"]
    t, noise = cases["loss.timesteps"], cases["loss.noise"]
    model.train()
    real = torch.randn_like
    torch.randn_like = lambda x, *a, **k: noise.to(x.dtype) if x.shape == noise.shape else real(x, *a, **k)
    try:
        out = model(input_ids=ids, timesteps=t, labels=labels)
    finally:
        torch.randn_like = real
    loss = out.loss
    ref = float(cases["loss.loss"].reshape(-1)[0])
    print(f"{name}: loss {loss.item():.7f}, fixture {ref:.7f}")
    assert abs(loss.item() - ref) <= 1e-5 * abs(ref), "the replayed loss differs from the fixture"
    loss.backward()
    grads = {"__loss__": loss.detach().reshape(1)}
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert n not in base_keys
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            grads[n] = g.detach().float().contiguous()
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(grads, str(OUT / f"{name}.safetensors"))
    print(f"  {len(grads) - 1} gradients -> {OUT / (name + '.safetensors')}")


if __name__ == "__main__":
    for m in MODELS:
        run(m)
