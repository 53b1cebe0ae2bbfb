"""One job = one grid point: validate -> plan -> stages -> loop, tracked in MLflow.

`run_job` is what `launch.py` calls for every Hydra job, whatever the
launcher. It owns the job's lifecycle:

* config errors are raised before any compute or MLflow run;
* a finished job (same config) is skipped unless `force=true`;
* a killed job resumes from its last checkpoint into the same MLflow run;
* any failure ends the MLflow run as FAILED with the reason, then re-raises.
"""

from __future__ import annotations

import json
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from rlhf_sweeps import metrics as M
from rlhf_sweeps.config import validate
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.stages import config_hash

DONE_FILE = "done.json"
# keys that do not change what a run computes; excluded from its identity
_NOT_IDENTITY = ("force", "dry_run", "threads")
# overrides that would only clutter a run name
_NOT_IN_NAME = ("tracking.", "cache_dir", "force", "dry_run", "threads", "hydra/", "hydra.")


@dataclass
class SweepInfo:
    sweep_id: Optional[str] = None
    parent_run_id: Optional[str] = None


def run_name(overrides: list[str]) -> str:
    kept = [o for o in overrides if not o.startswith(_NOT_IN_NAME)]
    return ",".join(kept) if kept else "default"


def run_dir_for(cfg) -> Path:
    ident = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_IDENTITY:
        ident.pop(key, None)
    return Path(cfg.cache_dir) / "runs" / config_hash(ident)


def torch_threads(cfg) -> int:
    """Threads this job may use: config, else the SLURM / submitit allotment, else all cores."""
    if cfg.threads:
        return int(cfg.threads)
    for var in ("SLURM_CPUS_PER_TASK", "SUBMITIT_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return len(os.sched_getaffinity(0))


def run_job(cfg, overrides: list[str], sweep: Optional[SweepInfo] = None) -> dict[str, Any]:
    validate(cfg)  # before any compute, before any MLflow run
    plan = make_plan(cfg)
    if cfg.dry_run:
        from rlhf_sweeps.dry_run import describe

        print(describe(cfg, plan))
        return {"status": "DRY_RUN"}
    sweep = sweep or SweepInfo()
    run_dir = run_dir_for(cfg)
    name = run_name(overrides)
    if (run_dir / DONE_FILE).exists():
        if not cfg.force:
            done = json.loads((run_dir / DONE_FILE).read_text())
            print(f"[rlhf-sweeps] skipped {name}: already finished (MLflow run {done['run_id']}); "
                  "pass force=true to rerun")
            return {"status": "SKIPPED", **done}
        shutil.rmtree(run_dir)

    import torch

    from rlhf_sweeps import checkpoint
    from rlhf_sweeps.tracking import Tracker, flatten, git_commit

    torch.set_num_threads(torch_threads(cfg))
    ckpt = None if cfg.force else checkpoint.load(run_dir)
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)
    tags = {
        M.TAG_GIT_COMMIT: git_commit(),
        M.TAG_OVERRIDES: " ".join(overrides),
        M.TAG_TASK: cfg.task.name,
        M.TAG_REGULARIZER: cfg.regularizer.name,
        M.TAG_ALGO: cfg.algo.name,
        "run_dir": str(run_dir),
    }
    if sweep.sweep_id:
        tags[M.TAG_SWEEP_ID] = sweep.sweep_id
    if sweep.parent_run_id:
        tags[M.TAG_PARENT] = sweep.parent_run_id
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_id = tracker.start(name, flatten(resolved), tags, run_id=ckpt["run_id"] if ckpt else None)
    if ckpt is None:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), M.ARTIFACT_CONFIG)
    print(f"[rlhf-sweeps] run {name!r}: MLflow run {run_id} in {cfg.tracking.uri}"
          + (f", resuming from step {ckpt['step']}" if ckpt else ""))
    try:
        from rlhf_sweeps.loops.runner import run_training

        run_training(cfg, plan, tracker, run_dir, ckpt)
    except BaseException as err:  # noqa: BLE001 - KeyboardInterrupt / SystemExit must also mark FAILED
        reason = f"{type(err).__name__}: {err}"
        tracker.finish("FAILED", reason + "\n" + traceback.format_exc()[-3000:])
        raise
    tracker.finish("FINISHED")
    done = {"run_id": run_id, "name": name}
    (run_dir / DONE_FILE).write_text(json.dumps(done))
    return {"status": "FINISHED", **done}
