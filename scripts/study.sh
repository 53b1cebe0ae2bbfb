#!/usr/bin/env bash
# The full embedded study (`make study`): every run of the published verdict table,
# with the project's own commands, into one MLflow experiment (`embedded-study`),
# then `python -m analysis` over it into docs/embedded_study/.
#
# Design (docs/science.md §7-9):
#   online RLOO    regularizer {entropy, kl} x coef {0.01, 0.05, 0.2} x lr {1e-4, 3e-4}
#                  x seeds {0, 1, 2}, plus regularizer=none x lr x seeds
#   oracle         the same grid with reward=gold, seeds {0, 1}
#   zero reward    reward=zero, entropy and kl at coef {0.05, 0.2}, lr 3e-4, seed 0
#   offline        simpo beta {1, 2, 4} and dpo beta {0.03, 0.1, 0.3}, lr 3e-4, seeds {0, 1}
#   online SimPO   beta {1, 2, 4}, lr 3e-4, seeds {0, 1}
#   best-of-n      one run
#
# Two lanes of sequential sweeps run side by side, one torch thread each, so both
# cores of a 2-core machine work. (The `local` submitit launcher starts every member
# of a sweep at once, with no queue: 40 processes on 2 cores.) Within each lane the
# third online seed runs last, so a study cut short loses seeds, not conditions.
# rollout=hf: on the ~0.4M-parameter embedded model HF generate is faster than vLLM
# (bench/RESULTS.md).
#
# Usage: scripts/study.sh [run|analyse|all]   (default all). Logs: study_logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EXPERIMENT=${STUDY_EXPERIMENT:-embedded-study}
LOGS=${STUDY_LOGS:-study_logs}
COMMON=(rollout=hf threads=1 tracking.experiment="$EXPERIMENT")
GRID=(regularizer=entropy,kl temperature=0.01,0.05,0.2)

sweep() {  # sweep <log name> <overrides...>: one multirun; a failed member does not stop the lane
  local name=$1; shift
  echo "[study] $(date -u +%H:%M:%S) start $name: $*"
  "$PY" launch.py -m "${COMMON[@]}" "$@" > "$LOGS/$name.log" 2>&1 \
    || echo "[study] $name: some members did not finish (see $LOGS/$name.log)"
  echo "[study] $(date -u +%H:%M:%S) done  $name"
}

lane() {  # lane <lr> <offline algo> <its betas>
  local lr=$1 offline=$2 betas=$3
  sweep "proxy-$lr-s01" seed=0,1 lr="$lr" "${GRID[@]}"
  sweep "proxy-none-$lr" seed=0,1,2 lr="$lr" regularizer=none
  sweep "oracle-$lr" seed=0,1 lr="$lr" reward=gold "${GRID[@]}"
  sweep "oracle-none-$lr" seed=0,1 lr="$lr" reward=gold regularizer=none
  sweep "$offline" seed=0,1 lr=3e-4 algo="$offline" temperature="$betas"
  sweep "proxy-$lr-s2" seed=2 lr="$lr" "${GRID[@]}"
}

run() {
  mkdir -p "$LOGS"
  (lane 1e-4 simpo 1.0,2.0,4.0
   sweep online_simpo seed=0,1 lr=3e-4 algo=online_simpo temperature=1.0,2.0,4.0) > "$LOGS/lane_a.log" 2>&1 &
  local a=$!
  (lane 3e-4 dpo 0.03,0.1,0.3
   sweep zero seed=0 lr=3e-4 reward=zero regularizer=entropy,kl temperature=0.05,0.2
   sweep bon algo=bon) > "$LOGS/lane_b.log" 2>&1 &
  local b=$!
  wait $a $b
}

analyse() {
  "$PY" -m analysis --all --experiment "$EXPERIMENT" --tracking-uri "sqlite:///$PWD/mlflow.db" --out docs/embedded_study --refresh
}

case "${1:-all}" in
  run) run ;;
  analyse) analyse ;;
  all) run; analyse ;;
  *) echo "usage: $0 [run|analyse|all]" >&2; exit 2 ;;
esac
