#!/usr/bin/env python3
"""Makes a reference fixture WITH guidance classes by running the authors' L2D code.

The shared fixtures (fixtures/reference/*) have no guidance classes, so their harness cases
`flow_class` and `ode_guided_*` never run. This script builds the same kind of folder from the
llama-tiny base model with `guidance_modulation_num_classes = 3`, every diffusion-path
parameter set to random non-zero values, and records, through the reference implementation:

  base                     base logits
  flow                     logits at per-position t, no class (the null class)
  flow_class               logits with per-sequence class labels
  token_repr               flow representations of tokens
  ode_guided_midpoint_6    nstep_inference with classifier-free guidance (w = 2), midpoint,
                           6 grid points, then conditional logits at t = 1
  ode_guided_rk4_4         the same with rk4 (3/8 rule, zero velocity at t >= 1), w = 0.5

Output: crates/l2d-models/tests/fixtures/reference-guided/llama-tiny-guided/ (config.json,
l2d_config.json, base.safetensors, adapter.safetensors, cases.safetensors, cases.json).

Run (needs torch, transformers 4.46.3, torchdiffeq 0.2.5, safetensors, and a checkout of
SakanaAI/L2D; hydra/omegaconf are imported but unused by the model code, so they are stubbed):

    pip install -r scripts/requirements.txt   # or: torch transformers==4.46.3 torchdiffeq==0.2.5 safetensors
    L2D_REFERENCE_SRC=/path/to/SakanaAI-L2D python3 scripts/make_guided_reference_fixture.py
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
from flow_llms.llama import FlowLlamaForCausalLM  # noqa: E402

BASE = ROOT / "fixtures/reference/llama-tiny"
OUT = ROOT / "crates/l2d-models/tests/fixtures/reference-guided/llama-tiny-guided"
NUM_CLASSES = 3


def main():
    torch.manual_seed(1234)
    l2d = json.loads((BASE / "l2d_config.json").read_text())
    l2d["guidance_modulation_num_classes"] = NUM_CLASSES
    kwargs = dict(l2d)
    kwargs.pop("arch")
    config = LlamaConfig.from_json_file(str(BASE / "config.json"))
    config._attn_implementation = "sdpa"
    base = LlamaForCausalLM(config)
    base.load_state_dict(load_file(str(BASE / "base.safetensors")))
    model = FlowLlamaForCausalLM(base, **kwargs)
    base_keys = set(load_file(str(BASE / "base.safetensors")).keys())
    adapter = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in base_keys or name == "lm_head.weight" or ".wrapped_layer." in name:
                continue
            p.normal_(0.0, 0.2)
            adapter[name] = p.detach().clone().contiguous()
    model.eval()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "config.json").write_text((BASE / "config.json").read_text())
    (OUT / "l2d_config.json").write_text(json.dumps(l2d, indent=1))
    save_file(load_file(str(BASE / "base.safetensors")), str(OUT / "base.safetensors"))
    save_file(adapter, str(OUT / "adapter.safetensors"))

    cases, meta = {}, {}

    def add(case, description, **tensors):
        meta[case] = {"description": description, "tensors": sorted(tensors)}
        for k, v in tensors.items():
            cases[f"{case}.{k}"] = v.detach().clone().contiguous()

    ids = torch.randint(0, config.vocab_size, (2, 7))
    d = l2d["flow_representation_dim"]
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        add("base", "base LM logits", input_ids=ids, logits=model(input_ids=ids).logits)
        t = torch.rand(2, 7)
        x = torch.randn(2, 7, d) * 8.0
        out = model(input_ids=ids, timesteps=t, flow_representation_embeds=x)
        add("flow", "logits at per-position t, null class", input_ids=ids, timesteps=t,
            flow_embeds=x, logits=out.logits)
        out = model(input_ids=ids, timesteps=t, flow_representation_embeds=x, class_labels=labels)
        add("flow_class", "logits at per-position t with per-sequence class labels",
            input_ids=ids, timesteps=t, flow_embeds=x, class_labels=labels, logits=out.logits)
        add("token_repr", "flow representation of tokens", input_ids=ids,
            flow_repr=model.get_flow_representation_for_tokens(ids))
        x0 = torch.randn(2, 7, d) * l2d["noise_rescaling"]
        for method, n, w in [("midpoint", 6, 2.0), ("rk4", 4, 0.5)]:
            inf = model.nstep_inference(
                input_ids=ids, class_labels=labels, initial_flow_representation_embeds=x0,
                ode_steps=n, ode_kwargs=dict(method=method), guidance_parameter=w)
            x_final = inf.flow_trajectory[-1]
            logits = model(input_ids=ids, timesteps=torch.tensor(1.0), class_labels=labels,
                           flow_representation_embeds=x_final.float()).logits
            add(f"ode_guided_{method}_{n}",
                f"classifier-free guidance v = w v(c) + (1-w) v(null), w = {w}, torchdiffeq "
                f"'{method}' on {n} uniform points, average x1 estimate; conditional logits at t=1",
                input_ids=ids, class_labels=labels, guidance_weight=torch.tensor([w]), x0=x0,
                x_final=x_final.float(), logits=logits)
    save_file(cases, str(OUT / "cases.safetensors"))
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {OUT}: {len(meta)} cases")


if __name__ == "__main__":
    main()
