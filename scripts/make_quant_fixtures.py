#!/usr/bin/env python3
"""Reference blocks for `crates/l2d-quant`: the `gguf` package's (llama.cpp's reference
rounding, in numpy) quantisation and dequantisation of one matrix to Q8_0, Q4_0 and Q4_1, and
products with a few input rows in float64.

    scripts/.venv/bin/pip install gguf numpy safetensors
    scripts/.venv/bin/python scripts/make_quant_fixtures.py

Writes `crates/l2d-quant/tests/fixtures/reference.safetensors`:
`values` f32 [rows, cols] (the matrix; its blocks include an all-zero one, one whose largest
magnitude is negative, one constant, one with an outlier), `x` f32 [m, cols], and per format
`<fmt>.blocks` u8 [rows, row_bytes] (the file bytes), `<fmt>.dequantized` f32 [rows, cols],
`<fmt>.product` f64 [m, rows] = x · dequantizedᵀ.
"""

import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

rows, cols, m = 9, 96, 3
rng = np.random.default_rng(7)
values = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
values[0, :32] = 0.0  # an all-zero block
values[1, :32] = rng.uniform(-1.0, 0.3, 32).astype(np.float32)
values[1, 5] = -1.5  # largest magnitude negative
values[2, 32:64] = 0.25  # a constant block
values[3, 64:96] *= 0.01
values[3, 70] = 3.0  # an outlier
x = rng.standard_normal((m, cols)).astype(np.float32)

out = {"values": values, "x": x}
for name, qtype in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)]:
    blocks = quants.quantize(values, qtype)
    deq = quants.dequantize(blocks, qtype).astype(np.float32)
    out[f"{name}.blocks"] = np.ascontiguousarray(blocks, dtype=np.uint8)
    out[f"{name}.dequantized"] = deq
    out[f"{name}.product"] = x.astype(np.float64) @ deq.astype(np.float64).T

path = pathlib.Path(__file__).resolve().parent.parent / "crates/l2d-quant/tests/fixtures"
path.mkdir(parents=True, exist_ok=True)
save_file(out, str(path / "reference.safetensors"))
print("wrote", path / "reference.safetensors", {k: v.shape for k, v in out.items()})
