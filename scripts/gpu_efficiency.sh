#!/usr/bin/env bash
# One H100 efficiency run: full-size denoisers with random weights (profile "random"), every precision,
# then torch.compile for the precisions where it matters. Results: pytest-benchmark JSON under $OUT.
#
# Sizing (one device command is capped at 10 minutes): each generator runs at its native resolution
# (SD1.5 512x512; SDXL, SD3, SD3.5, Flux 1024x1024), one image per step (two denoiser rows under CFG,
# one for Flux-dev's embedded guidance), warm-up 1 + 3 timed steps + 2 pytest-benchmark rounds.
# fp32 runs with TF32 matmuls allowed (QUANTFAKE_TF32=1; every cell records float32_matmul_precision).
# QUANTFAKE_EFFIC_DEADLINE makes cells past the time box skip with a reason, so the JSON is always written:
# the eager grid gets until +400 s, the compile cells (minutes of inductor each) until +540 s.
# Flux goes first in the eager grid: it is the largest model and the one the study cares most about.
#
# Usage (repository root, on the GPU machine):  OUT=/some/dir scripts/gpu_efficiency.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
mkdir -p "$OUT"
START=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export QUANTFAKE_TF32=1
STORE="${QUANTFAKE_STORE:-/tmp/quantfake-store}"
COMMON=(-p no:cacheprovider -q -rs --profile random --device cuda --store "$STORE" --no-report)

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

QUANTFAKE_EFFIC_DEADLINE=$((START + 400)) python3 -m pytest bench/test_efficiency.py "${COMMON[@]}" \
  --generators flux,sdxl,sd3,sd35,sd15 --precisions fp32,fp16,bf16,fp8,int8,nf4,fp4,fp8dq,int8wo \
  --benchmark-json "$OUT/effic_random.json"
EAGER_RC=$?

QUANTFAKE_EFFIC_DEADLINE=$((START + 540)) python3 -m pytest bench/test_efficiency.py "${COMMON[@]}" \
  --compile --generators sdxl,sd3,flux --precisions bf16,fp8dq \
  --benchmark-json "$OUT/effic_random_compile.json"
COMPILE_RC=$?

echo "eager rc=$EAGER_RC compile rc=$COMPILE_RC, $(( $(date +%s) - START )) s in all; JSON in $OUT"
exit $(( EAGER_RC != 0 ? EAGER_RC : COMPILE_RC ))
