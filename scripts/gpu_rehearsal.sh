#!/usr/bin/env bash
# The full-size rehearsal on a GPU (issue 15): whole random pipelines and detectors, no download.
#
#   smoke      scripts/rehearsal_smoke.py: one image per generator x precision, and the sd3 model root saved
#              and read back through the pretrained loader (diffusers quantize-at-load)
#   detect     pytest bench (detection + fidelity cells) --profile random for $GENERATORS x $PRECISIONS x
#              $MODES x every detector, $N_IMAGES images a cell, native size and steps; detectors read from a
#              random --weights-dir written by `quantfake make-random-weights`
#   effic      pytest bench/test_efficiency.py --profile random: step, end-to-end s/image at batch 1 and 4,
#              images/hour, peak VRAM, load time; the overhead guard (suite vs bare diffusers, alternating)
#   compare    quantfake report latest + quantfake compare on the two newest run records
#
# Usage (repository root, on the GPU machine; wheels in .whl/ as in the device README):
#   OUT=/some/dir [GENERATORS=sd3] [PRECISIONS=bf16,nf4] [STAGE_TIMEOUT_S=300] scripts/gpu_rehearsal.sh smoke detect
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"
GENERATORS="${GENERATORS:-sd3}"
PRECISIONS="${PRECISIONS:-bf16,nf4}"
MODES="${MODES:-txt2img,img2img}"
N_IMAGES="${N_IMAGES:-8}"
STAGE_TIMEOUT_S="${STAGE_TIMEOUT_S:-300}"
TAG="${TAG:-$(echo "$GENERATORS" | tr ',' '_')}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null && [ ! -d /tmp/site/diffusers ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export QUANTFAKE_STORE="${QUANTFAKE_STORE:-$PWD/.quantfake-gpu}"
WEIGHTS=/tmp/qf-random-weights
COMMON=(-p no:cacheprovider -q -rfEs --profile random --device cuda --grid full --generators "$GENERATORS"
        --precisions "$PRECISIONS" --history "$PWD/reports/history")
RC=0
stage() {  # stage NAME COMMAND...: run under the stage timeout, log to $OUT/NAME.log
  local name=$1; shift
  echo "== $name ($(date +%T))"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=30 "$STAGE_TIMEOUT_S" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc in $((SECONDS - t0)) s"; tail -n 25 "$OUT/$name.log"
  [ $rc -eq 0 ] || RC=$rc
}
for s in "${@:-smoke detect}"; do
  case "$s" in
    smoke) stage smoke python3 scripts/rehearsal_smoke.py --generators "$GENERATORS" --precisions "$PRECISIONS" \
             --out "$OUT/rehearsal_smoke_$TAG.json";;
    detect) python3 -m quantfake.cli make-random-weights --root "$WEIGHTS" > "$OUT/weights.log" 2>&1 || RC=1
            stage "detect_$TAG" python3 -m pytest bench/test_detection.py bench/test_fidelity.py "${COMMON[@]}" \
              --modes "$MODES" --detectors all --n-images "$N_IMAGES" --weights-dir "$WEIGHTS" ${EXTRA:-};;
    effic) stage "effic_$TAG" python3 -m pytest bench/test_efficiency.py "${COMMON[@]}" -k "not effic-det" \
             --benchmark-json "$OUT/effic_random_e2e_$TAG.json" --no-report;;
    compare) stage compare bash -c "python3 -m quantfake.cli report latest && python3 -m quantfake.cli compare previous latest";;
    *) echo "unknown stage '$s'; accepted: smoke detect effic compare" >&2; exit 2;;
  esac
done
cp reports/history/*.json "$OUT/" 2>/dev/null
cp baselines/random.json "$OUT/baselines_random.json" 2>/dev/null
exit $RC
