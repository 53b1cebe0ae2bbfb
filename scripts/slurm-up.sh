#!/usr/bin/env bash
# Start a one-node SLURM cluster whose config and state live in the project.
#
#   scripts/slurm-up.sh            # start (or report that it is already up)
#   source .slurm/env.sh           # then sbatch/sinfo/squeue/hydra use it
#
# Everything (munge key/socket, slurm.conf, state, spool, pids, logs) lives in
# $RLHF_SLURM_DIR (default <repo>/.slurm); no system file is written.
# Run as root (slurmd must be root to launch jobs). Idempotent.
#
# Env:
#   RLHF_SLURM_DIR          cluster folder (default <repo>/.slurm)
#   RLHF_SLURMCTLD_PORT     slurmctld port (default: first free of 16817,16819,...)
#   RLHF_SLURMD_PORT        slurmd port    (default: slurmctld port + 1)
#   RLHF_SLURM_MEM_MARGIN_MB  memory kept out of RealMemory (default 1024)
#   RLHF_SLURM_TIMEOUT_S    seconds to wait for the node to be idle (default 60)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLURM_DIR="${RLHF_SLURM_DIR:-$REPO/.slurm}"
mkdir -p "$SLURM_DIR"
SLURM_DIR="$(cd "$SLURM_DIR" && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"

CONF="$SLURM_DIR/slurm.conf"
MUNGE_DIR="$SLURM_DIR/munge"          # key + seed (0700)
RUN_DIR="$SLURM_DIR/run"              # munge socket + pid files (0755: clients connect)
LOG_DIR="$SLURM_DIR/log"
STATE_DIR="$SLURM_DIR/state"
SPOOL_DIR="$SLURM_DIR/spool"
SOCKET="$RUN_DIR/munge.socket"
KEY="$MUNGE_DIR/munge.key"
MUNGE_PID="$RUN_DIR/munged.pid"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
ENV_SH="$SLURM_DIR/env.sh"
TIMEOUT_S="${RLHF_SLURM_TIMEOUT_S:-60}"
NODE="$(hostname -s)"

die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }

pid_alive() {  # pid_alive PIDFILE
  [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

node_state() {
  SLURM_CONF="$CONF" sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -1 || true
}

show_logs() {
  for f in "$LOG_DIR"/munged.log "$LOG_DIR"/slurmctld.log "$LOG_DIR"/slurmd.log; do
    [ -f "$f" ] || continue
    echo "----- tail $f -----" >&2
    tail -n 25 "$f" >&2
  done
}

print_env() {
  echo "export SLURM_CONF=$CONF"
  echo "# or: source $ENV_SH"
}

[ "$(id -u)" = 0 ] || die "must run as root (slurmd launches jobs as their owner)"
for b in munged slurmctld slurmd sinfo sbatch; do
  command -v "$b" >/dev/null 2>&1 || die "$b not found; run scripts/install-slurm.sh first"
done

# ---------------------------------------------------------------- already up?
if pid_alive "$MUNGE_PID" && pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" && [ -f "$CONF" ]; then
  st="$(node_state)"
  case "$st" in
    idle*|mix*|alloc*|comp*)
      echo "slurm-up: cluster already up (node $NODE is $st, conf $CONF)"
      print_env
      exit 0;;
  esac
fi
# Partially up or stale pid files: clean restart.
if [ -d "$RUN_DIR" ]; then
  RLHF_SLURM_DIR="$SLURM_DIR" "$REPO/scripts/slurm-down.sh" >/dev/null || true
fi

mkdir -p "$MUNGE_DIR" "$RUN_DIR" "$LOG_DIR" "$STATE_DIR" "$SPOOL_DIR"
chmod 700 "$MUNGE_DIR"
chmod 755 "$RUN_DIR"

# unix socket paths are limited to 108 bytes
[ "${#SOCKET}" -lt 100 ] || die "munge socket path too long (${#SOCKET} chars): $SOCKET; set RLHF_SLURM_DIR to a shorter folder"

# ---------------------------------------------------------------- munge
if [ ! -s "$KEY" ]; then
  RLHF_SLURM_DIR="$SLURM_DIR" RLHF_SLURM_NO_APT=1 "$REPO/scripts/install-slurm.sh" >/dev/null \
    || die "could not create munge key $KEY"
fi
rm -f "$SOCKET" "$SOCKET.lock"
munged --socket="$SOCKET" --key-file="$KEY" --pid-file="$MUNGE_PID" \
       --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
       --force 2>>"$LOG_DIR/munged.log" \
  || { show_logs; die "munged failed to start"; }
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || { show_logs; die "munge socket $SOCKET did not appear"; }
if command -v munge >/dev/null && command -v unmunge >/dev/null; then
  munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null \
    || { show_logs; die "munge round trip failed"; }
fi

# ---------------------------------------------------------------- ports
port_busy() {  # something listening on TCP port $1?
  if command -v ss >/dev/null 2>&1; then
    ss -Htln "sport = :$1" 2>/dev/null | grep -q .
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
if [ -n "${RLHF_SLURMCTLD_PORT:-}" ]; then
  CTLD_PORT="$RLHF_SLURMCTLD_PORT"
  port_busy "$CTLD_PORT" && die "RLHF_SLURMCTLD_PORT=$CTLD_PORT is in use"
else
  CTLD_PORT=16817
  while port_busy "$CTLD_PORT" || port_busy "$((CTLD_PORT + 1))"; do
    CTLD_PORT=$((CTLD_PORT + 2))
    [ "$CTLD_PORT" -lt 16900 ] || die "no free port pair in 16817-16900"
  done
fi
SLURMD_PORT="${RLHF_SLURMD_PORT:-$((CTLD_PORT + 1))}"
port_busy "$SLURMD_PORT" && die "slurmd port $SLURMD_PORT is in use"

# ---------------------------------------------------------------- node line
CPUS="$(nproc)"
MEM_TOTAL="$(free -m | awk '/^Mem:/ {print $2}')"
MARGIN="${RLHF_SLURM_MEM_MARGIN_MB:-1024}"
if [ "$MEM_TOTAL" -le $((2 * MARGIN)) ]; then MARGIN=$((MEM_TOTAL / 4)); fi
REAL_MEM=$((MEM_TOTAL - MARGIN))
# Use slurmd's own view of the topology when it agrees with nproc (so the node
# is not drained for a sockets/cores/threads mismatch); else just CPUs=.
TOPO="CPUs=$CPUS"
if C_LINE="$(slurmd -C 2>/dev/null | head -1)"; then
  c_cpus="$(sed -n 's/.*[[:space:]]CPUs=\([0-9]*\).*/\1/p' <<<"$C_LINE")"
  if [ "$c_cpus" = "$CPUS" ]; then
    TOPO="$(tr ' ' '\n' <<<"$C_LINE" \
      | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')"
  fi
fi
DEF_MEM_PER_CPU=$((REAL_MEM / CPUS)); [ "$DEF_MEM_PER_CPU" -le 1024 ] || DEF_MEM_PER_CPU=1024

# ---------------------------------------------------------------- slurm.conf
cat >"$CONF" <<CONF
# Generated by scripts/slurm-up.sh on $(date -Is); rewritten on each start.
ClusterName=rlhf
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=10
DefMemPerCPU=$DEF_MEM_PER_CPU
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 ${TOPO}RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# fix spacing if TOPO had no trailing blank
sed -i "s/^\(NodeName=.*CPUs=$CPUS\)RealMemory=/\1 RealMemory=/" "$CONF"

cat >"$ENV_SH" <<ENVSH
# source me: points SLURM clients (sbatch, squeue, sinfo, submitit) at the
# project-local cluster started by scripts/slurm-up.sh. The munge socket is
# named in slurm.conf (AuthInfo), so nothing else is needed.
export SLURM_CONF=$CONF
ENVSH

# ---------------------------------------------------------------- daemons
mkdir -p "$SPOOL_DIR/slurmd"
slurmctld -f "$CONF" 2>>"$LOG_DIR/slurmctld.log" || { show_logs; die "slurmctld failed to start"; }
slurmd -f "$CONF" 2>>"$LOG_DIR/slurmd.log" || { show_logs; die "slurmd failed to start"; }

deadline=$((SECONDS + TIMEOUT_S))
st=""
while [ "$SECONDS" -lt "$deadline" ]; do
  st="$(node_state)"
  case "$st" in idle*|mix*|alloc*) break;; esac
  sleep 1
done
case "$st" in
  idle*|mix*|alloc*) ;;
  *) show_logs
     die "node $NODE not idle after ${TIMEOUT_S}s (state: '${st:-no answer from slurmctld}'); conf $CONF";;
esac

echo "slurm-up: cluster up: node $NODE $st, slurmctld port $CTLD_PORT, slurmd port $SLURMD_PORT"
print_env
