#!/usr/bin/env python3
"""Records a multi-step training run of the authors' L2D code, for the replay test.

A tiny Llama (3-digit addition, hidden 32, 2 layers) is trained from scratch for a few
seconds and frozen; a diffusion path in the toy reference's configuration (mapping space,
normalised with `mult` rescaling, flow-to-LM depth 2, full DiT modulation, LoRA on
q/o/gate/up/down, sigma 64, the base preserved at t = 0) is built on it by the authors'
`FlowLlamaForCausalLM` and trained for STEPS steps of torch's AdamW (lr 1e-3, betas
(0.9, 0.95), eps 1e-8, weight decay 0.01 on every path tensor, no clipping), each step's
timesteps and unit noise drawn here and handed to the authors' forward. Everything the replay
needs is saved:

    base.safetensors, config.json     the frozen base (Hugging Face names)
    l2d_config.json                   the path's configuration (the reference's names)
    steps.safetensors                 input_ids, labels [S, B, L]; timesteps [S, B, L];
                                      noise [S, B, L-1, d]; loss [S]
    path_init.safetensors             the path's initial weights (the reference's names)
    path_step1.safetensors            ... after the first update
    path_final.safetensors            ... after the last

To bound the tolerance of the replay, the same steps are also run in float64 (from the same
float32 start, with the same draws), and the float32 run is repeated with another thread count;
`drift.json` records how far each lands from the float32 run (per-step loss, final parameters,
and per tensor the larger of the two distances).

Output: crates/l2d-train/tests/fixtures/reference-training/, read by
crates/l2d-train/tests/reference_training.rs.

    L2D_REFERENCE_SRC=/path/to/SakanaAI-L2D scripts/.venv/bin/python \\
        scripts/make_training_reference.py
"""

import json
import random
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_code import add_reference_to_path  # noqa: E402

add_reference_to_path()

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from flow_llms import FlowLlamaForCausalLM  # noqa: E402

OUT = ROOT / "crates/l2d-train/tests/fixtures/reference-training"
DIGITS, HIDDEN, LAYERS, VOCAB = 3, 32, 2, 13
PLUS, EQ, BOS = 10, 11, 12
BASE_STEPS, BASE_BATCH = 150, 64
STEPS, BATCH = 120, 16
L2D = dict(
    base_params_to_freeze="all", noise_schedule="identity", flow_representation_space="mapping",
    flow_representation_dim=16, flow_representation_num_layers=1,
    flow_representation_normalize=True, flow_representation_rescaling="mult",
    flow_to_lm_translation_depth=2, flow_to_lm_hidden_size=HIDDEN,
    flow_to_lm_timestep_rescaling=1.0, flow_to_lm_rescale_in_float32=True,
    preserve_behavior_at_flow_start=True, modulate_hidden_states=False,
    full_dit_modulation=True, timestep_modulation_num_layers=2,
    timestep_modulation_freq_embedding_size=32, timestep_modulation_hidden_size=HIDDEN,
    separate_flow_params=True, separate_flow_params_with_lora=True, flow_lora_rank=4,
    flow_lora_alpha=4.0, noise_rescaling=64.0)


def problem(rng):
    a, b = rng.randrange(10**DIGITS), rng.randrange(10**DIGITS)
    ids = [BOS] + [int(c) for c in f"{a:0{DIGITS}d}"] + [PLUS]
    ids += [int(c) for c in f"{b:0{DIGITS}d}"] + [EQ]
    return ids, [int(c) for c in f"{a + b:0{DIGITS + 1}d}"]


def batch(rng, n):
    xs, ys = zip(*[problem(rng) for _ in range(n)])
    ids = torch.tensor([x + y for x, y in zip(xs, ys)])
    labels = ids.clone()
    labels[:, : len(xs[0])] = -100
    return ids, labels


def train_base():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                      num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    base = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(base.parameters(), lr=3e-3, weight_decay=0.01)
    rng = random.Random(1)
    for _ in range(BASE_STEPS):
        ids, labels = batch(rng, BASE_BATCH)
        loss = base(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"base: {BASE_STEPS} steps, last loss {loss.item():.4f}")
    return base.eval()


def draws():
    """Every step's batch, timesteps and unit noise, drawn once."""
    rng = random.Random(2)
    gen = torch.Generator().manual_seed(3)
    out = []
    for _ in range(STEPS):
        ids, labels = batch(rng, BATCH)
        t = torch.rand(ids.shape, generator=gen)
        noise = torch.randn(ids.shape[0], ids.shape[1] - 1, L2D["flow_representation_dim"],
                            generator=gen)
        out.append((ids, labels, t, noise))
    return out


def train_path(base, init, steps, dtype, threads):
    """Trains a path from `init` on `steps` in `dtype`; returns losses, the state after one
    update and the final state (as float32)."""
    torch.set_num_threads(threads)
    torch.manual_seed(4)
    m = FlowLlamaForCausalLM(base, **L2D)
    if init is not None:
        m.load_state_dict(init, strict=False)
    m = m.to(dtype)
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(params.values(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.01)
    m.train()
    state = lambda: {n: p.detach().float().clone().contiguous() for n, p in params.items()}
    start, after_one, losses = state(), None, []
    real = torch.randn_like
    for ids, labels, t, noise in steps:
        torch.randn_like = lambda x, *a, **k: noise.to(x.dtype)
        try:
            loss = m(input_ids=ids, labels=labels, timesteps=t.to(dtype)).loss
        finally:
            torch.randn_like = real
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if after_one is None:
            after_one = state()
    return start, after_one, state(), losses


def rel(a, b):
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)


def main():
    base = train_base()
    steps = draws()
    init, step1, final, losses = train_path(base, None, steps, torch.float32, 2)
    print(f"path: {len(init)} tensors, {sum(v.numel() for v in init.values())} parameters; "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    _, step1_64, final64, losses64 = train_path(base, init, steps, torch.float64, 2)
    _, step1_t1, final_t1, losses_t1 = train_path(base, init, steps, torch.float32, 1)
    drift = {}
    for name, (fin, ls) in {"float64": (final64, losses64), "one_thread": (final_t1, losses_t1)}.items():
        drift[name] = {
            "max_loss_rel": max(abs(a - b) / abs(b) for a, b in zip(ls, losses)),
            "max_param_rel_to_tensor_max": max(rel(fin[n], final[n]) for n in final),
        }
    print(json.dumps(drift, indent=1))
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()},
              str(OUT / "base.safetensors"))
    base.config.to_json_file(str(OUT / "config.json"))
    (OUT / "l2d_config.json").write_text(json.dumps({"arch": "llama", **L2D}, indent=1) + "\n")
    save_file({
        "input_ids": torch.stack([s[0] for s in steps]),
        "labels": torch.stack([s[1] for s in steps]),
        "timesteps": torch.stack([s[2] for s in steps]),
        "noise": torch.stack([s[3] for s in steps]),
        "loss": torch.tensor(losses, dtype=torch.float32),
    }, str(OUT / "steps.safetensors"))
    save_file(init, str(OUT / "path_init.safetensors"))
    save_file(step1, str(OUT / "path_step1.safetensors"))
    save_file(final, str(OUT / "path_final.safetensors"))
    # Per tensor, the largest distance of the float64 and the one-thread runs from the float32
    # run: the drift that float32 arithmetic alone explains.
    def tensor_drift(ours, f64, t1):
        return {n: max((f64[n] - ours[n]).abs().max().item(), (t1[n] - ours[n]).abs().max().item())
                for n in ours}
    summary = {"runs": drift,
               "step1_tensor_drift": tensor_drift(step1, step1_64, step1_t1),
               "final_tensor_drift": tensor_drift(final, final64, final_t1)}
    (OUT / "drift.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
