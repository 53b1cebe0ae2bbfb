"""One job = one grid point: validate -> plan -> stages -> loop, tracked in MLflow.

`run_job` is what `launch.py` calls for every Hydra job, whatever the
launcher. It owns the job's lifecycle:

* config errors are raised before any compute or MLflow run;
* a job's folder is `<cache_dir>/runs/<hash of the resolved config>`, so the
  same command (a rerun, a SLURM requeue) finds the same folder;
* a finished job (same config) is skipped unless `force=true`;
* a killed job resumes from its last checkpoint into the same MLflow run
  (exactly-once metrics: see `rlhf_sweeps.tracking`); one killed before its
  first checkpoint starts over, in the same run;
* two processes never run the same job at once (a lock next to its folder);
* any failure ends the MLflow run as FAILED (KILLED for Ctrl-C or a requeue's
  exit) with the reason in the `failure_reason` tag, then re-raises.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

from rlhf_sweeps import metrics as M
from rlhf_sweeps.config import condition_params, validate
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.quiet import quiet
from rlhf_sweeps.stages import config_hash

DONE_FILE = "done.json"
RUN_ID_FILE = "mlflow_run_id"
TAG_THREADS = "torch_threads"
TAG_RESUMED_FROM = "resumed_from_step"
# keys that do not change what a run computes; excluded from its identity. `device` says
# where it runs (and `auto` is the same key on a CPU and a GPU node), like `threads`.
_NOT_IDENTITY = ("force", "dry_run", "threads", "device")
# overrides that would only clutter a run name
_NOT_IN_NAME = ("tracking.", "cache_dir", "force", "dry_run", "threads", "device", "hydra/", "hydra.")


@dataclass
class SweepInfo:
    """What a job of a multirun needs to know about its sweep.

    `parent_run` opens (or finds) the sweep's MLflow parent run; it is only
    called by a job that trains, so rerunning a finished sweep opens nothing.
    """

    sweep_id: Optional[str] = None
    parent_run: Optional[Callable[[], str]] = None


class JobBusy(RuntimeError):
    """Another process is running this very job (same resolved config) right now."""


def run_name(overrides: list[str]) -> str:
    kept = [o for o in overrides if not o.startswith(_NOT_IN_NAME)]
    return ",".join(kept) if kept else "default"


def run_dir_for(cfg) -> Path:
    ident = OmegaConf.to_container(cfg, resolve=True)
    for key in _NOT_IDENTITY:
        ident.pop(key, None)
    return Path(cfg.cache_dir) / "runs" / config_hash(ident)


def torch_threads(cfg, launcher_cpus: Optional[int] = None) -> int:
    """Threads this job may use.

    `threads=` if set; else SLURM's allotment (`SLURM_CPUS_PER_TASK`); else the
    launcher's `cpus_per_task` (submitit's local executor runs jobs side by side
    but sets no variable, so `launch.py` passes the preset's value); else every
    core this process may run on (the basic launcher runs one job at a time).
    """
    if cfg.threads:
        return int(cfg.threads)
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    if launcher_cpus:
        return int(launcher_cpus)
    return len(os.sched_getaffinity(0))


def _read_run_id(run_dir: Path) -> Optional[str]:
    path = run_dir / RUN_ID_FILE
    return path.read_text().strip() if path.exists() else None


@contextmanager
def exclusive(run_dir: Path):
    """Hold the job's lock for its whole life; raise JobBusy if another process has it.

    A killed job's lock dies with it (flock), so a requeue or rerun gets it.
    """
    lock = run_dir.parent / f".{run_dir.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobBusy(f"{run_dir} is being run by another process right now") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_job(cfg, overrides: list[str], sweep: Optional[SweepInfo] = None,
            launcher_cpus: Optional[int] = None) -> dict[str, Any]:
    quiet(cfg.verbose)  # before torch / vLLM load: some of their switches are read at import
    validate(cfg)  # before any compute, before any MLflow run
    plan = make_plan(cfg)
    if cfg.dry_run:
        from rlhf_sweeps.dry_run import describe

        print(describe(cfg, plan))
        return {"status": "DRY_RUN"}
    sweep = sweep or SweepInfo()
    run_dir = run_dir_for(cfg)
    name = run_name(overrides)
    with exclusive(run_dir):
        if (run_dir / DONE_FILE).exists() and not cfg.force:
            done = json.loads((run_dir / DONE_FILE).read_text())
            print(f"[rlhf-sweeps] skipped {name}: already finished (MLflow run {done['run_id']}); "
                  "pass force=true to rerun")
            return {"status": "SKIPPED", **done}
        if cfg.force:
            shutil.rmtree(run_dir, ignore_errors=True)
        return _train(cfg, plan, overrides, name, run_dir, sweep, launcher_cpus)


def _train(cfg, plan, overrides, name, run_dir: Path, sweep: SweepInfo, launcher_cpus) -> dict[str, Any]:
    import torch

    from rlhf_sweeps import checkpoint
    from rlhf_sweeps.tracking import Tracker, flatten, git_commit

    threads = torch_threads(cfg, launcher_cpus)
    torch.set_num_threads(threads)
    ckpt = checkpoint.load(run_dir)
    sweep_tags = {}
    if sweep.sweep_id:
        sweep_tags[M.TAG_SWEEP_ID] = sweep.sweep_id
    if sweep.parent_run:
        sweep_tags[M.TAG_PARENT] = sweep.parent_run()
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)
    # A job killed before its first checkpoint starts over, but in the run it opened.
    prior_run = ckpt["run_id"] if ckpt else _read_run_id(run_dir)
    if prior_run is None:
        tags = {
            M.TAG_GIT_COMMIT: git_commit(),
            M.TAG_OVERRIDES: " ".join(overrides),
            M.TAG_TASK: cfg.task.name,
            M.TAG_REGULARIZER: cfg.regularizer.name,
            M.TAG_ALGO: cfg.algo.name,
            TAG_THREADS: str(threads),
            "run_dir": str(run_dir),
            **sweep_tags,
        }
        resolved = OmegaConf.to_container(cfg, resolve=True)
        run_id = tracker.start(name, {**flatten(resolved), **condition_params(cfg)}, tags)
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), M.ARTIFACT_CONFIG)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_ID_FILE).write_text(run_id)
    else:
        run_id = tracker.start(name, {}, {}, run_id=prior_run)
        # a run belongs to the sweep that last ran it (a requeue keeps the same sweep)
        tracker.set_tags({**sweep_tags, TAG_THREADS: str(threads), TAG_RESUMED_FROM: ckpt["step"] if ckpt else 0})
        if ckpt is not None:
            tracker.replay(ckpt.get("pending_metrics", []))  # a kill may have cut the flush short
    print(f"[rlhf-sweeps] run {name!r}: MLflow run {run_id} in {cfg.tracking.uri}, {threads} torch threads"
          + (f", resuming from step {ckpt['step']}" if ckpt else "")
          + (", restarting (killed before its first checkpoint)" if prior_run and not ckpt else ""), flush=True)
    try:
        from rlhf_sweeps.loops.runner import run_training

        run_training(cfg, plan, tracker, run_dir, ckpt)
    except BaseException as err:  # noqa: BLE001 - KeyboardInterrupt / SystemExit must also end the run
        # An error is FAILED. An exit is KILLED: Ctrl-C, or submitit's sys.exit after it
        # requeued a job that timed out or was preempted (the requeued job resumes this run).
        status = "FAILED" if isinstance(err, Exception) else "KILLED"
        reason = f"{type(err).__name__}: {err}"
        tracker.finish(status, reason + "\n" + traceback.format_exc()[-3000:])
        raise
    tracker.finish("FINISHED")
    done = {"run_id": run_id, "name": name}
    (run_dir / DONE_FILE).write_text(json.dumps(done))
    out = {"status": "FINISHED", **done}
    if ckpt is not None:
        out["resumed_from_step"] = ckpt["step"]
    return out
