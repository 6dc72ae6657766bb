#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a machine that has torch, transformers and peft but no network:
# the project's other dependencies come from the wheels of `python -m benchmarks.gpu_check pack`, installed
# into benchmarks/gpu_pack/site (nothing outside the checkout changes).
#   benchmarks/gpu_check.sh --out DIR [--device cuda] [--shape llama-1b]
set -euo pipefail
cd "$(dirname "$0")/.."
PACK=benchmarks/gpu_pack
PYTHON=${PYTHON:-python3}
if [ -d "$PACK/wheels" ] && [ ! -d "$PACK/site" ]; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$PACK/site" "$PACK"/wheels/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -d "$PACK/site" ] && export PYTHONPATH="$PYTHONPATH:$PWD/$PACK/site"
exec "$PYTHON" -m benchmarks.gpu_check run "$@"
