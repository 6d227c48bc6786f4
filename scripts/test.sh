#!/usr/bin/env bash
# Set up, then run the linters and the whole test suite (the real-data tests need
# MRIF_DATA_MIRROR; without it they are skipped and say so).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy src
.venv/bin/python -m pytest -q "$@"
