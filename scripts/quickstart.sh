#!/usr/bin/env bash
# Set up, then train MRIF-attn on Amazon Beauty with the paper's defaults and print its metrics.
# Offline: export MRIF_DATA_MIRROR=/path/to/a/mirror (laid out like the data mirror described in
# the README) before running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mrif train --data amazon-beauty --model mrif-attn --out runs/amazon-beauty-mrif-attn \
    --overwrite "$@"
