#!/usr/bin/env bash
# The GPU efficiency runs (issues 3 and 5), in two stages that each fit one 10-minute device command.
#
#   scripts/gpu_efficiency.sh quick      detectors (5 x bf16/fp16/fp32 x batch 1/64, full-size architectures),
#                                        the overhead guard on the tiny pipelines (suite path vs bare diffusers
#                                        call, alternating), and a 4-cell SD1.5 smoke of the generator grid
#   scripts/gpu_efficiency.sh grid       full-size denoisers with random weights (profile "random") for
#                                        flux, sdxl, sd3, sd35, sd15 x fp32 fp16 bf16 fp8 int8 nf4 fp4 fp8dq
#                                        int8wo, then torch.compile for bf16 and fp8dq on sdxl, sd3, flux
#   scripts/gpu_efficiency.sh            both, one after the other
#
# Sizing: each generator runs at its native resolution (SD1.5 512x512; SDXL, SD3, SD3.5, Flux 1024x1024),
# one image per step (two denoiser rows under CFG, one for Flux-dev's embedded guidance), warm-up 1 + 3
# timed steps + 2 pytest-benchmark rounds. fp32 runs with TF32 matmuls allowed (QUANTFAKE_TF32=1; every
# cell records float32_matmul_precision). QUANTFAKE_EFFIC_DEADLINE makes cells past the time box skip with
# a reason, so the JSON is always written. Flux goes first: the largest model and the study's focus.
#
# Usage (repository root, on the GPU machine):  OUT=/some/dir scripts/gpu_efficiency.sh [quick|grid]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
STAGE="${1:-all}"
case "$STAGE" in quick|grid|all) ;; *) echo "unknown stage '$STAGE'; accepted: quick, grid, all" >&2; exit 2;; esac
mkdir -p "$OUT"
START=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export QUANTFAKE_TF32=1 PYTHONUNBUFFERED=1
STORE="${QUANTFAKE_STORE:-/tmp/quantfake-store}"
COMMON=(-p no:cacheprovider -q -rs --device cuda --store "$STORE" --no-report)
GRID_PRECISIONS=fp32,fp16,bf16,fp8,int8,nf4,fp4,fp8dq,int8wo
RC=0
step() {  # step NAME DEADLINE_OFFSET_S PYTEST_ARGS...: one pytest invocation writing $OUT/NAME.json
  local name=$1 offset=$2; shift 2
  QUANTFAKE_EFFIC_DEADLINE=$((START + offset)) python3 -m pytest bench/test_efficiency.py "${COMMON[@]}" "$@" \
    --benchmark-json "$OUT/$name.json"
  local rc=$?
  echo "== $name: rc=$rc at +$(( $(date +%s) - START )) s"
  [ "$rc" -ne 0 ] && RC=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true

if [ "$STAGE" = quick ] || [ "$STAGE" = all ]; then
  step effic_detectors 240 --profile random -k effic-det
  step effic_overhead 330 --profile tiny -k overhead --generators sd15,sdxl,sd3,flux --precisions fp32
  step effic_smoke 420 --profile random -k test_generator_efficiency --generators sd15 --precisions bf16,nf4,int8,fp8dq
fi
if [ "$STAGE" = all ]; then START=$(date +%s); fi  # the grid gets its own time box
if [ "$STAGE" = grid ] || [ "$STAGE" = all ]; then
  step effic_random 400 --profile random -k test_generator_efficiency \
    --generators flux,sdxl,sd3,sd35,sd15 --precisions "$GRID_PRECISIONS"
  step effic_random_compile 550 --profile random --compile --generators sdxl,sd3,flux --precisions bf16,fp8dq
fi

echo "stage $STAGE: rc=$RC, JSON in $OUT"
exit "$RC"
