"""One job = one grid point: validate -> plan -> stages -> loop, tracked in MLflow.

`run_job` is what `launch.py` calls for every Hydra job, whatever the
launcher. It owns the job's lifecycle:

* config errors are raised before any compute or MLflow run, and so are an
  unwritable `cache_dir` and a tracking store that cannot be reached
  (`ConfigError`: one paragraph naming the key and the fix);
* a job's folder is `<cache_dir>/runs/<hash of the resolved config>`, so the
  same command (a rerun, a SLURM requeue) finds the same folder;
* a finished job (same config) is skipped unless `force=true`, but only if the
  configured store still holds its run as FINISHED. If it does not (the store
  was moved or deleted), the run is re-logged from the export in the job's
  folder (`mlflow_export/`: params, tags, every metric point, artifacts), as a
  new FINISHED run, without training; a folder without an export trains again;
* a killed job resumes from its last valid checkpoint into the same MLflow run
  (exactly-once metrics: see `rlhf_sweeps.tracking`; corrupt checkpoints: see
  `rlhf_sweeps.checkpoint`); one killed before its first checkpoint starts
  over, in the same run;
* two processes never run the same job at once (a lock next to its folder):
  the second raises JobBusy, which `launch.py` prints as one BUSY line;
* once its MLflow run is open, any failure ends it FAILED with the reason in
  the `failure_reason` tag; SIGTERM (`launch.py` turns it into `Terminated`,
  held while a store write is in progress: `rlhf_sweeps.interrupts`),
  Ctrl-C and a requeue's exit end it KILLED; then the exception goes on up.
  Only SIGKILL leaves it RUNNING (the sweep's summary ends a lost member's run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from rlhf_sweeps import metrics as M
from rlhf_sweeps.config import ConfigError, as_dict, condition_params, to_yaml, typed, validate
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.quiet import quiet
from rlhf_sweeps.cache import Busy, config_hash, file_lock
from rlhf_sweeps.interrupts import Terminated

DONE_FILE = "done.json"
RUN_ID_FILE = "mlflow_run_id"
EXPORT_DIR = "mlflow_export"  # the finished run, as the store held it: what a re-log writes back
TAG_THREADS = "torch_threads"
TAG_RESUMED_FROM = "resumed_from_step"
# keys that do not change what a run computes; excluded from its identity. `device` says
# where it runs (and `auto` is the same key on a CPU and a GPU node), like `threads`.
_NOT_IDENTITY = ("force", "dry_run", "threads", "device", "verbose")
# overrides that would only clutter a run name
_NOT_IN_NAME = ("tracking.", "cache_dir", "force", "dry_run", "threads", "device", "verbose", "hydra/", "hydra.")


@dataclass
class SweepInfo:
    """What a job of a multirun needs to know about its sweep.

    `parent_run` opens (or finds) the sweep's MLflow parent run; it is only
    called by a job that trains, so rerunning a finished sweep opens nothing.
    `name` is the member's short run name (the grid values that vary);
    `started(run_id)` is told the MLflow run as soon as it is open, so that
    the sweep's summary can end it if the job dies without reporting.
    `shared`: an override of one of these keys that this member does not read
    only warns (another member of the sweep may read it).
    """

    sweep_id: Optional[str] = None
    parent_run: Optional[Callable[[], str]] = None
    name: Optional[str] = None
    started: Optional[Callable[[str], None]] = None
    shared: tuple[str, ...] = ()  # keys the whole sweep overrides alike (not its axes)


class JobBusy(RuntimeError):
    """Another process is running this very job (same resolved config) right now."""


def run_name(overrides: list[str]) -> str:
    kept = [o for o in overrides if not o.startswith(_NOT_IN_NAME)]
    return ",".join(kept) if kept else "default"


def run_dir_for(cfg) -> Path:
    ident = as_dict(cfg)
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


def check_writable(key: str, folder: Path) -> None:
    """Raise ConfigError (naming `key` and the folder) unless files can be created in `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"{key}={folder}: cannot write there ({err.strerror or err}). Jobs keep their stages, "
            f"checkpoints and locks in {key}: point it at a writable folder that every node of a sweep "
            f"sees, e.g. `python launch.py {key}=$HOME/rlhf-artifacts`.") from None


@contextmanager
def exclusive(run_dir: Path):
    """Hold the job's lock for its whole life; raise JobBusy if another process has it.

    A killed job's lock dies with it (flock), so a requeue or rerun gets it.
    """
    try:
        with file_lock(run_dir.parent / f".{run_dir.name}.lock", wait=False):
            yield
    except Busy:
        raise JobBusy(f"{run_dir} is being run by another process right now; wait for it to end, or stop "
                      "it and run this command again to resume it") from None


def run_job(cfg, overrides: list[str], sweep: Optional[SweepInfo] = None,
            launcher_cpus: Optional[int] = None) -> dict[str, Any]:
    quiet(cfg.verbose)  # before torch / vLLM load: some of their switches are read at import
    sweep = sweep or SweepInfo()
    for warning in validate(cfg, overrides, sweep.shared):  # before any compute, before any MLflow run
        print(f"[rlhf-sweeps] warning: {warning}", file=sys.stderr, flush=True)
    cfg = typed(cfg)  # from here on: the Config dataclass, read-only
    plan = make_plan(cfg)
    if cfg.dry_run:
        from rlhf_sweeps.dry_run import describe

        print(describe(cfg, plan))
        return {"status": "DRY_RUN"}
    from rlhf_sweeps.tracking import Tracker

    run_dir = run_dir_for(cfg)
    name = sweep.name or run_name(overrides)
    check_writable("cache_dir", Path(cfg.cache_dir))
    tracker = Tracker(cfg.tracking.uri, cfg.tracking.experiment)  # StoreUnavailable within seconds
    with exclusive(run_dir):
        done = json.loads((run_dir / DONE_FILE).read_text()) if (run_dir / DONE_FILE).exists() else None
        if done and not cfg.force:
            status = tracker.run_status(done["run_id"])
            if status == "FINISHED":
                print(f"[rlhf-sweeps] skipped {name}: already finished (MLflow run {done['run_id']}); "
                      "pass force=true to rerun")
                return {"status": "SKIPPED", **done}
            held = "does not hold it" if status is None else f"holds it as {status}"
            if (run_dir / EXPORT_DIR / "run.json").exists():
                return _relog(tracker, cfg, run_dir, name, done, held, sweep)
            print(f"[rlhf-sweeps] {name} finished as MLflow run {done['run_id']}, but {cfg.tracking.uri} {held} "
                  f"and {run_dir} has no export to re-log it from: training it again", file=sys.stderr, flush=True)
            shutil.rmtree(run_dir, ignore_errors=True)
        if cfg.force:
            shutil.rmtree(run_dir, ignore_errors=True)
        return _train(cfg, plan, overrides, name, run_dir, sweep, launcher_cpus, tracker)


def _sweep_tags(sweep: SweepInfo) -> dict[str, str]:
    tags = {}
    if sweep.sweep_id:
        tags[M.TAG_SWEEP_ID] = sweep.sweep_id
    if sweep.parent_run:
        tags[M.TAG_PARENT] = sweep.parent_run()
    return tags


def _relog(tracker, cfg, run_dir: Path, name: str, done: dict, held: str, sweep: SweepInfo) -> dict[str, Any]:
    """The store lost a finished run: write it back from the job's export, train nothing."""
    run_id = tracker.relog_run(run_dir / EXPORT_DIR, _sweep_tags(sweep))
    print(f"[rlhf-sweeps] {name} finished as MLflow run {done['run_id']}, but {cfg.tracking.uri} {held}: "
          f"re-logged it from {run_dir / EXPORT_DIR} as MLflow run {run_id} (params, metrics, artifacts; "
          "nothing trained)", flush=True)
    (run_dir / RUN_ID_FILE).write_text(run_id)
    done = {**done, "run_id": run_id, "relogged_from": done["run_id"]}
    (run_dir / DONE_FILE).write_text(json.dumps(done))
    if sweep.started:
        sweep.started(run_id)
    return {"status": "RELOGGED", **done}


def _train(cfg, plan, overrides, name, run_dir: Path, sweep: SweepInfo, launcher_cpus, tracker) -> dict[str, Any]:
    import torch

    from rlhf_sweeps import checkpoint
    from rlhf_sweeps.tracking import StoreUnavailable, flatten, git_commit

    threads = torch_threads(cfg, launcher_cpus)
    torch.set_num_threads(threads)
    ckpt = checkpoint.load(run_dir)  # the newest one that verifies; says so if it fell back
    sweep_tags = _sweep_tags(sweep)
    # A job killed before its first checkpoint starts over, but in the run it opened.
    prior_run = ckpt["run_id"] if ckpt else _read_run_id(run_dir)
    if prior_run is not None and tracker.run_status(prior_run) is None:
        print(f"[rlhf-sweeps] warning: MLflow run {prior_run} of {run_dir} is not in {cfg.tracking.uri} (the store "
              "was moved or replaced during the run): starting over in a new run", file=sys.stderr, flush=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        ckpt = prior_run = None
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
        resolved = as_dict(cfg)
        run_id = tracker.start(name, {**flatten(resolved), **condition_params(cfg)}, tags)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_ID_FILE).write_text(run_id)
    else:
        run_id = tracker.start(name, {}, {}, run_id=prior_run)
    if sweep.started:
        sweep.started(run_id)
    try:  # from here on the run is open: whatever happens, it does not stay RUNNING
        if prior_run is None:
            tracker.log_text(to_yaml(cfg), M.ARTIFACT_CONFIG)
        else:
            # a run belongs to the sweep that last ran it (a requeue keeps the same sweep)
            tracker.set_tags({**sweep_tags, TAG_THREADS: str(threads), TAG_RESUMED_FROM: ckpt["step"] if ckpt else 0})
            if ckpt is not None:
                tracker.replay(ckpt.get("pending_metrics", []))  # a kill may have cut the flush short
        print(f"[rlhf-sweeps] run {name!r}: MLflow run {run_id} in {cfg.tracking.uri}, {threads} torch threads"
              + (f", resuming from step {ckpt['step']}" if ckpt else "")
              + (", restarting (no checkpoint to resume from)" if prior_run and not ckpt else ""), flush=True)
        from rlhf_sweeps.loops.runner import run_training

        run_training(cfg, plan, tracker, run_dir, ckpt)
        try:
            tracker.log_curves()
        except Exception as err:  # noqa: BLE001 - a figure that fails does not fail a trained run
            print(f"[rlhf-sweeps] warning: no curves.png for MLflow run {run_id} ({type(err).__name__}: {err})",
                  file=sys.stderr, flush=True)
    except BaseException as err:  # noqa: BLE001 - SIGTERM / Ctrl-C / SystemExit must also end the run
        handler = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the run is being ended: nothing cuts that short
        # An error is FAILED. An exit is KILLED: SIGTERM, Ctrl-C, or submitit's sys.exit after it
        # requeued a job that timed out or was preempted (the requeued job resumes this run).
        status = "FAILED" if isinstance(err, Exception) else "KILLED"
        reason = f"{type(err).__name__}: {err}"
        if status == "KILLED":
            reason += "; run the same command again to resume it from its last checkpoint"
        try:
            tracker.finish(status, reason + "\n" + traceback.format_exc()[-3000:])
        except StoreUnavailable as lost:
            print(f"[rlhf-sweeps] could not end MLflow run {run_id} {status}: {lost}", file=sys.stderr, flush=True)
        if not isinstance(err, Terminated):  # the next member of an in-process sweep may be SIGTERMed too
            signal.signal(signal.SIGTERM, handler)
        raise
    tracker.finish("FINISHED")  # StoreUnavailable: the last checkpoint keeps what is not written yet
    try:
        tracker.export_run(run_dir / EXPORT_DIR)
    except Exception as err:  # noqa: BLE001 - the run is fine; only a later re-log would need this
        print(f"[rlhf-sweeps] warning: could not export MLflow run {run_id} to {run_dir / EXPORT_DIR} ({err}); "
              "if this store loses it, the job will train again instead of re-logging it", file=sys.stderr)
    done = {"run_id": run_id, "name": name}
    (run_dir / DONE_FILE).write_text(json.dumps(done))
    out = {"status": "FINISHED", **done}
    if ckpt is not None:
        out["resumed_from_step"] = ckpt["step"]
    return out
