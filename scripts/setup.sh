#!/usr/bin/env bash
# Create .venv with mrif and its test tools. Torch is pinned first: an unpinned install pulls a
# multi-GB CUDA build; the package itself accepts any torch >= 2.2.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${MRIF_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
