"""MLflow, imported here and nowhere else in the training code.

`Tracker` wraps `MlflowClient` (no fluent API, so nothing global leaks between
jobs that share a process). Parallel jobs writing one SQLite store can hit
"database is locked": every write goes through `_retry`, which backs off
exponentially with jitter. Metrics are written with `log_batch`, one call per
step, so a retried write never duplicates a point (the batch either landed
or it did not).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from rlhf_sweeps import metrics as M


def _is_transient(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy", "connection", "timed out"))


def _retry(fn: Callable, *args, attempts: int = 12, **kwargs):
    delay = 0.05
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite errors in several types
            if i == attempts - 1 or not _is_transient(err):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)


class Tracker:
    def __init__(self, uri: str, experiment: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        self._mlflow = mlflow
        self.uri = uri
        self.client = _retry(MlflowClient, tracking_uri=uri)
        exp = _retry(self.client.get_experiment_by_name, experiment)
        if exp is None:
            try:
                self.experiment_id = _retry(self.client.create_experiment, experiment)
            except Exception:  # another job created it first
                self.experiment_id = _retry(self.client.get_experiment_by_name, experiment).experiment_id
        else:
            self.experiment_id = exp.experiment_id
        self.run_id: Optional[str] = None

    # ------------------------------------------------------------------ runs
    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str], run_id: Optional[str] = None) -> str:
        """Open a new run, or re-open `run_id` (a resumed job logs into the same run)."""
        if run_id is not None:
            _retry(self.client.update_run, run_id, status="RUNNING")
            self.run_id = run_id
            return run_id
        run = _retry(self.client.create_run, self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for s in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[s : s + 100])
        return self.run_id

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in values.items()]
        _retry(self.client.log_batch, self.run_id, metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            _retry(self.client.set_tag, self.run_id, k, str(v)[:5000])

    def log_text(self, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text)
            parent = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
            _retry(self.client.log_artifact, self.run_id, str(path), parent)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def finish(self, status: str = "FINISHED", reason: Optional[str] = None) -> None:
        if self.run_id is None:
            return
        if reason:
            _retry(self.client.set_tag, self.run_id, M.TAG_FAILURE, reason[:5000])
        _retry(self.client.set_terminated, self.run_id, status=status)

    def logged_steps(self, key: str) -> list[int]:
        return [m.step for m in _retry(self.client.get_metric_history, self.run_id, key)]


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit() -> str:
    import subprocess

    try:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
