#!/usr/bin/env bash
# Install a one-node SLURM toolchain (Debian/Ubuntu packages) and make sure a
# munge key exists for the project-local cluster started by slurm-up.sh.
#
# Idempotent: does nothing but the key check when everything is present.
# Touches no system config file: the munge key is project-local
# ($RLHF_SLURM_DIR/munge/munge.key, default <repo>/.slurm).
#
# Env:
#   RLHF_SLURM_DIR     cluster folder (default: <repo>/.slurm)
#   RLHF_SLURM_NO_APT  if set to 1, never call apt-get (fail instead)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLURM_DIR="${RLHF_SLURM_DIR:-$REPO/.slurm}"

need=(slurmctld slurmd sbatch sinfo munged)
missing=()
for b in "${need[@]}"; do
  # daemons live in /usr/sbin, which a non-login root shell may not have on PATH
  if ! command -v "$b" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$b" ]; then
    missing+=("$b")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-slurm: missing: ${missing[*]}"
  if [ "${RLHF_SLURM_NO_APT:-0}" = 1 ]; then
    echo "install-slurm: RLHF_SLURM_NO_APT=1, not installing" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-slurm: no apt-get; install slurmctld, slurmd, slurm-client and munge by hand" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "install-slurm: need root (or sudo) to apt-get install" >&2; exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update
  # Note: on a systemd host the packages enable (and may start) the system
  # munge/slurmd/slurmctld services; slurm-up.sh uses none of them (own
  # config, key, socket, ports), so they can stay or be disabled.
  $SUDO apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
else
  echo "install-slurm: slurm and munge already installed"
fi

# Project-local munge key (never overwrite /etc/munge/munge.key).
KEY="$SLURM_DIR/munge/munge.key"
if [ ! -s "$KEY" ]; then
  mkdir -p "$SLURM_DIR/munge"
  chmod 700 "$SLURM_DIR/munge"
  rm -f "$KEY"
  if command -v mungekey >/dev/null 2>&1 || [ -x /usr/sbin/mungekey ]; then
    PATH="$PATH:/usr/sbin" mungekey --create --keyfile="$KEY" --bits=1024
  else
    dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
  fi
  chmod 400 "$KEY"
  echo "install-slurm: created munge key $KEY"
else
  echo "install-slurm: munge key present: $KEY"
fi
