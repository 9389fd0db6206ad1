#!/usr/bin/env bash
# The GPU efficiency runs (issues 3 and 5), as stages that fit 10-minute device commands.
#
#   detectors  5 detectors x bf16/fp16/fp32 x batch 1/64, full-size architectures, random init
#   overhead   the overhead guard on the tiny pipelines at 28 steps (suite path vs bare diffusers call,
#              alternating; a 64 px tiny image is ~10 ms of GPU work per step, so 28 steps is the shortest
#              realistic call; the fixed per-image cost is recorded as overhead_ms_per_image)
#   smoke      4 SD1.5 cells of the generator grid (bf16 nf4 int8 fp8dq): a quick check before the grid
#   eager      full-size denoisers with random weights (profile "random") for $GENERATORS x fp32 fp16 bf16
#              fp8 int8 nf4 fp4 fp8dq int8wo, one JSON per generator
#   compile    torch.compile for $COMPILE_PRECISIONS on $COMPILE_GENERATORS (or the generator:precision list
#              $COMPILE_CELLS, in its order, e.g. sdxl:nf4,flux:nf4), one process and JSON per cell,
#              interrupted after COMPILE_TIMEOUT_S (SIGINT, so pytest prints where the compile was). On the
#              H100 the first compiled call took 17-124 s (SDXL bf16 17 s, Flux bf16 73 s, SDXL nf4 124 s,
#              SD1.5 int8wo 63 s), while SDXL/Flux int8wo and SDXL fp8dq were still compiling after 180 s
#   quick      = detectors overhead smoke;   grid = eager compile;   default: quick grid
#
# Sizing: each generator runs at its native resolution (SD1.5 512x512; SDXL, SD3, SD3.5, Flux 1024x1024),
# one image per step (two denoiser rows under CFG, one for Flux-dev's embedded guidance), warm-up 1 + 3
# timed steps + 2 pytest-benchmark rounds. fp32 runs with TF32 matmuls allowed (QUANTFAKE_TF32=1; every
# cell records float32_matmul_precision). QUANTFAKE_EFFIC_DEADLINE makes cells past the time box skip with
# a reason, so each JSON is always written: a step stops starting cells once BUDGET_S (default 560 s from
# the script's start) minus its longest cell (40 s eager) has passed; a compile cell starts only when
# COMPILE_TIMEOUT_S still fits in the budget.
#
# Usage (repository root, on the GPU machine):
#   OUT=/some/dir [GENERATORS=flux,sdxl] [BUDGET_S=560] scripts/gpu_efficiency.sh [stage ...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
GENERATORS="${GENERATORS:-flux,sdxl,sd3,sd35,sd15}"
COMPILE_GENERATORS="${COMPILE_GENERATORS:-sdxl,flux,sd3}"
COMPILE_PRECISIONS="${COMPILE_PRECISIONS:-bf16,nf4,int8wo}"
COMPILE_TIMEOUT_S="${COMPILE_TIMEOUT_S:-240}"  # inductor on a quantized model can autotune for many minutes
BUDGET_S="${BUDGET_S:-560}"
STAGES=()
for s in "${@:-quick grid}"; do
  for t in $s; do
    case "$t" in
      quick) STAGES+=(detectors overhead smoke);;
      grid) STAGES+=(eager compile);;
      detectors|overhead|smoke|eager|compile) STAGES+=("$t");;
      *) echo "unknown stage '$t'; accepted: detectors overhead smoke eager compile quick grid" >&2; exit 2;;
    esac
  done
done
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
step() {  # step NAME RESERVE_S KILL_AFTER_S PYTEST_ARGS...: one pytest run writing $OUT/NAME.json (0 = no kill)
  local name=$1 reserve=$2 kill_after=$3; shift 3
  # SIGINT first: pytest then prints where it was (a stuck compile's traceback); SIGKILL 20 s later
  QUANTFAKE_EFFIC_DEADLINE=$((START + BUDGET_S - reserve)) timeout -s INT -k 20 "$kill_after" python3 -m pytest bench/test_efficiency.py \
    "${COMMON[@]}" "$@" --benchmark-json "$OUT/$name.json"
  local rc=$?
  echo "== $name: rc=$rc at +$(( $(date +%s) - START )) s"
  [ "$rc" -ne 0 ] && RC=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
for stage in "${STAGES[@]}"; do
  case "$stage" in
    detectors) step effic_detectors 30 0 --profile random -k effic-det;;
    overhead) step effic_overhead 20 0 --profile tiny -k overhead --generators sd15,sdxl,sd3,flux --precisions fp32 \
                --steps 28;;
    smoke) step effic_smoke 30 0 --profile random -k test_generator_efficiency --generators sd15 \
             --precisions bf16,nf4,int8,fp8dq;;
    eager) for g in ${GENERATORS//,/ }; do
             step "effic_random_$g" 40 0 --profile random -k test_generator_efficiency --generators "$g" \
               --precisions "$GRID_PRECISIONS"
           done;;
    compile) cells="${COMPILE_CELLS:-}"
             if [ -z "$cells" ]; then
               for g in ${COMPILE_GENERATORS//,/ }; do
                 for p in ${COMPILE_PRECISIONS//,/ }; do cells+="${cells:+,}$g:$p"; done
               done
             fi
             for cell in ${cells//,/ }; do  # one process per cell: a stuck compile loses one cell
               g=${cell%%:*} p=${cell#*:}
               if [ $(( $(date +%s) + COMPILE_TIMEOUT_S )) -gt $(( START + BUDGET_S )) ]; then
                 echo "== compile $g $p: skipped, less than COMPILE_TIMEOUT_S=$COMPILE_TIMEOUT_S s of the budget left"
                 continue
               fi
               step "effic_random_compile_${g}_$p" 0 "$COMPILE_TIMEOUT_S" --profile random \
                 --compile --generators "$g" --precisions "$p"
             done;;
  esac
done

echo "stages ${STAGES[*]}: rc=$RC, JSON in $OUT"
exit "$RC"
