#!/usr/bin/env bash
# Sets up an offline build of `--features cuda` (burn's CUDA backend) from package registries
# only, and prints the command to build with it. Idempotent: a second run finds everything in
# place and changes nothing.
#
# burn's CUDA backend (cubecl-cuda) always compiles an LLVM NVPTX compiler; its build script
# would download an LLVM 23 bundle from GitHub. The same LLVM 23 comes from two PyPI wheels
# (`mlc-llvm-static` with `llvm-config` and the static libraries, `mlc-llvm-static-extra-targets`
# with NVPTX); this script installs them and puts them where the bundler looks
# (`$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4`, marked installed so that nothing is fetched).
# No CUDA toolkit is needed to compile: the binary loads libcuda, NVRTC and NCCL at run time.
#
#   scripts/setup-cuda-build.sh            # once per machine (about 400 MB of wheels, copied once more)
#   cargo build --release --features cuda  # then, with no network (about 25 min from clean)
#
# A compile check that needs none of this: `DOCS_RS=1 cargo check --features cuda` (CI runs it).
set -euo pipefail

LLVM_VERSION="23.1.1.post0"
BUNDLE="tracel-llvm-23.1.0-4"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}/tracel"
DEST="$DATA/$BUNDLE"
MARKER="$DEST/.tracel-llvm-installed"
WHEELS="${L2D_LLVM_WHEELS:-$HOME/.cache/l2d/llvm-$LLVM_VERSION}"

if [ -f "$MARKER" ] && [ -x "$DEST/bin/llvm-config" ] && "$DEST/bin/llvm-config" --targets-built | grep -qw NVPTX; then
    echo "LLVM for the CUDA build is in place: $DEST ($("$DEST/bin/llvm-config" --version), NVPTX built)"
else
    if [ ! -x "$WHEELS/mlc_llvm_static/static/bin/llvm-config" ]; then
        python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$WHEELS" \
            "mlc-llvm-static==$LLVM_VERSION" "mlc-llvm-static-extra-targets==$LLVM_VERSION"
    fi
    src="$WHEELS/mlc_llvm_static/static"
    if [ ! -x "$src/bin/llvm-config" ]; then
        echo "setup-cuda-build: $src/bin/llvm-config is missing after the install" >&2
        exit 1
    fi
    # Replace a partial copy from an interrupted run whole, then mark it installed last.
    rm -rf "$DEST.partial"
    mkdir -p "$DATA"
    cp -a "$src" "$DEST.partial"
    rm -rf "$DEST"
    mv "$DEST.partial" "$DEST"
    if ! "$DEST/bin/llvm-config" --targets-built | grep -qw NVPTX; then
        echo "setup-cuda-build: the LLVM in $DEST has no NVPTX target" >&2
        exit 1
    fi
    touch "$MARKER"
    echo "LLVM for the CUDA build installed: $DEST ($("$DEST/bin/llvm-config" --version), NVPTX built)"
fi
echo "build with: cargo build --release --features cuda"
