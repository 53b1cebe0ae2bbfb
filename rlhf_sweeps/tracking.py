"""MLflow, imported here and nowhere else in the training code.

`Tracker` wraps `MlflowClient` (no fluent API, so nothing global leaks between
jobs that share a process).

Parallel jobs, one store: measured, then decided
-------------------------------------------------
The default store is one SQLite file (`tracking.uri=sqlite:///...`) shared
by every job of every sweep. Two things go wrong when parallel processes
write it, and each has a guard here:

* Creating the tables. The first process to open a fresh file runs MLflow's
  alembic migrations; two doing it at once crash with "table ... already
  exists" (seen with 6 processes starting together). `Tracker.__init__` holds
  an exclusive `flock` on `<db file>.lock` while it opens the store, so one
  process migrates and the others find the tables made.
* "database is locked". SQLite lets one writer at a time; MLflow makes the
  others wait up to 20 s (`PRAGMA busy_timeout`); a write that waits longer
  fails. Every write goes through `_retry`: 12 attempts, exponential backoff
  with jitter between them (each attempt may itself wait the 20 s), and a
  line on stderr per retry. A retried `log_batch` resends the same `Metric`
  objects (same timestamps), and MLflow's metrics primary key is (key,
  timestamp, step, value): a batch that landed before the error was reported
  is not stored twice.

Measured on the 2-core dev VM (load ~8 from other work): 8 processes x 100
unbuffered `log_batch` calls of 10 metrics into one file needed no retry at all
(SQLite's 20 s wait absorbed the contention), ~0.3-0.4 s per call;
`tests/test_tracking_concurrency.py` checks that every point of such writers
lands exactly once, and that writers survive a lock held for longer than
that wait (they retry). SQLite is therefore the default; jobs write far less
than that test, because metrics are buffered until a checkpoint (below).

SQLite's locks are not reliable on network file systems (NFS, Lustre): when
jobs run on several nodes, start one tracking server on a machine that owns
a local disk and point jobs at it with `tracking.uri=http://<host>:5000`:
serve it behind authentication on a private interface, never on a bare
`--host 0.0.0.0` (docs/cluster.md shows `mlflow server --app-name basic-auth`
and a reverse proxy). Nothing here changes: the retries also cover the
server's transient connection errors.

Exactly once, across kills and resumes
--------------------------------------
Metrics are buffered in memory and written only when they are safe:

1. `log_metrics` appends to the buffer.
2. At a checkpoint, the loop saves the buffer inside the checkpoint
   (`pending()`), renames the checkpoint into place, and only then calls
   `flush()`. A kill before the rename loses the buffer together with the
   steps that produced it: the resumed job recomputes those steps from the
   previous checkpoint and logs them once. A kill after the rename but before
   (or during) the flush leaves the points in the checkpoint: the resumed job
   `replay`s them.
3. A resumed run (`start(run_id=...)`) first reads which (key, step) points
   the run already holds and drops any new point with the same (key, step);
   replayed points join that set. That makes the replay of a half-flushed
   buffer exact; it drops the loop's second evaluation at the checkpoint's
   step (the first is in the store or in the replay); and it covers the one
   other way a point after the checkpoint can be stored: `finish` flushes the
   buffer when a job fails, so a failed run shows its curves up to the
   failure, and a later resume does not log those steps a second time.

The price: MLflow shows a run's curves in chunks of `checkpoint_every` steps.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from rlhf_sweeps import metrics as M

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


def _is_transient(err: Exception) -> bool:
    text = str(err).lower()
    return any(s in text for s in ("database is locked", "database table is locked", "busy", "connection",
                                   "timed out", "temporarily unavailable"))


def _retry(fn: Callable, *args, attempts: int = 12, **kwargs):
    delay = 0.05
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite errors in several types
            if i == attempts - 1 or not _is_transient(err):
                raise
            print(f"[rlhf-sweeps] MLflow write retry {i + 1}/{attempts - 1} after: {str(err).splitlines()[0][:200]}",
                  file=sys.stderr, flush=True)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` URI (relative or absolute), else None."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix):].split("?", 1)[0])


@contextmanager
def _store_init_lock(uri: str):
    """Serialize the first opening of a SQLite store (table creation) across processes."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Tracker:
    def __init__(self, uri: str, experiment: str):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        with _store_init_lock(uri):
            self.client = _retry(MlflowClient, tracking_uri=uri)
            exp = _retry(self.client.get_experiment_by_name, experiment)
            if exp is None:
                try:
                    self.experiment_id = _retry(self.client.create_experiment, experiment)
                except Exception:  # noqa: BLE001 - another job (on a server) created it first
                    self.experiment_id = _retry(self.client.get_experiment_by_name, experiment).experiment_id
            else:
                self.experiment_id = exp.experiment_id
        self.run_id: Optional[str] = None
        self._buffer: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._stored: set[tuple[str, int]] = set()  # (key, step) held at resume, or replayed

    # ------------------------------------------------------------------ runs
    def start(self, run_name: str, params: dict[str, Any], tags: dict[str, str], run_id: Optional[str] = None) -> str:
        """Open a new run, or re-open `run_id` (a resumed job logs into the same run)."""
        if run_id is not None:
            self.run_id = run_id
            _retry(self.client.update_run, run_id, status="RUNNING")
            run = _retry(self.client.get_run, run_id)
            if M.TAG_FAILURE in run.data.tags:  # left by an earlier attempt (a requeue, a crash)
                _retry(self.client.delete_tag, run_id, M.TAG_FAILURE)
            self._stored = self.stored_points()
            return run_id
        run = _retry(self.client.create_run, self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self._stored = set()
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for s in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[s : s + 100])
        return self.run_id

    # --------------------------------------------------------------- metrics
    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Buffer one step's metrics; `flush` (at a checkpoint, or `finish`) writes them."""
        now = int(time.time() * 1000)
        for k, v in values.items():
            if (k, step) not in self._stored:
                self._buffer.append((k, float(v), now, int(step)))

    def pending(self) -> list[tuple[str, float, int, int]]:
        """The buffered points, as plain tuples a checkpoint can hold."""
        return list(self._buffer)

    def replay(self, points: Iterable[tuple[str, float, int, int]]) -> None:
        """Re-buffer points saved in a checkpoint, minus those the run already holds.

        Replayed points count as held from now on: the resumed loop re-evaluates
        at the checkpoint's step, and that evaluation is already among them.
        """
        for p in points:
            if (p[0], p[3]) not in self._stored:
                self._buffer.append(tuple(p))
                self._stored.add((p[0], p[3]))

    def flush(self) -> None:
        from mlflow.entities import Metric

        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            batch = [Metric(k, v, ts, step) for k, v, ts, step in chunk]
            _retry(self.client.log_batch, self.run_id, metrics=batch)
            del self._buffer[: len(chunk)]

    def stored_points(self, run_id: Optional[str] = None) -> set[tuple[str, int]]:
        """Every (key, step) the run holds."""
        run_id = run_id or self.run_id
        keys = _retry(self.client.get_run, run_id).data.metrics.keys()
        return {(k, m.step) for k in keys for m in _retry(self.client.get_metric_history, run_id, k)}

    # ------------------------------------------------------------ the rest
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
        """Flush what is buffered, then end the run (a failed run keeps its curves up to the failure)."""
        if self.run_id is None:
            return
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - still record how the run ended
            if status == "FINISHED":
                raise
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
