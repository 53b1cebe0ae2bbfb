"""One sweep, one MLflow parent run.

Every job of a multirun (whatever the launcher: basic, submitit local,
SLURM) shares Hydra's sweep folder. The first job to arrive creates the
parent run under a file lock and writes its id to the folder; the others read
it. The sweep id is the sweep folder's path relative to the project, e.g.
`multirun/2026-11-29/23-59-01`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from rlhf_sweeps import metrics as M
from rlhf_sweeps.job import SweepInfo
from rlhf_sweeps.stages import file_lock

PARENT_FILE = "mlflow_parent_run_id"


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
    parent = parent_run(sweep_dir, sweep_id, cfg.tracking.uri, cfg.tracking.experiment, overrides)
    return SweepInfo(sweep_id=sweep_id, parent_run_id=parent)
