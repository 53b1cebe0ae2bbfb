"""One sweep, one MLflow parent run, one summary.

Every job of a multirun (whatever the launcher: basic, submitit local,
SLURM) shares Hydra's sweep folder, and this module keeps the sweep's state
there:

* `mlflow_parent_run_id`: the parent run. The first job that trains creates
  it under a file lock; the others read it. A sweep whose jobs are all
  skipped opens no MLflow run at all.
* `.results/<job num>.json`: each job's outcome (FINISHED, SKIPPED, FAILED,
  CONFIG_ERROR, BUSY), written by `launch.py`; RUNNING until the job reports,
  so a job killed outright shows up as lost.

`SweepCallback` (registered in conf/config.yaml as a Hydra callback) runs in
the submitting process when the multirun ends: it prints the summary, ends
the parent run FINISHED (or FAILED if any member failed or was lost), and
makes the process exit 1 if any member failed. It lives here rather than in
launch.py because Hydra instantiates callbacks by dotted path and pickles them
into submitit jobs, and launch.py, run as `__main__`, has no such path.

The sweep id is the sweep folder's path relative to the working directory,
e.g. `multirun/2026-11-29/23-59-01`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from rlhf_sweeps import metrics as M
from rlhf_sweeps.job import SweepInfo
from rlhf_sweeps.stages import file_lock

PARENT_FILE = "mlflow_parent_run_id"
RESULTS_DIR = ".results"
FAILED_STATUSES = ("FAILED", "CONFIG_ERROR", "RUNNING")  # RUNNING at the end = the job never reported
TAG_SWEEP_COUNTS = "sweep_counts"


def sweep_id_for(sweep_dir: Path) -> str:
    try:
        return str(sweep_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{sweep_dir.name}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"


def parent_run(sweep_dir: Path, sweep_id: str, uri: str, experiment: str, overrides: str) -> str:
    from rlhf_sweeps.tracking import Tracker, git_commit

    sweep_dir.mkdir(parents=True, exist_ok=True)
    marker = sweep_dir / PARENT_FILE
    with file_lock(sweep_dir / f".{PARENT_FILE}.lock"):
        if marker.exists():
            return marker.read_text().strip()
        tracker = Tracker(uri, experiment)
        run_id = tracker.start(f"sweep {sweep_id}", {"sweep_overrides": overrides},
                               {M.TAG_SWEEP_ID: sweep_id, M.TAG_IS_SWEEP_PARENT: "true",
                                M.TAG_GIT_COMMIT: git_commit()})
        marker.write_text(run_id)
        return run_id


def sweep_info_for(hc, cfg) -> SweepInfo:
    sweep_dir = Path(hc.sweep.dir)
    sweep_id = sweep_id_for(sweep_dir)
    overrides = " ".join(hc.overrides.task)
    uri, experiment = cfg.tracking.uri, cfg.tracking.experiment
    return SweepInfo(sweep_id=sweep_id,
                     parent_run=lambda: parent_run(sweep_dir, sweep_id, uri, experiment, overrides))


# ------------------------------------------------------------------ results
def record_result(sweep_dir: Path, job_num: int, result: dict[str, Any]) -> None:
    """Write one job's outcome atomically (a requeued job overwrites its own)."""
    folder = sweep_dir / RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job_num}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"num": job_num, **result}, default=str))
    os.replace(tmp, folder / f"{job_num}.json")


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    folder = sweep_dir / RESULTS_DIR
    if not folder.is_dir():
        return []
    rows = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(rows, key=lambda r: r["num"])


def summarize(results: list[dict[str, Any]]) -> tuple[dict[str, int], str]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = []
    for r in results:
        what = r.get("run_id") or ""
        if r["status"] == "SKIPPED":
            what = f"already finished (MLflow run {r.get('run_id')})"
        elif r["status"] == "RUNNING":
            what = "never reported: killed (out of memory, scancel, node failure)?"
        elif r.get("error"):
            what = r["error"].splitlines()[0][:200]
        elif r.get("resumed_from_step") is not None:
            what += f" (resumed from step {r['resumed_from_step']})"
        lines.append(f"  #{r['num']:<3} {r['status']:<12} {r.get('name', '')}  {what}")
    return counts, "\n".join(lines)


class SweepCallback(Callback):
    """Prints the sweep's summary and closes its MLflow parent run (on_multirun_end)."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        results = read_results(sweep_dir)
        counts, table = summarize(results)
        failed = sum(counts.get(s, 0) for s in FAILED_STATUSES)
        parent = sweep_dir / PARENT_FILE
        status = "FAILED" if failed else "FINISHED"
        where = "no MLflow parent run (nothing trained)"
        if parent.exists():
            from rlhf_sweeps.tracking import Tracker

            tracker = Tracker(config.tracking.uri, config.tracking.experiment)
            tracker.run_id = parent.read_text().strip()
            tracker.set_tags({TAG_SWEEP_COUNTS: json.dumps(counts, sort_keys=True)})
            tracker.finish(status, f"{failed} member(s) failed" if failed else None)
            where = f"MLflow parent run {tracker.run_id} ended {status}"
        n = len(results)
        parts = ", ".join(f"{counts[s]} {s.lower()}" for s in sorted(counts))
        print(f"\n[rlhf-sweeps] sweep {sweep_id_for(sweep_dir)}: {n} job(s): {parts or 'none reported'}; {where}\n"
              + table, flush=True)
        if failed:
            sys.exit(1)
