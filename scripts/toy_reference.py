#!/usr/bin/env python3
"""The authors' L2D code at toy scale (the quickstart's task), with every ingredient exported.

Runs the set-up of `docs/toy-scale-reference.md` (N-digit addition, a tiny Llama trained from
scratch and frozen, the L2D diffusion path trained on the answer digits, greedy exact match on
1000 held-out problems) through the authors' `FlowLlamaForCausalLM`, drawing random numbers in
the same order as the harness that produced the reference figures
(`../shared/reference-harness/l2d_toy.py`), so that with no options it reproduces them. It
writes what the quickstart needs to swap one ingredient at a time between the two
implementations:

    OUT/base/config.json, OUT/base/model.safetensors   the frozen base (Hugging Face names)
    OUT/l2d_config.json                                 the path's configuration
    OUT/path_init.safetensors                           the path's initial weights
    OUT/path_final.safetensors                          the trained path (adapter keys)
    OUT/result.json                                     losses and exact match per setting

Options swap ingredients in: `--base DIR` (a Hugging Face folder, e.g. one the quickstart
wrote with `--export-base`) instead of training a base, `--path-init FILE` (an adapter file)
instead of the seeded initialisation, `--path-seed S` to reseed torch before the path is built.
For docs/scaling.md: `--task` runs another task of `l2d::demo::task` (multiplication,
modular-sum, permutation; with l2d's held-out split), `--noise-scale` sets the training noise
σ (the reference's `noise_rescaling`, 64), `--train-lora` also trains the LoRA baseline.

    L2D_REFERENCE_SRC=/path/to/SakanaAI-L2D scripts/.venv/bin/python scripts/toy_reference.py \
        --out target/toy-reference/seed0
"""

import argparse
import copy
import json
import random
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_code import add_reference_to_path  # noqa: E402

add_reference_to_path()

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from flow_llms import FlowLlamaForCausalLM  # noqa: E402
from flow_llms.base_components import LoRA  # noqa: E402

PLUS, EQ, BOS, TIMES, VOCAB = 10, 11, 12, 13, 13
TASK = "addition"

# S3 in the order of `l2d::demo::task::s3_compose`: element i maps (0, 1, 2) to PERMS[i].
PERMS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


def s3_compose(g, h):
    """(g o h)(x) = g(h(x))."""
    return PERMS.index(tuple(PERMS[g][PERMS[h][x]] for x in range(3)))


def splitmix64(x):
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def held_out(a, b):
    """The held-out rule of `l2d::demo::task` (one problem in 10, by a hash of (a, b))."""
    return splitmix64(splitmix64(a ^ 0x6C32645F73706C74) ^ b) % 10 == 0


def one_token_problem(rng, nd, want_held_out):
    """A problem of the one-token tasks of `l2d::demo::task`, on the training side of its
    split (or the held-out side): `BOS d1..dN =` and one answer digit."""
    k = 10 if TASK == "modular-sum" else 6
    while True:
        digits = [rng.randrange(k) for _ in range(nd)]
        a = int("".join(map(str, digits)))
        if held_out(a, 0) == want_held_out:
            break
    if TASK == "modular-sum":
        answer = sum(digits) % 10
    else:
        answer = 0
        for g in digits:
            answer = s3_compose(answer, g)
    return [BOS] + digits + [EQ], [answer]


def problem(rng, nd, test=False):
    if TASK in ("modular-sum", "permutation"):
        return one_token_problem(rng, nd, test)
    a, b = rng.randrange(10**nd), rng.randrange(10**nd)
    if TASK == "multiplication":
        ids = ([BOS] + [int(c) for c in f"{a:0{nd}d}"] + [TIMES] + [int(c) for c in f"{b:0{nd}d}"]
               + [EQ])
        return ids, [int(c) for c in f"{a * b:0{2 * nd}d}"]
    ids = [BOS] + [int(c) for c in f"{a:0{nd}d}"] + [PLUS] + [int(c) for c in f"{b:0{nd}d}"] + [EQ]
    return ids, [int(c) for c in f"{a + b:0{nd + 1}d}"]


def answer_len(nd):
    return {"addition": nd + 1, "multiplication": 2 * nd}.get(TASK, 1)


def batch(rng, n, nd):
    xs, ys = zip(*[problem(rng, nd) for _ in range(n)])
    ids = torch.tensor([x + y for x, y in zip(xs, ys)])
    labels = ids.clone()
    labels[:, : len(xs[0])] = -100
    return ids, labels


def l2d_kwargs(hidden, noise_scale=64.0):
    """The toy reference's diffusion path (58,592 parameters on the 6-digit row), with the
    training noise's scale σ (`noise_rescaling`, 64 in the reference)."""
    return dict(
        base_params_to_freeze="all", noise_schedule="identity", flow_representation_space="mapping",
        flow_representation_dim=32, flow_representation_num_layers=1,
        flow_representation_normalize=True, flow_representation_rescaling="mult",
        flow_to_lm_translation_depth=2, flow_to_lm_hidden_size=hidden,
        flow_to_lm_timestep_rescaling=1.0, flow_to_lm_rescale_in_float32=True,
        preserve_behavior_at_flow_start=True, modulate_hidden_states=False,
        full_dit_modulation=True, timestep_modulation_num_layers=2,
        timestep_modulation_freq_embedding_size=64, timestep_modulation_hidden_size=hidden,
        separate_flow_params=True, separate_flow_params_with_lora=True, flow_lora_rank=8,
        flow_lora_alpha=8.0, noise_rescaling=noise_scale, nstep_x1_estimation="sample",
        nstep_temperature_schedule=0.0)


def base_exact_match(base, tx, ty, nd):
    with torch.no_grad():
        seq = tx.clone()
        for _ in range(answer_len(nd)):
            nxt = base(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    return (seq[:, tx.shape[1]:] == ty).all(1).float().mean().item()


def l2d_exact_match(m, tx, ty, nd, grid, method, est):
    """Greedy answers: per digit, `nstep_inference` from the prompt cache, then the logits at
    the final time (the harness's evaluation)."""
    torch.manual_seed(7)
    with torch.no_grad():
        seq = tx.clone()
        pre = m.model(input_ids=seq, use_cache=True, output_cached_final_hidden_states=True,
                      return_dict=True)
        cache, cfinal = pre.past_key_values, pre.cached_final_hidden_states
        step_ids = seq[:, -1:]
        pos = torch.full((seq.shape[0], 1), seq.shape[1] - 1)
        for _ in range(answer_len(nd)):
            o = m.nstep_inference(
                input_ids=step_ids, position_ids=pos, past_key_values=cache,
                cached_final_hidden_states=cfinal, ode_steps=grid,
                ode_kwargs=dict(method=method, atol=1e-5, rtol=1e-5), x1_estimation=est,
                temperature_schedule=0.0 if est == "sample" else 1.0,
                precompute_non_flow_path=True, only_last_token_prediction=True)
            out = m(input_ids=step_ids, timesteps=o.timestep_trajectory[-1],
                    flow_representation_embeds=o.flow_trajectory[-1].float(), position_ids=pos,
                    past_key_values=o.past_key_values,
                    cached_final_hidden_states=o.cached_final_hidden_states, use_cache=True,
                    return_dict=True, disable_recursive_nstep_call=True)
            cache = o.past_key_values
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
            step_ids, pos, cfinal = nxt, pos + 1, None
    return (seq[:, tx.shape[1]:] == ty).all(1).float().mean().item()


def trainable_state(m):
    return {n: p.detach().clone().contiguous() for n, p in m.named_parameters() if p.requires_grad}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--base-steps", type=int, default=400)
    ap.add_argument("--l2d-steps", type=int, default=5000)
    ap.add_argument("--hidden", type=int, default=48)
    ap.add_argument("--digits", type=int, default=6)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lora-rank", type=int, default=40,
                    help="rank of the harness's LoRA baseline (built for its random draws)")
    ap.add_argument("--train-lora", action="store_true", help="also train the LoRA baseline")
    ap.add_argument("--lora-only", action="store_true",
                    help="train and score the LoRA baseline, then stop (no diffusion path)")
    ap.add_argument("--path-seed", type=int, default=None)
    ap.add_argument("--base", type=Path, default=None, help="a Hugging Face folder to use as base")
    ap.add_argument("--path-init", type=Path, default=None, help="initial path weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--grids", default="2,3,5,17", help="Euler grid sizes (steps + 1)")
    ap.add_argument("--noise-scale", type=float, default=64.0,
                    help="the training noise's scale sigma (noise_rescaling)")
    ap.add_argument("--task", default="addition",
                    choices=["addition", "multiplication", "modular-sum", "permutation"],
                    help="the task of `l2d::demo::task` (addition: the harness's own draws; the "
                    "others: l2d's held-out split, training never sees a test problem)")
    args = ap.parse_args()
    nd, hidden = args.digits, args.hidden
    global TASK, VOCAB
    TASK = args.task
    VOCAB = 14 if TASK == "multiplication" else 13
    torch.manual_seed(0)
    random.seed(0)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"args": {k: str(v) for k, v in vars(args).items()}}

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=32, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    base = LlamaForCausalLM(cfg)
    rng = random.Random(1)
    t0 = time.time()
    if args.base is None:
        opt = torch.optim.AdamW(base.parameters(), lr=3e-3, weight_decay=0.01)
        for _ in range(args.base_steps):
            ids, labels = batch(rng, 128, nd)
            loss = base(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        res["base_last_loss"] = loss.item()
    else:
        # The data stream continues after the base's batches, as if the base had been trained.
        for _ in range(args.base_steps):
            batch(rng, 128, nd)
        base.load_state_dict(load_file(str(args.base / "model.safetensors")))
    base.eval()
    res["base_seconds"] = time.time() - t0
    test_rng = random.Random(12345)
    test = [problem(test_rng, nd, test=True) for _ in range(1000)]
    tx = torch.tensor([x for x, _ in test])
    ty = torch.tensor([y for _, y in test])
    res["base"] = base_exact_match(base, tx, ty, nd)
    print(f"base exact match {res['base']:.3f}", flush=True)
    (args.out / "base").mkdir(exist_ok=True)
    base.config.to_json_file(str(args.out / "base" / "config.json"))
    save_file({k: v.contiguous() for k, v in base.state_dict().items()},
              str(args.out / "base" / "model.safetensors"))

    # The harness's LoRA baseline: its A matrices are drawn from torch's generator before the
    # path is built, so it is always constructed; trained only on request.
    lb = copy.deepcopy(base)
    for p in lb.parameters():
        p.requires_grad_(False)
    for layer in lb.model.layers:
        for mod, names in [(layer.self_attn, ["q_proj", "o_proj"]),
                           (layer.mlp, ["gate_proj", "up_proj", "down_proj"])]:
            for n in names:
                lin = getattr(mod, n)
                setattr(mod, n, LoRA(lin.in_features, lin.out_features, wrapped_layer=lin,
                                     rank=args.lora_rank, alpha=float(args.lora_rank)))
    if args.train_lora or args.lora_only:
        lp = [p for p in lb.parameters() if p.requires_grad]
        lopt = torch.optim.AdamW(lp, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.95))
        lrng = random.Random(1)
        for _ in range(args.l2d_steps):
            ids, labels = batch(lrng, 128, nd)
            loss = lb(input_ids=ids, labels=labels).loss
            lopt.zero_grad()
            loss.backward()
            lopt.step()
        lb.eval()
        res["lora"] = base_exact_match(lb, tx, ty, nd)
        print(f"lora exact match {res['lora']:.3f}", flush=True)
        if args.lora_only:
            (args.out / "result.json").write_text(json.dumps(res, indent=1))
            return

    kwargs = l2d_kwargs(hidden, args.noise_scale)
    if args.path_seed is not None:
        torch.manual_seed(args.path_seed)
    m = FlowLlamaForCausalLM(base, **kwargs)
    if args.path_init is not None:
        init = load_file(str(args.path_init))
        missing, unexpected = m.load_state_dict(init, strict=False)
        assert not unexpected, unexpected
        assert set(init) == set(trainable_state(m)), "the initial path is not the whole path"
    save_file(trainable_state(m), str(args.out / "path_init.safetensors"))
    l2d_json = {"arch": "llama", **{k: v for k, v in kwargs.items()}}
    (args.out / "l2d_config.json").write_text(json.dumps(l2d_json, indent=1))
    params = [p for p in m.parameters() if p.requires_grad]
    res["path_params"] = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.95))
    m.train()
    t0 = time.time()
    losses = []
    for step in range(args.l2d_steps):
        ids, labels = batch(rng, 128, nd)
        loss = m(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 500 == 0:
            print(f"l2d step {step} loss {loss.item():.4f}", flush=True)
    res["l2d_seconds"] = time.time() - t0
    res["l2d_losses"] = losses
    m.eval()
    save_file(trainable_state(m), str(args.out / "path_final.safetensors"))
    for grid in [int(g) for g in args.grids.split(",")]:
        acc = l2d_exact_match(m, tx, ty, nd, grid, "euler", "sample")
        res[f"sample_euler_{grid - 1}"] = acc
        print(f"L2D sample T=0, Euler {grid - 1}: exact match {acc:.3f}", flush=True)
    (args.out / "result.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
