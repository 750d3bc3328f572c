#!/usr/bin/env bash
# One-GPU check of the GPU path (under 8 minutes on one H100/H200): a random-initialised usam-8b-sized model
# trained under DeepSpeed bf16 ZeRO-2 (stage 1 and stage 2: step time, tokens/s, MFU, peak memory), batched
# generation throughput at batch 1 and 32, then the `-m gpu` tests. No weights are read.
#   bash scripts/gpu_check.sh            # on a GPU machine
#   bash scripts/gpu_check.sh --cpu      # dry run on the CPU with the scaled-down model (tests/test_gpu_check.py)
# Extra arguments go to scripts/gpu_check.py (--batch, --seconds, --steps, --new-tokens, --peak-tflops).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
export TOKENIZERS_PARALLELISM=false
start=$(date +%s)
"$PYTHON" scripts/gpu_check.py "$@"
echo "== pytest -m gpu"
if [[ " $* " == *" --cpu "* ]]; then
  # the dry run checks that the gpu tests are collected and skip without CUDA
  CUDA_VISIBLE_DEVICES="" "$PYTHON" -m pytest -q -m gpu -rs tests/test_gpu.py
else
  "$PYTHON" -m pytest -q -m gpu tests/
fi
echo "gpu_check: done in $(( $(date +%s) - start )) s"
