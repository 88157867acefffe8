#!/usr/bin/env bash
# The GPU check (`make gpu-check`): on CUDA, the float64 equality tests of every engine (batched
# and looped Jacobian rows, train and eval mode), CUDA autocast (float16, bfloat16), then
# `doublebackprop bench --device cuda`. Writes gpu-tests.txt / gpu-tests.xml, bench-cuda.json and
# bench-cuda.txt (the table) to the output folder. Meant to finish within 8 minutes on one GPU.
# Not part of `make test`.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${1:-results/gpu-check}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: no CUDA device is available" >&2
    exit 3
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee "$OUT/device.txt"
status=0
timeout 240 "$PY" -m pytest -m gpu tests/engine/test_gpu.py -q -p no:cacheprovider \
    --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.txt" || status=1
timeout 300 "$PY" -m doublebackprop bench --device cuda --repeats 5 --out "$OUT" 2>&1 \
    | tee "$OUT/bench-cuda.txt" || status=1
echo "gpu-check: wrote $OUT (exit $status)"
exit $status
