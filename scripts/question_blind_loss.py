#!/usr/bin/env python3
"""The cross-entropy of predictors that do not see the question, on the reply tokens of a
validation chat file: the floor a model reaches by learning only the answers' distribution.

Each reply is scored as `l2d train` scores it, one token per character plus the end of the
turn (SmolLM2's tokenizer writes every digit as its own token). Two predictors, both counted
on the training replies with add-1/2 smoothing over the symbols seen:
- by position: the distribution of the k-th token of a reply;
- by prefix: the distribution of the next token given the reply's earlier tokens.

    python3 scripts/question_blind_loss.py \
        fixtures/train/word-problems-train.jsonl fixtures/train/word-problems-valid.jsonl
"""

import argparse
import collections
import json
import math

END = "<end>"


def replies(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                conv = json.loads(line)
                out += [m["content"] for m in conv["messages"] if m["role"] == "assistant"]
    return out


def tokens(reply):
    return list(reply) + [END]


def mean_loss(train, valid, key):
    counts = collections.defaultdict(collections.Counter)
    symbols = {END}
    for r in train:
        t = tokens(r)
        symbols.update(t)
        for k, tok in enumerate(t):
            counts[key(t, k)][tok] += 1
    total, n = 0.0, 0
    for r in valid:
        t = tokens(r)
        for k, tok in enumerate(t):
            c = counts.get(key(t, k), collections.Counter())
            p = (c[tok] + 0.5) / (sum(c.values()) + 0.5 * len(symbols))
            total -= math.log(p)
            n += 1
    return total / n, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train")
    ap.add_argument("valid")
    a = ap.parse_args()
    train, valid = replies(a.train), replies(a.valid)
    by_position, n = mean_loss(train, valid, lambda t, k: k)
    by_prefix, _ = mean_loss(train, valid, lambda t, k: tuple(t[:k]))
    print(f"{len(valid)} validation replies, {n} scored tokens")
    print(f"by position: {by_position:.4f} nats per token")
    print(f"by prefix:   {by_prefix:.4f} nats per token")


if __name__ == "__main__":
    main()
