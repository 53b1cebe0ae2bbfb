"""Atomic checkpoints: everything a job needs to continue exactly.

A checkpoint holds the policy and optimizer state, every RNG state, the step
(which is also the data position: prompts are a pure function of
(seed, step)), the regularization-coefficient controller, the evaluator's
initial-policy gold scores and the MLflow run id. It is written to a
temporary file and renamed, so a kill mid-write leaves the previous one.
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
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save(run_dir: Path, state: dict[str, Any]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / CKPT_NAME
    tmp = run_dir / f".{CKPT_NAME}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, final)
    return final


def load(run_dir: Path) -> Optional[dict[str, Any]]:
    path = run_dir / CKPT_NAME
    if not path.exists():
        return None
    # numpy / python RNG states are plain tuples and arrays; allow just those.
    with torch.serialization.safe_globals([np.ndarray, np.dtype, np.dtypes.UInt32DType,
                                           np.core.multiarray._reconstruct if hasattr(np, "core") else np.ndarray]):
        return torch.load(path, weights_only=True)
