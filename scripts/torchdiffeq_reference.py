#!/usr/bin/env python3
"""torchdiffeq 0.2.5 reference numbers for `l2d-solvers`.

Runs torchdiffeq on the reference-problem matrix of issue 2 (the same matrix that
`cargo run -p l2d-solvers --example reference_problems` prints) in float64 and writes one
JSON line per run to `crates/l2d-solvers/tests/data/torchdiffeq_reference.jsonl`:

    {"problem", "method", "setting", "t1", "y_final", "nfe"}   (or "error" instead of y_final/nfe)

`method` uses the l2d-solvers names; `rk4_38` is torchdiffeq's `rk4` (the 3/8 rule).
`nfe` counts every call of the vector field, including calls answered by the zero-velocity
guard of `flow_to_one` (the L2D reference counts those too).

How to run (from the repository root):

    python3 -m venv venv && venv/bin/pip install torch==2.* torchdiffeq==0.2.5 numpy
    venv/bin/python scripts/torchdiffeq_reference.py [output.jsonl]

(in this project's workspace: `/work/pyenv/bin/python scripts/torchdiffeq_reference.py`)
"""

import json
import os
import sys

import torch
import torchdiffeq

assert torchdiffeq.__version__ == "0.2.5", torchdiffeq.__version__

torch.set_default_dtype(torch.float64)
DT = torch.float64

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=DT)
W = torch.tensor([[0.9, -1.3, 0.4], [0.7, 0.2, -1.1], [-0.6, 1.5, 0.3]], dtype=DT)


def damped_rotation(t, y):
    return A @ y


def logistic(t, y):
    return y * (1.0 - y)


def flow_to_one(t, y):
    # The L2D reference guard: zero velocity at t >= 1 (the field is singular there).
    if t >= 1.0:
        return torch.zeros_like(y)
    return (2.0 * torch.tanh(W @ y) - y) / (1.0 - t)


# name -> (field, y0, t1 on grids, t1 for adaptive methods)
PROBLEMS = [
    ("damped_rotation", damped_rotation, [1.0, 0.0], 5.0, 5.0),
    ("logistic", logistic, [0.1], 4.0, 4.0),
    ("flow_to_one", flow_to_one, [0.5, -1.0, 2.0], 1.0, 0.99),
]

# (method, torchdiffeq name, setting, kind, parameter)
RUNS = [
    ("euler", "euler", "uniform_11", "grid", 11),
    ("midpoint", "midpoint", "uniform_11", "grid", 11),
    ("rk4_38", "rk4", "uniform_11", "grid", 11),
    ("heun2", "heun2", "uniform_11", "grid", 11),
    ("euler", "euler", "uniform_101", "grid", 101),
    ("midpoint", "midpoint", "uniform_101", "grid", 101),
    ("dopri5", "dopri5", "tol_1e-6", "tol", 1e-6),
    ("dopri5", "dopri5", "tol_1e-9", "tol", 1e-9),
    ("bosh3", "bosh3", "tol_1e-5", "tol", 1e-5),
    ("fehlberg2", "fehlberg2", "tol_1e-4", "tol", 1e-4),
    ("adaptive_heun", "adaptive_heun", "tol_1e-4", "tol", 1e-4),
]


class Counted:
    def __init__(self, f):
        self.f = f
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        return self.f(t, y)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        root, "crates", "l2d-solvers", "tests", "data", "torchdiffeq_reference.jsonl")
    lines = []
    for pname, f, y0, t1_grid, t1_adaptive in PROBLEMS:
        for method, tname, setting, kind, param in RUNS:
            field = Counted(f)
            y0t = torch.tensor(y0, dtype=DT)
            if kind == "grid":
                t1 = t1_grid
                t = torch.linspace(0.0, t1, param, dtype=DT)
                kwargs = {}
            else:
                t1 = t1_adaptive
                t = torch.tensor([0.0, t1], dtype=DT)
                kwargs = {"rtol": param, "atol": param}
            rec = {"problem": pname, "method": method, "setting": setting, "t1": t1}
            try:
                with torch.no_grad():
                    sol = torchdiffeq.odeint(field, y0t, t, method=tname, **kwargs)
                rec["y_final"] = [float(v) for v in sol[-1]]
                rec["nfe"] = field.nfe
            except Exception as e:  # recorded, not raised: the Rust side reports errors too
                rec["error"] = f"{type(e).__name__}: {e}"
            lines.append(json.dumps(rec))
    with open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} runs to {out}")


if __name__ == "__main__":
    main()
