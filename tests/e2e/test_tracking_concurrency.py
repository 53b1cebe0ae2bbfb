"""Parallel jobs writing one SQLite MLflow store: every point lands exactly once.

Real processes, a real SQLite file, the project's `Tracker` (see the
tracking.py docstring for the measurements behind the design). The writers
flush after every step, which is harder on the store than a training job
(which flushes once per checkpoint).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

import pytest

N_KEYS = 8

WRITER = r"""
import sys, time
from rlhf_sweeps.tracking import Tracker
uri, name, n_steps, n_keys, start_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
print("READY", flush=True)
while time.time() < start_at:  # all writers open the store at the same moment
    time.sleep(0.002)
tr = Tracker(uri, "concurrency")
tr.start(name, {"writer": name}, {"writer": name})
for step in range(n_steps):
    tr.log_metrics({f"m/{j}": step * 100 + j for j in range(n_keys)}, step)
    tr.flush()
tr.finish()
print("RUN_ID", tr.run_id, flush=True)
"""


def _start_writers(uri: str, n_writers: int, n_steps: int, delay_s: float) -> list[subprocess.Popen]:
    start_at = time.time() + delay_s
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return [
        subprocess.Popen([sys.executable, "-c", WRITER, uri, f"w{i}", str(n_steps), str(N_KEYS), str(start_at)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(n_writers)
    ]


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"writer failed (exit {p.returncode}):\n{err[-3000:]}"
        outs.append((out, err))
    return outs


def _assert_exactly_once(uri: str, n_writers: int, n_steps: int) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("concurrency")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert sorted(r.data.tags["writer"] for r in runs) == sorted(f"w{i}" for i in range(n_writers))
    for run in runs:
        assert run.info.status == "FINISHED"
        for j in range(N_KEYS):
            hist = client.get_metric_history(run.info.run_id, f"m/{j}")
            steps = sorted(m.step for m in hist)
            assert steps == list(range(n_steps)), f"{run.data.tags['writer']} m/{j}: {steps}"
            assert {m.step: m.value for m in hist} == {s: s * 100 + j for s in range(n_steps)}


def test_parallel_writers_on_a_fresh_store_lose_and_duplicate_nothing(tmp_path):
    """6 processes open a store that does not exist yet (table creation race) and write 40 steps each."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    n_writers, n_steps = 6, 40
    _wait(_start_writers(uri, n_writers, n_steps, delay_s=6.0), timeout=600)
    _assert_exactly_once(uri, n_writers, n_steps)


@pytest.mark.slow  # holds the lock 24 s
def test_writers_survive_a_lock_held_longer_than_sqlites_wait(tmp_path):
    """Another process holds the write lock for 24 s, longer than the 20 s SQLite wait MLflow sets
    (PRAGMA busy_timeout): writers get "database is locked", back off, retry, and lose nothing."""
    from rlhf_sweeps.tracking import Tracker

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    Tracker(uri, "concurrency")  # tables exist: this test is about locks, not creation
    n_writers, n_steps = 3, 5
    holder = sqlite3.connect(db, timeout=60, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # no other connection may read or write until COMMIT
    procs = _start_writers(uri, n_writers, n_steps, delay_s=0.0)
    for p in procs:  # imports done: each writer is about to open the locked store
        assert p.stdout.readline().strip() == "READY"
    t0 = time.time()
    time.sleep(24.0)
    holder.execute("COMMIT")
    holder.close()
    outs = _wait(procs, timeout=600)
    _assert_exactly_once(uri, n_writers, n_steps)
    retried = [err for _, err in outs if "MLflow write retry" in err and "database is locked" in err]
    assert retried, "expected at least one writer to hit 'database is locked' and retry"
    assert time.time() - t0 >= 24.0
