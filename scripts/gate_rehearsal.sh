#!/usr/bin/env bash
# The GPU runner's gate, rehearsed (issue 16): scripts/gpu-bench.sh run as CI runs it, then three planted faults.
#
#   1 first    no baselines yet: the run records them, gpu-bench.sh must exit 3
#   2 second   the same run again: gated against the baselines and the first record, must exit 0
#   3 jpeg     the fakes of one precision read back JPEG q30 (tests/plugins/jpeg_fakes.py): must exit 1 with a
#              REGRESSION row of a cell of that precision
#   4 dropped  one cell left out of the run (tests/plugins/drop_cell.py): must exit 1 naming it lost
#   5 slow     one efficiency cell SLOW_MS slower per call (tests/plugins/slow_cell.py): must exit 1 with a
#              REGRESSION row of its latency
# Each fault runs on a copy of the history after step 2, so it is compared with the clean run, not with another
# fault. Targets default to ones read from the clean run's record (scripts/gate_targets.py); baselines and history
# go under $OUT, never into the checkout.
#
# Usage: OUT=/some/dir [PROFILE=tiny] [PYTHON=python3] [JPEG_PRECISION=nf4] [DROP_CELL=<cell id>]
#        [SLOW_CELL=effic-sd3-nf4] [SLOW_MS=200] [BENCH_PATHS=...] scripts/gate_rehearsal.sh [pytest bench options]
# Logs: $OUT/<step>.log; one line per step in $OUT/summary.txt. Exit 0 only when every step did what it must.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:?set OUT to a folder for the logs, baselines and history}"
PYTHON="${PYTHON:-python3}"
export PROFILE="${PROFILE:-tiny}" PYTHON NUM_GPUS="${NUM_GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
export BASELINES_DIR="$OUT/baselines" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
SLOW_MS="${SLOW_MS:-200}"
mkdir -p "$OUT"
rm -rf "$OUT/baselines" "$OUT"/history* "$OUT/benchmarks" "$OUT/summary.txt"
ARGS=("$@" "--benchmark-storage=file://$OUT/benchmarks")
FAILED=0

bench() {  # bench STEP HISTORY [extra pytest options]: one gpu-bench.sh run, logged; sets RC and LOG
  local step=$1 history=$2; shift 2
  LOG="$OUT/$step.log"
  echo "== $step ($(date +%T))"
  local t0=$SECONDS
  HISTORY="$history" scripts/gpu-bench.sh "${ARGS[@]}" "$@" > "$LOG" 2>&1
  RC=$?
  echo "   exit $RC in $((SECONDS - t0)) s; log $LOG"
}
verdict() {  # verdict STEP OK WHAT
  local line="$1: $([ "$2" = 1 ] && echo PASS || echo FAIL) - $3"
  echo "   $line"; echo "$line" >> "$OUT/summary.txt"
  [ "$2" = 1 ] || FAILED=1
}
table() {  # the gate's table rows of a log, for the summary on screen
  grep -E "REGRESSION|missing from the new run|skipped in the new run|error in the new run" "$LOG" | head -n 8 | sed 's/^/   | /'
}

bench first "$OUT/history"
verdict first "$([ $RC = 3 ] && [ -f "$BASELINES_DIR/$PROFILE.json" ] && echo 1)" \
  "exit $RC (want 3: baselines written to $BASELINES_DIR/$PROFILE.json)"
bench second "$OUT/history"
verdict second "$([ $RC = 0 ] && grep -q "0 significant regression(s)" "$LOG" && echo 1)" \
  "exit $RC (want 0: gated against the baselines and the first run, nothing flagged)"
CLEAN=$(ls "$OUT"/history/*.json 2>/dev/null | tail -n 1)
[ -n "$CLEAN" ] || { echo "no run record in $OUT/history"; exit 1; }
eval "$("$PYTHON" scripts/gate_targets.py "$CLEAN" | sed 's/^\([A-Z_]*\)=/\1=${\1:-/; s/$/}/')"  # given targets win
echo "   targets: JPEG_PRECISION=$JPEG_PRECISION DROP_CELL=$DROP_CELL SLOW_CELL=$SLOW_CELL SLOW_MS=$SLOW_MS"

fault() {  # fault STEP PLUGIN: the clean history copied, then one run with the test plugin
  rm -rf "$OUT/history_$1" && cp -r "$OUT/history" "$OUT/history_$1"
  bench "$1" "$OUT/history_$1" -p "tests.plugins.$2"
}
if [ -n "$JPEG_PRECISION" ]; then
  QF_TEST_JPEG_PRECISION="$JPEG_PRECISION" fault jpeg jpeg_fakes
  verdict jpeg "$([ $RC = 1 ] && grep -E "^[^ ]*-$JPEG_PRECISION-[^ ]* .*REGRESSION" "$LOG" | grep -qv "^effic-" && echo 1)" \
    "exit $RC (want 1 and a REGRESSION row of a $JPEG_PRECISION cell)"; table
else verdict jpeg 0 "no quantized precision compared with a reference in the clean run"; fi
if [ -n "$DROP_CELL" ]; then
  QF_TEST_DROP_CELL="$DROP_CELL" fault dropped drop_cell
  verdict dropped "$([ $RC = 1 ] && grep -qE "^$DROP_CELL +missing from the new run" "$LOG" && echo 1)" \
    "exit $RC (want 1 and $DROP_CELL named lost)"; table
else verdict dropped 0 "no detection or fidelity cell passed in the clean run"; fi
if [ -n "$SLOW_CELL" ]; then
  QF_TEST_SLOW_CELL="$SLOW_CELL" QF_TEST_SLOW_MS="$SLOW_MS" fault slow slow_cell
  verdict slow "$([ $RC = 1 ] && grep -qE "^$SLOW_CELL +latency_ms .*REGRESSION" "$LOG" && echo 1)" \
    "exit $RC (want 1 and a latency_ms REGRESSION row of $SLOW_CELL)"; table
else verdict slow 0 "no efficiency step cell in the clean run"; fi
echo "== summary ($OUT/summary.txt)"; cat "$OUT/summary.txt"
exit $FAILED
