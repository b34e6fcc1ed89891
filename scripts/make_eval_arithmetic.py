#!/usr/bin/env python3
"""Generate the small arithmetic task file of `l2d eval` (fixtures/eval/arithmetic.jsonl).

How to run (from the repository root; standard library only, no install needed):

    python3 scripts/make_eval_arithmetic.py      # writes fixtures/eval/arithmetic.jsonl

64 problems drawn with a fixed seed: 16 each of 2-digit addition, 2-digit subtraction
(non-negative results), 1-by-2-digit multiplication, and two-step word problems. Each line is
`{"prompt": ..., "answer": ...}` with the answer as a decimal string; the prompt asks for the
number only, so `--extract number` reads the last number of the reply.
"""

import json
import random
from pathlib import Path

SEED = 20250127
OUT = Path(__file__).resolve().parent.parent / "fixtures" / "eval" / "arithmetic.jsonl"


def main() -> None:
    rng = random.Random(SEED)
    items = []
    for _ in range(16):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        items.append((f"What is {a} + {b}?", a + b))
    for _ in range(16):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        a, b = max(a, b), min(a, b)
        items.append((f"What is {a} - {b}?", a - b))
    for _ in range(16):
        a, b = rng.randint(2, 9), rng.randint(10, 99)
        items.append((f"What is {a} times {b}?", a * b))
    names = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana"]
    things = ["apples", "books", "coins", "pencils", "stamps", "marbles"]
    for _ in range(16):
        name, thing = rng.choice(names), rng.choice(things)
        a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 20)
        c = min(c, a + b)
        items.append(
            (
                f"{name} has {a} {thing}, gets {b} more, then gives away {c}. "
                f"How many {thing} does {name} have now?",
                a + b - c,
            )
        )
    rng.shuffle(items)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for question, answer in items:
            prompt = f"{question} Answer with the number only."
            f.write(json.dumps({"prompt": prompt, "answer": str(answer)}) + "\n")
    print(f"wrote {len(items)} problems to {OUT}")


if __name__ == "__main__":
    main()
