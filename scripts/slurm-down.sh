#!/usr/bin/env bash
# Stop the project-local SLURM cluster started by scripts/slurm-up.sh
# (slurmd, slurmctld, munged, by their pid files). Idempotent.
# Config, state and logs stay in $RLHF_SLURM_DIR (default <repo>/.slurm).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLURM_DIR="${RLHF_SLURM_DIR:-$REPO/.slurm}"
RUN_DIR="$SLURM_DIR/run"

stop() {  # stop NAME PIDFILE
  local name="$1" pidfile="$2" pid
  if [ ! -s "$pidfile" ]; then echo "slurm-down: $name not running (no pid file)"; return; fi
  pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "slurm-down: $name not running (stale pid $pid)"; rm -f "$pidfile"; return
  fi
  # guard against a recycled pid: the process must be the daemon we expect
  if [ -r "/proc/$pid/comm" ] && ! grep -q "^${name:0:15}" "/proc/$pid/comm"; then
    echo "slurm-down: pid $pid is $(cat "/proc/$pid/comm"), not $name; leaving it"; rm -f "$pidfile"; return
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "slurm-down: $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
  fi
  rm -f "$pidfile"
  echo "slurm-down: stopped $name (pid $pid)"
}

stop slurmd "$RUN_DIR/slurmd.pid"
stop slurmctld "$RUN_DIR/slurmctld.pid"
stop munged "$RUN_DIR/munged.pid"
rm -f "$RUN_DIR/munge.socket" "$RUN_DIR/munge.socket.lock"
exit 0
