#!/usr/bin/env python3
"""Generate the task data of the SmolLM2 study (docs/real-model.md): arithmetic problems of the
kind of `fixtures/eval/arithmetic.jsonl`, split into training, validation and test sets drawn
with separate seeds.

How to run (from the repository root; standard library only, no install needed):

    python3 scripts/make_word_problems.py

Writes
* `fixtures/train/word-problems-train.jsonl` (4,000 conversations) and
  `fixtures/train/word-problems-valid.jsonl` (200): chat files in the layout `l2d train` reads,
  `{"messages": [user, assistant], "class": "math"}`, the assistant's reply the number only;
* `fixtures/eval/word-problems-test.jsonl` (256): `{"prompt", "answer"}` lines for
  `l2d eval --extract number`.

Four families in equal parts (the training split holds all 606 multiplication problems that
the other splits leave, the rest of it the other three families), as in
`make_eval_arithmetic.py`: 2-digit addition, 2-digit
subtraction with a non-negative result, 1-digit by 2-digit multiplication, and two-step word
problems ("X has a things, gets b more, then gives away c"). Every prompt ends with "Answer
with the number only." No problem appears in two splits: the test set is drawn first, the
validation set skips test problems, the training set skips both. The output is the same on
every run.
"""

import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN_OUT = ROOT / "fixtures" / "train" / "word-problems-train.jsonl"
VALID_OUT = ROOT / "fixtures" / "train" / "word-problems-valid.jsonl"
TEST_OUT = ROOT / "fixtures" / "eval" / "word-problems-test.jsonl"

# One seed per split, so a split can be regrown without changing the others.
SPLITS = [("test", 303, 256), ("valid", 202, 200), ("train", 101, 4000)]

NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun",
         "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya"]
THINGS = ["apples", "books", "coins", "pencils", "stamps", "marbles", "cards", "shells",
          "stickers", "buttons"]


def problem(rng: random.Random, family: int) -> tuple[str, int]:
    """One problem of a family (0: +, 1: -, 2: x, 3: two-step words) as (question, answer)."""
    if family == 0:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", a + b
    if family == 1:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        a, b = max(a, b), min(a, b)
        return f"What is {a} - {b}?", a - b
    if family == 2:
        a, b = rng.randint(2, 9), rng.randint(10, 99)
        return f"What is {a} times {b}?", a * b
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 20)
    c = min(c, a + b)
    return (
        f"{name} has {a} {thing}, gets {b} more, then gives away {c}. "
        f"How many {thing} does {name} have now?",
        a + b - c,
    )


def draw(seed: int, count: int, taken: set[str]) -> list[tuple[str, int]]:
    """`count` distinct problems whose prompts are not in `taken`, the families in turn.

    A family whose problems are used up (multiplication has only 720) is left out of the
    turn from then on, so the training split holds every multiplication problem that the
    other splits do not."""
    rng = random.Random(seed)
    items: list[tuple[str, int]] = []
    families = [0, 1, 2, 3]
    turn = 0
    while len(items) < count:
        family = families[turn % len(families)]
        for _ in range(10_000):
            question, answer = problem(rng, family)
            prompt = f"{question} Answer with the number only."
            if prompt not in taken:
                taken.add(prompt)
                items.append((prompt, answer))
                turn += 1
                break
        else:
            families.remove(family)
    rng.shuffle(items)
    return items


def write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} lines to {path.relative_to(ROOT)}")


def chat(prompt: str, answer: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": str(answer)},
        ],
        "class": "math",
    }


def main() -> None:
    taken: set[str] = set()
    drawn = {name: draw(seed, count, taken) for name, seed, count in SPLITS}
    write_lines(TEST_OUT, [{"prompt": p, "answer": str(a)} for p, a in drawn["test"]])
    write_lines(VALID_OUT, [chat(p, a) for p, a in drawn["valid"]])
    write_lines(TRAIN_OUT, [chat(p, a) for p, a in drawn["train"]])


if __name__ == "__main__":
    main()
