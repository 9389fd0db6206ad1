#!/usr/bin/env bash
# Which generators x precisions fit a 24 GiB card, with which memory fit, at what s/image (issue 15, Build 4).
#
# One stage per generator: the efficiency cells (bench/test_efficiency.py::test_generator_efficiency) of
# $GENERATORS x $PRECISIONS on the full-size random pipelines under --vram-budget $BUDGET_GIB, which picks each
# cell's recipe (as is / VAE slicing or tiling / model or sequential CPU offload) from its weight bytes and caps
# torch's CUDA allocator at the budget (set_per_process_memory_fraction), so a 24 GiB card is rehearsed on an 80 GiB
# H100. A cell is timed at batch 1 end to end (encode + $STEPS denoising steps + decode: fewer than the native 28-50
# to keep the run short; the summary adds the remaining steps at the measured step time, labelled as an estimate);
# E2E_BATCHES=4 adds batch 4 where the estimate fits it. Each stage runs under a timeout (Flux 200 s, others 150 s,
# or $STAGE_TIMEOUT_S for all) and a deadline a cell before it, so its JSON is still written; a cell that runs out
# of memory or fits no recipe is red and recorded, and the others go on. Expected: about 5-7 minutes on an H100.
#
# Writes $OUT/vram_budget_<generator>.json (pytest-benchmark), $OUT/vram_budget.log (every stage's output),
# $OUT/stages.tsv, $OUT/vram_budget_summary.json (the fit, estimate vs measured peak GiB, s/image per cell) and
# prints the summary table. Exit status: 0 when every
# stage passed, else the last failing stage's.
#
# Usage (repository root; on the GPU machine with the wheels in .whl/ as in the device README):
#   OUT=/some/dir [GENERATORS=flux,sd35l,sd3] [PRECISIONS=bf16,fp8,nf4] [BUDGET_GIB=24] [STEPS=4] [E2E_BATCHES=]
#     [STAGE_TIMEOUT_S=...] [CELL_RESERVE_S=50] [PROFILE=random] [DEVICE=cuda] [PYTHON=python3]
#     scripts/vram_budget_rehearsal.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-reports/vram_budget}"
GENERATORS="${GENERATORS:-flux,sd35l,sd3}"
PRECISIONS="${PRECISIONS:-bf16,fp8,nf4}"
BUDGET_GIB="${BUDGET_GIB:-24}"
STEPS="${STEPS:-4}"
CELL_RESERVE_S="${CELL_RESERVE_S:-50}"  # no cell starts later than this before its stage's timeout
PROFILE="${PROFILE:-random}"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null && [ ! -d /tmp/site/diffusers ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export QUANTFAKE_E2E_BATCHES="${E2E_BATCHES:-}"  # batch 1 only unless asked
STORE="${QUANTFAKE_STORE:-/tmp/quantfake-vram-store}"
: > "$OUT/stages.tsv"; : > "$OUT/vram_budget.log"
RC=0
JSONS=()
for g in ${GENERATORS//,/ }; do
  json="$OUT/vram_budget_$g.json"
  JSONS+=("$json")
  echo "== $g ($(date +%T)): $PRECISIONS under --vram-budget $BUDGET_GIB, $STEPS steps"
  t0=$SECONDS
  case "$g" in flux*) limit=${STAGE_TIMEOUT_S:-200};; *) limit=${STAGE_TIMEOUT_S:-150};; esac
  QUANTFAKE_EFFIC_DEADLINE=$(( $(date +%s) + limit - CELL_RESERVE_S )) \
    timeout --signal=INT --kill-after=20 "$limit" \
    "$PYTHON" -m pytest bench/test_efficiency.py::test_generator_efficiency -p no:cacheprovider -q -rfEs \
      --profile "$PROFILE" --device "$DEVICE" --grid full --generators "$g" --precisions "$PRECISIONS" \
      --vram-budget "$BUDGET_GIB" --steps "$STEPS" --store "$STORE" --history "$STORE/history" --no-report \
      --benchmark-json "$json" > "$OUT/stage.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$g" "$rc" "$((SECONDS - t0))" >> "$OUT/stages.tsv"
  { echo "== $g rc=$rc"; cat "$OUT/stage.log"; } >> "$OUT/vram_budget.log"
  echo "== $g rc=$rc in $((SECONDS - t0)) s"; tail -n 8 "$OUT/stage.log"
  [ $rc -eq 0 ] || RC=$rc
done
rm -f "$OUT/stage.log"
"$PYTHON" scripts/vram_budget_summary.py "${JSONS[@]}" --stages "$OUT/stages.tsv" --out "$OUT/vram_budget_summary.json" \
  || { [ $RC -ne 0 ] || RC=1; }
exit $RC
