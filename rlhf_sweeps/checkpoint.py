"""Atomic checkpoints: everything a job needs to continue exactly.

A checkpoint holds the policy and optimizer state, every RNG state, the step
(which is also the data position: prompts are a pure function of
(seed, step)), the regularization-coefficient controller, the evaluator's
initial-policy gold scores, the MLflow run id, and the metrics logged since the
previous checkpoint that are not yet in MLflow (`pending_metrics`; the
exactly-once design is in `rlhf_sweeps.tracking`). It is written to a
temporary file, fsynced and renamed, so a kill (or a node crash) mid-write
leaves the previous one.

The loop's `save_checkpoint` must be: `save(run_dir, {..., "pending_metrics":
tracker.pending()})`, then `tracker.flush()`, in that order.

Verified, and the last two kept
-------------------------------
A checkpoint is `checkpoint-<step>.pt` plus `checkpoint-<step>.sum.json` (its
size and SHA-256), written before the `.pt` is renamed into place. `load`
takes the newest checkpoint whose file matches its sum; a truncated or
otherwise corrupt one (a full disk, a bad copy, a node crash that lost
unflushed pages) is set aside with a warning and the previous one is used.
The older checkpoints are deleted after each save, so at most two are on disk.
With no valid checkpoint left, the run restarts from step 0 in the same MLflow
run (the tracker drops the points the store already holds, so no step is
logged twice). A `checkpoint.pt` from before this scheme (no sum) is still
loaded, unverified, when nothing newer is there.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

KEEP = 2
LEGACY_NAME = "checkpoint.pt"  # a single unverified checkpoint, written before checksums
_PATTERN = re.compile(r"^checkpoint-(\d+)\.pt$")


def _pt(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:08d}.pt"


def _sum(pt: Path) -> Path:
    return pt.with_suffix(".sum.json")


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _warn(message: str) -> None:
    print(f"[rlhf-sweeps] warning: {message}", file=sys.stderr, flush=True)


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    # only onto the same number of GPUs; a GPU checkpoint resumed on a CPU node has none to set
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)  # make renames and deletions durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` as the newest checkpoint (data, then its sum, then the rename); keep the last two."""
    run_dir.mkdir(parents=True, exist_ok=True)
    final = _pt(run_dir, int(state["step"]))
    tmp = run_dir / f".{final.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    sum_tmp = run_dir / f".{_sum(final).name}.tmp-{os.getpid()}"
    sum_tmp.write_text(json.dumps({"step": int(state["step"]), "bytes": tmp.stat().st_size, "sha256": _sha256(tmp)}))
    os.replace(sum_tmp, _sum(final))  # before the data: a visible .pt always has its sum
    os.replace(tmp, final)
    _fsync_dir(run_dir)
    for old in _candidates(run_dir)[KEEP:]:
        old.unlink(missing_ok=True)
        _sum(old).unlink(missing_ok=True)
    (run_dir / LEGACY_NAME).unlink(missing_ok=True)
    return final


def _candidates(run_dir: Path) -> list[Path]:
    """Checkpoint files, newest step first."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("checkpoint-*.pt") if (m := _PATTERN.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _problem(pt: Path) -> Optional[str]:
    """Why `pt` cannot be trusted, or None if it matches its sum."""
    try:
        want = json.loads(_sum(pt).read_text())
    except (OSError, ValueError):
        return f"{_sum(pt).name} (its size and checksum) is missing or unreadable"
    size = pt.stat().st_size
    if size != want["bytes"]:
        return f"it has {size} bytes, {want['bytes']} were written (truncated?)"
    if _sha256(pt) != want["sha256"]:
        return "its SHA-256 does not match the one written with it"
    return None


def _torch_load(path: Path) -> dict[str, Any]:
    # numpy / python RNG states are plain tuples and arrays; allow just those.
    with torch.serialization.safe_globals([np.ndarray, np.dtype, np.dtypes.UInt32DType, _np_reconstruct()]):
        # on the CPU first: a GPU run's checkpoint also resumes on a CPU node; load_state_dict
        # copies to wherever the model and optimizer live
        return torch.load(path, weights_only=True, map_location="cpu")


def load(run_dir: Path, repair: bool = True) -> Optional[dict[str, Any]]:
    """The newest checkpoint that verifies, or None. With `repair` (the job that owns the
    folder), corrupt checkpoints are deleted and every fallback is said on stderr; without
    it (a process looking in from outside) nothing is deleted or printed."""
    if repair:
        for stale in run_dir.glob(".checkpoint*.tmp-*"):  # a save that was killed mid-write
            stale.unlink(missing_ok=True)
    bad = []
    for pt in _candidates(run_dir):
        why = _problem(pt)
        if why is None:
            try:
                state = _torch_load(pt)
            except Exception as err:  # noqa: BLE001 - verified bytes that still do not unpickle
                why = f"it does not load ({type(err).__name__}: {str(err)[:200]})"
        if why is not None:
            bad.append(f"{pt.name}: {why}")
            if repair:
                pt.unlink(missing_ok=True)
                _sum(pt).unlink(missing_ok=True)
            continue
        if repair and bad:
            _warn(f"corrupt checkpoint(s) in {run_dir} deleted ({'; '.join(bad)}); "
                  f"resuming from the previous one, {pt.name} (step {state['step']})")
        return state
    legacy = run_dir / LEGACY_NAME
    if legacy.exists():
        try:
            state = _torch_load(legacy)
            if repair and bad:
                _warn(f"corrupt checkpoint(s) in {run_dir} deleted ({'; '.join(bad)}); resuming from {LEGACY_NAME}")
            return state
        except Exception as err:  # noqa: BLE001 - truncated or garbage
            bad.append(f"{LEGACY_NAME}: it does not load ({type(err).__name__}: {str(err)[:200]})")
            if repair:
                legacy.unlink(missing_ok=True)
    if repair and bad:
        _warn(f"no valid checkpoint in {run_dir} ({'; '.join(bad)}; deleted): the run restarts from step 0, "
              "in the same MLflow run, and logs no step twice")
    return None


def latest_step(run_dir: Path) -> Optional[int]:
    """The step of the newest checkpoint on disk (from its sum file; not verified), or None."""
    for pt in _candidates(run_dir):
        try:
            return int(json.loads(_sum(pt).read_text())["step"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def _np_reconstruct():
    """numpy's array unpickling helper (numpy 2 moved `numpy.core` to `numpy._core`)."""
    core = getattr(np, "_core", None)
    if core is None:
        core = np.core
    return core.multiarray._reconstruct
