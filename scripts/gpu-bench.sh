#!/usr/bin/env bash
# The GPU runner's bench and gate, as one script: .github/workflows/gpu.yml calls it, and so can anyone.
#
#   1. pytest bench --profile $PROFILE (one xdist worker per GPU when there are several) with the options given
#   2. first run on a runner (no baselines/$PROFILE.json): the run records the baselines instead of failing every
#      cell, then the script exits 3 naming the file to review and commit (as pytest-regressions does)
#   3. with two run records in $HISTORY: quantfake compare previous latest ($COMPARE_OPTIONS added), which fails
#      on a significant regression (quality, latency, memory) or on a cell of the previous run that is missing,
#      skipped or errored now
#
# Usage: [PROFILE=pretrained] [HISTORY=reports/history] [BASELINES_DIR=baselines] [NUM_GPUS=N] \
#          [BENCH_PATHS="bench/test_detection.py ..."] [COMPARE_OPTIONS="--efficiency-tolerance latency_ms=0.2"] \
#          scripts/gpu-bench.sh [pytest bench options]
# Exit: 0 passed; 1 a cell failed or the gate failed; 3 baselines were created (commit them, rerun).
set -uo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-pretrained}"
PYTHON="${PYTHON:-python3}"
HISTORY="${HISTORY:-reports/history}"
BASELINES_DIR="${BASELINES_DIR:-baselines}"
BASELINES="$BASELINES_DIR/$PROFILE.json"
NUM_GPUS="${NUM_GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
XDIST=()
[ "${NUM_GPUS:-0}" -gt 1 ] && XDIST=(-n "$NUM_GPUS" --dist loadgroup)
FIRST=0
[ -f "$BASELINES" ] || FIRST=1
EXTRA=()
[ "$FIRST" = 1 ] && EXTRA=(--update-baselines)
# shellcheck disable=SC2086  # BENCH_PATHS is a list of paths
"$PYTHON" -m pytest ${BENCH_PATHS:-bench} --profile "$PROFILE" --history "$HISTORY" --baselines-dir "$BASELINES_DIR" "${XDIST[@]}" \
  "${EXTRA[@]}" "$@"
RC=$?
if [ "$FIRST" = 1 ]; then
  if [ -f "$BASELINES" ]; then
    echo "::notice::first run on this runner: baselines written to $BASELINES from this run (rc $RC)."
    echo "Review them, then: git add $BASELINES && git commit -m 'baselines ($PROFILE) from $(hostname)'; later runs gate."
    exit 3
  fi
  echo "::error::first run wrote no $BASELINES (no cell produced numbers; see above)"
  exit 1
fi
RUNS=$(ls "$HISTORY"/*.json 2>/dev/null | wc -l)
if [ "$RUNS" -ge 2 ]; then
  # shellcheck disable=SC2086  # COMPARE_OPTIONS is a list of options
  "$PYTHON" -m quantfake.cli compare previous latest --history "$HISTORY" ${COMPARE_OPTIONS:-} || RC=1
else
  echo "one run record in $HISTORY: nothing to compare against yet"
fi
exit $RC
