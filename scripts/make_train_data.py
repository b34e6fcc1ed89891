#!/usr/bin/env python3
"""Generate `fixtures/train/arithmetic.jsonl`: a small chat data set for training runs of
`l2d train` (the SmolLM2 run of docs/training.md).

How to run (from the repository root; standard library only):

    python3 scripts/make_train_data.py

400 single-turn conversations in the SmolTalk layout, with a `class` label:
* 300 arithmetic questions (`math`): sums, differences and products of small numbers, the
  answer as a short sentence ("23 + 58 = 81.");
* 100 capital-city questions (`general_qa`) over 50 countries, two phrasings each.
Seeded, so the file is the same on every run.
"""

import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "train", "arithmetic.jsonl")

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Russia", "Moscow"), ("Poland", "Warsaw"),
    ("Greece", "Athens"), ("Turkey", "Ankara"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Hungary", "Budapest"), ("Czechia", "Prague"),
    ("Belgium", "Brussels"), ("Netherlands", "Amsterdam"), ("Switzerland", "Bern"),
    ("Chile", "Santiago"), ("Peru", "Lima"), ("Colombia", "Bogota"), ("Cuba", "Havana"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"),
    ("Philippines", "Manila"), ("South Korea", "Seoul"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Saudi Arabia", "Riyadh"), ("Israel", "Jerusalem"),
    ("Morocco", "Rabat"), ("Ethiopia", "Addis Ababa"), ("Ghana", "Accra"),
    ("New Zealand", "Wellington"), ("Iceland", "Reykjavik"), ("Ukraine", "Kyiv"),
]


def main():
    rng = random.Random(20250715)
    records = []
    for _ in range(300):
        op = rng.choice(["+", "-", "*"])
        if op == "*":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            c = a * b
        else:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            if op == "-" and b > a:
                a, b = b, a
            c = a + b if op == "+" else a - b
        q = rng.choice(["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?"])
        records.append({
            "messages": [
                {"role": "user", "content": q.format(a=a, op=op, b=b)},
                {"role": "assistant", "content": f"{a} {op} {b} = {c}."},
            ],
            "class": "math",
        })
    for country, capital in CAPITALS:
        for q in ["What is the capital of {c}?", "Which city is the capital of {c}?"]:
            records.append({
                "messages": [
                    {"role": "user", "content": q.format(c=country)},
                    {"role": "assistant", "content": f"The capital of {country} is {capital}."},
                ],
                "class": "general_qa",
            })
    rng.shuffle(records)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(f"wrote {len(records)} conversations to {OUT}")


if __name__ == "__main__":
    main()
