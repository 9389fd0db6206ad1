#!/usr/bin/env bash
# Issue 20 on a GPU: the shipped backends at full size (random profile) next to bf16 of the same run.
#
#   eager    $GENERATORS x bf16 quanto-int8 quanto-int4 quanto-fp8 q8_0 q5_0 q4_0 fp8rw (efficiency cells: one
#            denoiser step, end to end s/image, peak VRAM, weight bytes, the GGUF source per component); fp8rw is
#            meant to run compiled, so its compiled cell (effic-<g>-fp8rw-compile, with compile_s) runs here too
#   compile  $COMPILE_CELLS (default flux:bf16) under torch.compile, one process per cell: the compiled bf16
#            that compiled fp8rw must also beat
#   table    scripts/effic_table.py over $OUT: "vs bf16" of "fp8rw +compile" is compiled fp8rw / eager bf16
#   fidelity (not in the default) $FID_GENERATORS (default sd3) x the same precisions, $FID_IMAGES txt2img images
#            each: PSNR / SSIM against bf16 (the reference when fp32 is not asked for), same seeds
#
# --steps $STEPS (default 4) keeps each end-to-end image short; step latency is measured per denoiser step.
# GGUF on the random profile is quantized on the GPU (torch port of gguf's quantizers, byte-identical, tested)
# and handed to diffusers' from_single_file as a state dict; GGUFLinear dequantizes per call (no ggml kernels).
#
# Usage (repository root, on the GPU machine):  OUT=/some/dir [GENERATORS=flux,sd3] scripts/gpu_backends.sh [stage ...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu_backends}"
GENERATORS="${GENERATORS:-flux,sd3}"
PRECISIONS="${PRECISIONS:-bf16,quanto-int8,quanto-int4,quanto-fp8,q8_0,q5_0,q4_0,fp8rw}"
COMPILE_CELLS="${COMPILE_CELLS:-flux:bf16}"
COMPILE_TIMEOUT_S="${COMPILE_TIMEOUT_S:-200}"
STEPS="${STEPS:-4}"
BUDGET_S="${BUDGET_S:-560}"
STAGES=("${@:-eager compile table}")
mkdir -p "$OUT"
START=$(date +%s)

if compgen -G ".whl/*.whl" > /dev/null; then
  # installed once per machine: a second job beside this one may be importing from /tmp/site
  [ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1
STORE="${QUANTFAKE_STORE:-/tmp/quantfake-store}"
COMMON=(-p no:cacheprovider -q -rs --device cuda --store "$STORE" --no-report --profile random --steps "$STEPS")
RC=0
step() {  # step NAME RESERVE_S KILL_AFTER_S PYTEST_ARGS...: one pytest run writing $OUT/NAME.json (0 = no kill)
  local name=$1 reserve=$2 kill_after=$3; shift 3
  QUANTFAKE_EFFIC_DEADLINE=$((START + BUDGET_S - reserve)) timeout -s INT -k 20 "$kill_after" python3 -m pytest \
    bench/test_efficiency.py "${COMMON[@]}" -k test_generator_efficiency "$@" --benchmark-json "$OUT/$name.json"
  local rc=$?
  echo "== $name: rc=$rc at +$(( $(date +%s) - START )) s"
  [ "$rc" -ne 0 ] && RC=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
for stage in ${STAGES[*]}; do
  case "$stage" in
    eager) for g in ${GENERATORS//,/ }; do step "eager_$g" 40 0 --generators "$g" --precisions "$PRECISIONS"; done;;
    compile) for cell in ${COMPILE_CELLS//,/ }; do
               g=${cell%%:*} p=${cell#*:}
               if [ $(( $(date +%s) + COMPILE_TIMEOUT_S )) -gt $(( START + BUDGET_S )) ]; then
                 echo "== compile $g $p: skipped, less than COMPILE_TIMEOUT_S=$COMPILE_TIMEOUT_S s of the budget left"
                 continue
               fi
               step "compile_${g}_$p" 0 "$COMPILE_TIMEOUT_S" --compile --generators "$g" --precisions "$p"
             done;;
    table) python3 scripts/effic_table.py "$OUT" || RC=$?;;
    fidelity) python3 -m pytest bench/test_fidelity.py "${COMMON[@]}" --generators "${FID_GENERATORS:-sd3}" \
                --precisions "$PRECISIONS" --modes txt2img --n-images "${FID_IMAGES:-4}" \
                --baselines-dir "$OUT/baselines" --update-baselines || RC=$?;;  # numbers: $OUT/baselines/random.json
    *) echo "unknown stage '$stage'; accepted: eager compile table fidelity" >&2; exit 2;;
  esac
done
echo "stages ${STAGES[*]}: rc=$RC, JSON in $OUT"
exit "$RC"
