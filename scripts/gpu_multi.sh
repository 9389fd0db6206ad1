#!/usr/bin/env bash
# One GPU against all GPUs on the rehearsal grid (issue 17), in one machine session:
#   1. serial:   pytest bench/test_detection.py -n 0 on a fresh store
#   2. parallel: the same with -n $NGPU --dist loadgroup on another fresh store (one worker per GPU)
#   3. the two run records compared cell by cell (metrics bitwise, generation keys), and each worker's timeline
# Usage (repository root, GPU host, wheels in .whl/): OUT=/dir [GENERATORS=sd3,sdxl] [PRECISIONS=bf16,nf4]
#   [N_IMAGES=16] [DETECTORS=all] scripts/gpu_multi.sh
#   The tiny grid of issue 17 (48 cells): PROFILE=tiny GENERATORS=sd3,sdxl,flux,sd15 PRECISIONS=fp32,bf16,nf4,int8
#   DETECTORS=npr,r50nodown,clipd N_IMAGES=8 scripts/gpu_multi.sh (tiny detectors are trained, no weights dir).
#   DEVICE=cpu NGPU=2 runs the same on a CPU (a check of the script): the workers split the cores
#   (--cpu-affinity auto); the thread count keys CPU images, so the records match the serial run's only at the
#   same count (on 2 cores, OMP_NUM_THREADS=1: one thread a worker and one for the serial run).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/gpu}"; mkdir -p "$OUT"
GENERATORS="${GENERATORS:-sd3,sdxl}"; PRECISIONS="${PRECISIONS:-bf16,nf4}"; N_IMAGES="${N_IMAGES:-16}"
PROFILE="${PROFILE:-random}"; DEVICE="${DEVICE:-cuda}"; DETECTORS="${DETECTORS:-all}"; PYTHON="${PYTHON:-python3}"
NGPU="${NGPU:-$(nvidia-smi --list-gpus | wc -l)}"; STAGE_TIMEOUT_S="${STAGE_TIMEOUT_S:-280}"
if [ "$DEVICE" != cpu ] && compgen -G ".whl/*.whl" > /dev/null && [ ! -d /tmp/site/diffusers ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
ARGS=(bench/test_detection.py -p no:cacheprovider -q -rfEs --profile "$PROFILE" --grid full --device "$DEVICE"
      --generators "$GENERATORS" --precisions "$PRECISIONS" --modes txt2img --detectors "$DETECTORS"
      --n-images "$N_IMAGES" --update-baselines --no-report)
if [ "$PROFILE" = random ]; then
  WEIGHTS=/tmp/qf-random-weights
  "$PYTHON" -m quantfake.cli make-random-weights --root "$WEIGHTS" > "$OUT/weights.log" 2>&1
  ARGS+=(--weights-dir "$WEIGHTS")
fi
for run in serial parallel; do
  extra=(); [ "$run" = parallel ] && extra=(-n "$NGPU" --dist loadgroup)
  rm -rf "/tmp/qf-$run"; t0=$(date +%s.%N)
  QUANTFAKE_STORE="/tmp/qf-$run" timeout --signal=INT "$STAGE_TIMEOUT_S" "$PYTHON" -m pytest "${ARGS[@]}" "${extra[@]}" \
    --history "/tmp/qf-$run/history" --baselines-dir "/tmp/qf-$run/baselines" > "$OUT/$run.log" 2>&1
  echo "$run rc=$? wall_s=$("$PYTHON" -c "import time; print(round(time.time() - $t0, 1))")" | tee -a "$OUT/walls.txt"
  tail -n 3 "$OUT/$run.log"
  cp /tmp/qf-$run/history/*.json "$OUT/record_$run.json" 2>/dev/null
  "$PYTHON" scripts/worker_timeline.py "$OUT/record_$run.json" | tee "$OUT/timeline_$run.txt"
done
"$PYTHON" - "$OUT/record_serial.json" "$OUT/record_parallel.json" <<'PY' | tee "$OUT/equality.txt"
import json, sys
a, b = ({c["cell_id"]: c for c in json.load(open(p))["cells"]} for p in sys.argv[1:3])
same = [k for k in a if k in b and a[k]["metrics"] == b[k]["metrics"] and a[k]["ci95"] == b[k]["ci95"]]
keys = [k for k in a if k in b and a[k]["extra"].get("generation_key") == b[k]["extra"].get("generation_key")]
print(f"cells serial {len(a)} parallel {len(b)}; metrics+CIs bitwise equal {len(same)}; same generation keys {len(keys)}")
for k in sorted(set(a) ^ set(b)): print("only in one run:", k)
for k in sorted(k for k in a if k in b and k not in same): print("differs:", k)
PY
