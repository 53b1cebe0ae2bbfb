#!/usr/bin/env bash
# One prepared GPU check of the real-scale path: numerics CPU vs CUDA, HF rollout
# and the online update (bf16 autocast, fp32 master weights, micro-batches,
# gradient checkpointing) on Pythia-1B and -2.8B sized GPT-NeoX models built from
# config (no download). See bench/gpu_check.py for what each section measures.
#
#   bash bench/gpu_check.sh              # on the GPU machine, from the repo root (~2-4 min on an H200)
#   bash bench/gpu_check.sh --cpu-only   # toy sizes on the CPU, seconds
#   bash bench/gpu_check.sh --sizes 1b   # extra arguments go to gpu_check.py
#
# It picks the first python whose torch sees CUDA, trying the system pythons
# before the repo's .venv (whose torch is the CPU wheel), and says why each one
# was passed over. When that python lacks transformers, the .venv's
# site-packages are appended after its own (same Python minor version only), so
# its CUDA torch still wins. Results also go to $OUT/gpu_check.json when $OUT is set.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

CPU_ONLY=0
for a in "$@"; do [ "$a" = "--cpu-only" ] && CPU_ONLY=1; done

probe() {  # prints "<cuda True/False> <python X.Y> <torch version> <torch cuda build>" or fails
  "$1" -c 'import sys, torch; print(torch.cuda.is_available(), "%d.%d" % sys.version_info[:2], torch.__version__, torch.version.cuda)' 2>/dev/null
}

candidates=()
for py in python3 /usr/bin/python3 /usr/local/bin/python3 /opt/conda/bin/python python "$ROOT/.venv/bin/python"; do
  p=$(command -v "$py" 2>/dev/null) || continue
  [[ " ${candidates[*]:-} " == *" $p "* ]] || candidates+=("$p")
done

PY=""
echo "== choosing a python ============================================================"
for p in "${candidates[@]}"; do
  info=$(probe "$p") || { echo "  $p: no importable torch"; continue; }
  read -r cuda ver tver tcuda <<<"$info"
  echo "  $p: python $ver, torch $tver (CUDA build: $tcuda), cuda available: $cuda"
  if [ "$CPU_ONLY" = 1 ]; then [ -z "$PY" ] && PY=$p; continue; fi
  if [ "$cuda" = "True" ] && [ -z "$PY" ]; then PY=$p; fi
done
if [ -z "$PY" ]; then
  echo "No python here has a torch that sees CUDA."
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
    || echo "  (nvidia-smi not found: no NVIDIA driver visible)"
  echo "  A CPU-wheel torch (CUDA build: None) cannot use the GPU; install a CUDA torch or use the system python."
  exit 3
fi
echo "  -> using $PY"

# transformers (and the repo's other pure-python deps) from the venv, after this python's own paths
if ! "$PY" -c 'import transformers' 2>/dev/null; then
  venv_site=$(ls -d "$ROOT"/.venv/lib/python*/site-packages 2>/dev/null | head -1)
  py_ver=$("$PY" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
  if [ -n "$venv_site" ] && [[ "$venv_site" == *"/$py_ver/"* ]] && [ "$PY" != "$ROOT/.venv/bin/python" ]; then
    echo "  transformers missing for $PY: appending $venv_site (after its own site-packages)"
    export RLHF_APPEND_SITE="$venv_site"
  else
    echo "  transformers missing for $PY and no matching .venv ($py_ver): pure-torch stand-in, rollout skipped"
  fi
fi

extra=()
[ -n "${OUT:-}" ] && extra+=(--json "$OUT/gpu_check.json")
# hard stop well inside a 10-minute device slot
exec timeout 540 "$PY" -c '
import os, sys, runpy
site = os.environ.get("RLHF_APPEND_SITE")
if site:
    import torch  # this python'"'"'s CUDA torch first, so the venv'"'"'s CPU torch is never imported
    sys.path.append(site)
sys.argv = ["bench/gpu_check.py"] + sys.argv[1:]
runpy.run_path("bench/gpu_check.py", run_name="__main__")
' "$@" "${extra[@]}"
