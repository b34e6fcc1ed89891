#!/usr/bin/env python3
"""The table of docs/scaling.md from the curves that scripts/scaling_search.sh and
scripts/scaling_noise.sh wrote (`examples/test_time_scaling.rs --json`).

    python3 scripts/scaling_table.py [DIR]          (default target/scaling-search)
"""
import json
import sys
from pathlib import Path


def main():
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "target/scaling-search")
    print("| run | base | LoRA | Euler 1 | 2 | 4 | 8 | 16 | adaptive (NFE) | 2 → 16 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path in sorted(folder.glob("*.json")):
        c = json.loads(path.read_text())
        base = next((b["accuracy"] for b in c["baselines"] if b["name"].startswith("base")), None)
        lora = next((b["accuracy"] for b in c["baselines"] if b["name"].startswith("LoRA")), None)
        at = {p["steps"]: p["accuracy"] for p in c["curve"]}
        cells = [f"{at[k]:.3f}" if k in at else "-" for k in (1, 2, 4, 8, 16)]
        a = c.get("adaptive")
        adaptive = f"{a['accuracy']:.3f} ({a['nfe']:.0f})" if a else "-"
        gain = f"{at[16] - at[2]:+.3f}" if 2 in at and 16 in at else "-"
        fmt = lambda x: "-" if x is None else f"{x:.3f}"
        print(f"| {path.stem} | {fmt(base)} | {fmt(lora)} | " + " | ".join(cells)
              + f" | {adaptive} | {gain} |")


if __name__ == "__main__":
    main()
