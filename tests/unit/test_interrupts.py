"""SIGTERM never lands inside a store write (rlhf_sweeps/interrupts.py).

Raised at once, a SIGTERM can interrupt SQLite's INSERT and leave the process's
connection holding the file's write lock: the run's own KILLED status, and every
other sweep member writing to the same file, then fail with "database is
locked". The handler holds a SIGTERM that arrives inside `uninterrupted()` (which
`tracking._retry` puts around every store call) until the call is over.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from rlhf_sweeps import tracking
from rlhf_sweeps.interrupts import Terminated, raise_interrupt, raise_terminated, uninterrupted


@pytest.fixture
def sigterm_handler():
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_inside_the_block_is_raised_when_the_outermost_block_ends(sigterm_handler):
    done = []
    with pytest.raises(Terminated, match="received SIGTERM"):
        with uninterrupted():
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("inner")
            done.append("outer")  # still inside the outer block: the write goes on
    assert done == ["inner", "outer"]


def test_ctrl_c_is_held_the_same_way_but_a_second_one_does_not_wait():
    previous = signal.signal(signal.SIGINT, raise_interrupt)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("written")
        assert done == ["written"]
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGINT)  # held
                os.kill(os.getpid(), signal.SIGINT)  # the user insists
                done.append("never")
                time.sleep(5)
        assert done == ["written"]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_sigterm_outside_any_block_is_raised_at_once(sigterm_handler):
    with pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs before this returns
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # one is enough: a second is ignored


def test_a_sigterm_during_metric_writes_leaves_the_sqlite_store_writable(tmp_path, sigterm_handler):
    """Fifteen SIGTERMs at random moments of a stream of `log_batch` calls, each followed by the
    write the KILLED path makes. Unheld, about a third land inside the INSERT, and that write then
    fails with "database is locked" after SQLite's 20 s wait (measured; without `uninterrupted`
    in `_retry` this test fails)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("x")
    rng = random.Random(0)
    for trial in range(15):
        run_id = client.create_run(experiment).info.run_id
        signal.signal(signal.SIGTERM, raise_terminated)
        timer = threading.Timer(rng.uniform(0.05, 0.3), os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        step = 0
        with pytest.raises(Terminated):
            while True:
                now = int(time.time() * 1000)
                tracking._retry(client.log_batch, run_id, metrics=[Metric(f"k{i}", 1.0, now, step) for i in range(50)])
                step += 1
        timer.join()
        client.set_tag(run_id, "failure_reason", f"trial {trial}")  # raises "database is locked" if one was left
        assert client.get_run(run_id).data.tags["failure_reason"] == f"trial {trial}"
