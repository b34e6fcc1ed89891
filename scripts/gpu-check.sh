#!/usr/bin/env bash
# The GPU checks of docs/gpu.md as one script, for a machine with an NVIDIA GPU and no Rust
# toolchain: it runs binaries built on another machine and writes JSON lines to $OUT.
#
# On the build machine (no GPU needed; about 25 min from a clean target directory):
#   scripts/setup-cuda-build.sh
#   cargo build --release --features cuda -p l2d-models \
#       --example device_parity --example bench_generation
#   scripts/fetch-smollm2.sh
# then carry target/release/examples/{device_parity,bench_generation}, fixtures/reference/
# and .models/smollm2/ (the binaries read the fixtures from the repository's layout).
#
#   OUT=/some/dir scripts/gpu-check.sh
#
# What it runs, each on cuda:0 after the CPU reference:
#   1. parity: the reference fixtures and SmolLM2, frozen and diffusion logits, f32 (bound
#      1e-3 of the largest logit) and bf16 (reported against 5e-2);
#   2. speed: bench_generation (base step, diffusion step, token at 15 NFE) in f32 and bf16 at
#      SmolLM2-135M and Llama-3.2-1B sizes, 15 timed runs after 4 warm-up runs (autotuning),
#      the device synchronised before each clock stop, each run checking its own logits.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/examples}"
OUT="${OUT:-target/gpu-check}"
GGUF="${GGUF:-.models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
mkdir -p "$OUT"
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-12080}"
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true) | tee "$OUT/gpu.txt"
status=0
for dtype in f32 bf16; do
    "$BIN/device_parity" --device cuda --dtype "$dtype" --gguf "$GGUF" \
        | tee -a "$OUT/parity.jsonl" || status=1
done
for dtype in f32 bf16; do
    "$BIN/bench_generation" --device cuda --dtype "$dtype" \
        --size smollm2-135m,llama-3.2-1b --iters 15 --warmup 4 \
        | tee -a "$OUT/bench_generation.jsonl" || status=1
done
exit "$status"
