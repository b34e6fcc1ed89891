#!/usr/bin/env python3
"""Answers that changed between settings of an `l2d eval` report, as Markdown.

    python3 scripts/report_changes.py docs/real-model.json base lora steps=7:midpoint

prints, for the first setting against each of the others, how many items each got right
alone and in common, then up to `--show` items per direction (wrong -> right, right -> wrong)
with the task's prompt, the expected answer and both outputs. Standard library only.
"""

import argparse
import json
import sys


def one_line(text, limit=90):
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report")
    parser.add_argument("reference", help="label of the setting to compare against")
    parser.add_argument("others", nargs="+", help="labels of the settings to compare")
    parser.add_argument("--tasks", help="the task file (prompts); default: the report's")
    parser.add_argument("--show", type=int, default=3)
    args = parser.parse_args()

    with open(args.report) as f:
        report = json.load(f)
    by_label = {s["label"]: s for s in report["settings"]}
    for label in [args.reference, *args.others]:
        if label not in by_label:
            sys.exit(f"{args.report}: no setting {label!r}; it has {sorted(by_label)}")
    with open(args.tasks or report["tasks"]) as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]

    ref = by_label[args.reference]["items"]
    for label in args.others:
        items = by_label[label]["items"]
        both = sum(a["correct"] and b["correct"] for a, b in zip(ref, items))
        gained = [(a, b) for a, b in zip(ref, items) if b["correct"] and not a["correct"]]
        lost = [(a, b) for a, b in zip(ref, items) if a["correct"] and not b["correct"]]
        print(f"### `{args.reference}` → `{label}`\n")
        print(
            f"Right in both: {both}; only with `{label}`: {len(gained)}; "
            f"only with `{args.reference}`: {len(lost)}.\n"
        )
        for title, pairs in [("wrong → right", gained), ("right → wrong", lost)]:
            if not pairs:
                continue
            print(f"| {title} | expected | `{args.reference}` | `{label}` |")
            print("|---|---|---|---|")
            for a, b in pairs[: args.show]:
                prompt = one_line(prompts[a["index"]])
                print(
                    f"| {prompt} | {a['expected']} | {one_line(a['output'], 60)!r} "
                    f"| {one_line(b['output'], 60)!r} |"
                )
            print()


if __name__ == "__main__":
    main()
