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
`tests/e2e/test_tracking_concurrency.py` checks that every point of such writers
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

A store that is down or goes away
---------------------------------
`Tracker.__init__` checks the store before any compute: an unsupported URI
scheme, an unopenable SQLite file or a server that does not answer within
`PROBE_BUDGET_S` raises `StoreUnavailable` (a config error: one paragraph that
names `tracking.uri` and how to fix it). MLflow's own HTTP retries (minutes of
backoff per request) are turned down to none; `_retry` bounds every write in
total time instead: `BUSY_BUDGET_S` for a locked SQLite file, `UNREACHABLE_S`
for a server that does not answer. When a flush still fails, the tracker goes
*degraded*: training goes on, the points stay in the buffer (so in every later
checkpoint), each later flush tries once, and the first one that lands writes
the whole backlog. If the store is still down when the run ends, `finish`
raises `StoreUnavailable`: the job's last checkpoint holds every point not yet
written, and rerunning the same command replays them into the same run.
Artifacts (sample tables, curves) are best effort: one that cannot be written
during an outage is skipped with a warning.

Re-logging a finished run
-------------------------
A finished job exports its run (`export_run`: params, tags, every metric
point, the artifacts) into its folder. If the store no longer holds that run
(moved, deleted, another file at the same URI), `relog_run` writes it back from
there as a new FINISHED run, without training again (`rlhf_sweeps.job`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from rlhf_sweeps import metrics as M
from rlhf_sweeps.cache import file_lock
from rlhf_sweeps.config import ConfigError
from rlhf_sweeps.interrupts import uninterrupted

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
ARTIFACT_CURVES = "curves.png"  # gold and proxy (and KL) vs step, logged when a run ends
BUSY_BUDGET_S = 120.0  # total retry time for a locked SQLite file (each try itself waits up to 20 s)
UNREACHABLE_S = 30.0  # total retry time for a server that does not answer, while not degraded
PROBE_BUDGET_S = 15.0  # the start-up check of an http(s) store: it fails within this
_BUSY = ("database is locked", "database table is locked", "busy")
_UNREACHABLE = ("connection", "timed out", "timeout", "temporarily unavailable", "max retries exceeded",
                "name or service not known", "error code 502", "error code 503", "error code 504")



def table_rows(table: dict) -> list[dict]:
    """The rows of a table `Tracker.log_table` wrote (pandas' "split" JSON), as dicts again."""
    return [dict(zip(table["columns"], row)) for row in table["data"]]

class StoreUnavailable(ConfigError):
    """The tracking store cannot be reached or used; the message names tracking.uri and the fix."""


def store_help(uri: str, err: BaseException | str) -> str:
    why = err if isinstance(err, str) else f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    return (f"tracking.uri={uri}: the MLflow tracking store cannot be used ({why}). Check the address, or start "
            "a server (`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`, then "
            "tracking.uri=http://127.0.0.1:5000), or use a SQLite file in a writable folder "
            "(tracking.uri=sqlite:////absolute/path/mlflow.db).")


def _kind(err: Exception) -> Optional[str]:
    """'busy' (a locked SQLite file), 'unreachable' (a server that does not answer), or None."""
    text = str(err).lower()
    if any(s in text for s in _BUSY):
        return "busy"
    if any(s in text for s in _UNREACHABLE):
        return "unreachable"
    return None


def _retry(fn: Callable, *args, unreachable_s: float = UNREACHABLE_S, **kwargs):
    """Call `fn`, retrying transient store errors with backoff, for a bounded total time."""
    start, delay, attempt = time.monotonic(), 0.05, 0
    while True:
        try:
            with uninterrupted():  # a SIGTERM inside a SQLite write would leave the file locked
                return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite and http errors in several types
            budget = {"busy": BUSY_BUDGET_S, "unreachable": unreachable_s}.get(_kind(err))
            if budget is None or time.monotonic() - start + delay > budget:
                raise
            attempt += 1
            print(f"[rlhf-sweeps] MLflow write retry {attempt} after: {str(err).splitlines()[0][:200]}",
                  file=sys.stderr, flush=True)
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)


def _probe_http(uri: str) -> None:
    """Fail within PROBE_BUDGET_S if nothing answers HTTP at `uri` (any status counts as an answer)."""
    import requests

    deadline, last = time.monotonic() + PROBE_BUDGET_S, None
    while time.monotonic() < deadline:
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5)
            return
        except requests.RequestException as err:
            last = err
            time.sleep(1.0)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(last))  # e.g. "[Errno 111] Connection refused"
    raise StoreUnavailable(store_help(uri, f"nothing answered within {PROBE_BUDGET_S:.0f} s: "
                                           f"{errno.group(0) if errno else type(last).__name__}"))


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
    with file_lock(Path(f"{path}.lock")):
        yield


class Tracker:
    def __init__(self, uri: str, experiment: str):
        """Open the store, checking it first (raises StoreUnavailable, never hangs)."""
        from mlflow.tracking import MlflowClient

        self.uri = uri
        if uri.startswith(("http://", "https://")):
            # MLflow retries a refused request for minutes; `_retry` bounds the total instead
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
            _probe_http(uri)
        try:
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
        except StoreUnavailable:
            raise
        except Exception as err:  # noqa: BLE001 - unsupported scheme, unopenable file, refused, ...
            raise StoreUnavailable(store_help(uri, err)) from None
        self.run_id: Optional[str] = None
        self._buffer: list[tuple[str, float, int, int]] = []  # (key, value, timestamp ms, step)
        self._stored: set[tuple[str, int]] = set()  # (key, step) held at resume, or replayed
        self.degraded = False  # the store stopped answering: flushes try once, artifacts are skipped

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
        self.log_params(params)
        return self.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Params of the open run (a value set again must be the same: MLflow refuses a change)."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for s in range(0, len(items), 100):
            _retry(self.client.log_batch, self.run_id, params=items[s : s + 100])

    def run_status(self, run_id: str) -> Optional[str]:
        """The run's status in this store (FINISHED, RUNNING, ...), or None if it is not there (or deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run = _retry(self.client.get_run, run_id)
        except MlflowException as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code) or "not found" in str(err).lower():
                return None
            raise
        return None if run.info.lifecycle_stage == "deleted" else run.info.status

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
        n = 0
        for p in points:
            if (p[0], p[3]) not in self._stored:
                self._buffer.append(tuple(p))
                self._stored.add((p[0], p[3]))
                n += 1
        if n:
            print(f"[rlhf-sweeps] replaying {n} metric point(s) from the checkpoint into MLflow run {self.run_id}",
                  flush=True)

    def flush(self) -> None:
        """Write the buffer. If the store does not answer, keep it and go on (degraded)."""
        from mlflow.entities import Metric

        n = len(self._buffer)
        try:
            while self._buffer:
                chunk = self._buffer[:MAX_METRICS_PER_BATCH]
                batch = [Metric(k, v, ts, step) for k, v, ts, step in chunk]
                # degraded: one quick try per flush, so an outage costs training nothing
                _retry(self.client.log_batch, self.run_id, metrics=batch,
                       unreachable_s=0.0 if self.degraded else UNREACHABLE_S)
                del self._buffer[: len(chunk)]
        except Exception as err:  # noqa: BLE001
            if _kind(err) != "unreachable":
                raise
            if not self.degraded:
                print(f"[rlhf-sweeps] warning: MLflow store {self.uri} is not answering "
                      f"({str(err).splitlines()[0][:200]}). Training goes on: {len(self._buffer)} metric point(s) "
                      "stay buffered, and in every checkpoint, until it answers; a later start replays them.",
                      file=sys.stderr, flush=True)
            self.degraded = True
            return
        if self.degraded and n:
            print(f"[rlhf-sweeps] MLflow store {self.uri} answers again: wrote the {n} buffered metric point(s)",
                  file=sys.stderr, flush=True)
        self.degraded = False

    def stored_points(self, run_id: Optional[str] = None) -> set[tuple[str, int]]:
        """Every (key, step) the run holds."""
        run_id = run_id or self.run_id
        keys = _retry(self.client.get_run, run_id).data.metrics.keys()
        return {(k, m.step) for k in keys for m in _retry(self.client.get_metric_history, run_id, k)}

    def history(self, keys: Iterable[str], run_id: Optional[str] = None) -> dict[int, dict[str, float]]:
        """{step: {key: value}} of the given metrics, as the store holds them."""
        run_id = run_id or self.run_id
        out: dict[int, dict[str, float]] = {}
        for key in keys:
            for m in _retry(self.client.get_metric_history, run_id, key):
                out.setdefault(int(m.step), {})[key] = float(m.value)
        return dict(sorted(out.items()))

    # ------------------------------------------------------------ artifacts
    def _artifact(self, what: str, fn: Callable, *args, **kwargs) -> None:
        """Best effort: an artifact the store cannot take now is skipped with a warning."""
        try:
            _retry(fn, *args, unreachable_s=0.0 if self.degraded else UNREACHABLE_S, **kwargs)
        except Exception as err:  # noqa: BLE001
            if _kind(err) != "unreachable":
                raise
            self.degraded = True
            print(f"[rlhf-sweeps] warning: {what} not logged: the MLflow store is not answering", file=sys.stderr,
                  flush=True)

    def log_text(self, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text)
            parent = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
            self._artifact(artifact_file, self.client.log_artifact, self.run_id, str(path), parent)

    def log_json(self, obj: Any, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        """Rows (dicts) as an MLflow table: the UI shows it as a table, not as JSON text.

        The file is what `MlflowClient.log_table` writes (pandas' "split" JSON) plus the
        `mlflow.loggedArtifacts` tag entry that marks it a table. Unlike `log_table`, a second
        call with the same file replaces it instead of appending: a resumed run re-evaluates
        its checkpoint's step, and that table must not get its rows twice.
        """
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        columns = list(dict.fromkeys(k for row in rows for k in row))
        table = {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}
        self.log_text(json.dumps(table, default=str), artifact_file)
        if self.degraded:
            return
        tags = _retry(self.client.get_run, self.run_id).data.tags
        listed = json.loads(tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": artifact_file, "type": "table"}
        if entry not in listed:
            self._artifact(f"the table tag of {artifact_file}", self.client.set_tag, self.run_id,
                           MLFLOW_LOGGED_ARTIFACTS, json.dumps(listed + [entry]))

    def log_curves(self, artifact_file: str = ARTIFACT_CURVES) -> None:
        """A PNG of gold and proxy (top) and KL (bottom) vs step, from what the store holds."""
        keys = (M.EVAL_GOLD_REWARD, M.EVAL_GOLD_SE, M.EVAL_PROXY_REWARD, M.EVAL_KL)
        hist = self.history(keys)
        if not any(M.EVAL_GOLD_REWARD in h for h in hist.values()):
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            plot_curves(hist, path)
            parent = str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None
            self._artifact(artifact_file, self.client.log_artifact, self.run_id, str(path), parent)

    # ------------------------------------------------------------ the rest
    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            _retry(self.client.set_tag, self.run_id, k, str(v)[:5000])

    def finish(self, status: str = "FINISHED", reason: Optional[str] = None) -> None:
        """Flush what is buffered, then end the run (a failed run keeps its curves up to the failure).

        Raises StoreUnavailable if the store does not answer: the points not yet written are in
        the job's last checkpoint, and the next start replays them and ends the run.
        """
        if self.run_id is None:
            return
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - still record how the run ended
            if status == "FINISHED":
                raise
        if self.degraded:
            raise StoreUnavailable(store_help(self.uri, "it stopped answering during the run") + (
                f" {len(self._buffer)} metric point(s) and the run's end ({status}) are not in MLflow run "
                f"{self.run_id} yet; they are kept in the run's last checkpoint: rerun the same command when "
                "the store answers, and the job replays them into the same run without training again."))
        try:
            if reason:
                _retry(self.client.set_tag, self.run_id, M.TAG_FAILURE, reason[:5000])
            _retry(self.client.set_terminated, self.run_id, status=status)
        except Exception as err:  # noqa: BLE001
            if _kind(err) == "unreachable":
                raise StoreUnavailable(store_help(self.uri, err)) from None
            raise

    def logged_steps(self, key: str) -> list[int]:
        return [m.step for m in _retry(self.client.get_metric_history, self.run_id, key)]

    # ------------------------------------------------- export / re-log (job.py)
    def export_run(self, folder: Path) -> None:
        """Everything needed to write this run again into another store: run.json, metrics.json, artifacts/."""
        run = _retry(self.client.get_run, self.run_id)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        metrics = {k: [[m.step, m.value, m.timestamp] for m in _retry(self.client.get_metric_history, self.run_id, k)]
                   for k in run.data.metrics}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        (folder / "run.json").write_text(json.dumps({
            "run_id": self.run_id, "name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "end_time": run.info.end_time,
            "params": dict(run.data.params), "tags": dict(run.data.tags)}, indent=1))
        (folder / "artifacts").mkdir()
        _retry(self.client.download_artifacts, self.run_id, "", str(folder / "artifacts"))

    def relog_run(self, folder: Path, tags: dict[str, str]) -> str:
        """Write an exported run into this store as a new FINISHED run; `tags` replace the sweep tags."""
        from mlflow.entities import Metric

        info = json.loads((folder / "run.json").read_text())
        kept = {k: v for k, v in info["tags"].items()
                if k not in (M.TAG_PARENT, M.TAG_SWEEP_ID, "mlflow.runName") and not k.startswith("mlflow.log-model")}
        run = _retry(self.client.create_run, self.experiment_id, run_name=info["name"], start_time=info["start_time"],
                     tags={**kept, **tags, "relogged_from": info["run_id"]})
        self.run_id, self._stored = run.info.run_id, set()
        self.log_params(info["params"])
        points = [Metric(k, v, ts, step) for k, series in json.loads((folder / "metrics.json").read_text()).items()
                  for step, v, ts in series]
        for s in range(0, len(points), MAX_METRICS_PER_BATCH):
            _retry(self.client.log_batch, self.run_id, metrics=points[s : s + MAX_METRICS_PER_BATCH])
        for item in sorted((folder / "artifacts").iterdir()):
            if item.is_dir():
                _retry(self.client.log_artifacts, self.run_id, str(item), item.name)
            else:
                _retry(self.client.log_artifact, self.run_id, str(item))
        _retry(self.client.set_terminated, self.run_id, status="FINISHED", end_time=info["end_time"])
        return self.run_id


def plot_curves(hist: dict[int, dict[str, float]], path: Path) -> None:
    """Gold and proxy vs step (gold with its ± SE band) above KL vs step: the over-optimization picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def series(key):
        pts = [(s, h[key]) for s, h in hist.items() if key in h]
        return np.array(pts, dtype=float).reshape(-1, 2)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, height_ratios=(3, 2))
    gold, proxy, se, kl = (series(k) for k in (M.EVAL_GOLD_REWARD, M.EVAL_PROXY_REWARD, M.EVAL_GOLD_SE, M.EVAL_KL))
    top.plot(gold[:, 0], gold[:, 1], "o-", color="tab:orange", label="gold (never trained on)")
    if len(se) == len(gold):
        top.fill_between(gold[:, 0], gold[:, 1] - se[:, 1], gold[:, 1] + se[:, 1], color="tab:orange", alpha=0.2)
    if len(proxy):
        top.plot(proxy[:, 0], proxy[:, 1], "s--", color="tab:blue", label="proxy (optimized)")
    top.set_ylabel("reward (initial policy's std)")
    top.axhline(0.0, color="grey", lw=0.5)
    top.legend(loc="best", fontsize=8)
    if len(kl):
        bottom.plot(kl[:, 0], kl[:, 1], "^-", color="tab:green")
    bottom.set_ylabel("KL to the initial policy (nats)")
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
