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
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

CKPT_NAME = "checkpoint.pt"


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


def save(run_dir: Path, state: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / CKPT_NAME
    tmp = run_dir / f".{CKPT_NAME}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(run_dir, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def load(run_dir: Path) -> Optional[dict[str, Any]]:
    for stale in run_dir.glob(f".{CKPT_NAME}.tmp-*"):  # a save that was killed mid-write
        stale.unlink(missing_ok=True)
    path = run_dir / CKPT_NAME
    if not path.exists():
        return None
    # numpy / python RNG states are plain tuples and arrays; allow just those.
    with torch.serialization.safe_globals([np.ndarray, np.dtype, np.dtypes.UInt32DType, _np_reconstruct()]):
        # on the CPU first: a GPU run's checkpoint also resumes on a CPU node; load_state_dict
        # copies to wherever the model and optimizer live
        return torch.load(path, weights_only=True, map_location="cpu")


def _np_reconstruct():
    """numpy's array unpickling helper (numpy 2 moved `numpy.core` to `numpy._core`)."""
    core = getattr(np, "_core", None)
    if core is None:
        core = np.core
    return core.multiarray._reconstruct
