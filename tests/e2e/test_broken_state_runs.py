"""Broken state repaired exactly, and a tracking store that goes away (issue 17).

* a truncated latest checkpoint falls back to the previous one, and the
  resumed run equals an uninterrupted one to 1e-6 (a real SIGKILLed `launch.py`);
* the store: a real `mlflow server` on 127.0.0.1, stopped while a run trains
  and started again; the run goes on and ends with every metric point once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rlhf_sweeps import checkpoint
from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch

STEPS, EVERY = 18, 3


def _args(tmp_path: Path, db: str) -> list[str]:
    return [*SMALL, f"steps={STEPS}", f"checkpoint_every={EVERY}", f"eval_every={EVERY}", "threads=1",
            f"cache_dir={tmp_path / 'cache'}", f"tracking.uri=sqlite:///{tmp_path / db}",
            f"hydra.run.dir={tmp_path / 'outputs'}"]


@pytest.mark.slow
def test_a_truncated_latest_checkpoint_resumes_from_the_previous_one_exactly(tmp_path):
    # 1. the uninterrupted reference (also builds the stages)
    run_launch(_args(tmp_path, "ref.db"), tmp_path, timeout=900)
    (ref,) = mlflow_runs(f"sqlite:///{tmp_path / 'ref.db'}")
    ref_hist = histories(f"sqlite:///{tmp_path / 'ref.db'}", ref.info.run_id)

    # 2. the same run into another store (so another folder), SIGKILLed after its 4th checkpoint
    uri = f"sqlite:///{tmp_path / 'run.db'}"
    proc = subprocess.Popen(launch_cmd(_args(tmp_path, "run.db")), cwd=tmp_path, env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ref_dir = Path(ref.data.tags["run_dir"])
    run_dir, deadline = None, time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in (tmp_path / "cache" / "runs").iterdir() if p.is_dir() and p != ref_dir]
        if found and (checkpoint.latest_step(found[0]) or 0) >= 4 * EVERY:
            run_dir = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert run_dir is not None and proc.returncode == -signal.SIGKILL, out[-4000:]

    # 3. its newest checkpoint loses its tail, as on a full disk; the rerun falls back one checkpoint
    latest = checkpoint._candidates(run_dir)[0]
    killed_at = checkpoint.latest_step(run_dir)
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    again = run_launch(_args(tmp_path, "run.db"), tmp_path, timeout=900)
    assert f"resuming from the previous one, checkpoint-{killed_at - EVERY:08d}.pt" in again.stderr, again.stderr
    assert f"resuming from step {killed_at - EVERY}" in again.stdout, again.stdout[-3000:]

    # 4. one run, every (key, step) once, the same numbers as the uninterrupted run
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FINISHED"
    hist = histories(uri, run.info.run_id)
    assert sorted(hist) == sorted(ref_hist)
    for key, points in hist.items():
        assert [s for s, _ in points] == [s for s, _ in ref_hist[key]], f"{key}: duplicated or missing steps"
        if not key.startswith("perf/"):
            for (s, v), (_, v_ref) in zip(points, ref_hist[key]):
                assert v == pytest.approx(v_ref, abs=1e-6), f"{key} at step {s}: {v} vs {v_ref}"


# ----------------------------------------------------------------------- a store that goes away
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 (its own process group, so that stop() ends its workers)."""

    def __init__(self, tmp: Path, port: int):
        self.tmp, self.port, self.proc = tmp, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 180) -> None:
        cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", "1", "--backend-store-uri", f"sqlite:///{self.tmp / 'server.db'}",
               "--artifacts-destination", str(self.tmp / "server-artifacts")]
        log = open(self.tmp / "server.log", "a")
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.5)
        raise AssertionError(f"mlflow server did not start:\n{(self.tmp / 'server.log').read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers: a group we started
            self.proc.wait(timeout=60)


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path, _free_port())
    yield srv
    srv.stop()


@pytest.mark.slow
def test_a_server_stopped_mid_run_and_restarted_ends_with_the_complete_history(tmp_path, server):
    server.start()
    steps, every = 60, 3
    args = [*SMALL, f"steps={steps}", f"checkpoint_every={every}", "eval_every=30", "threads=1",
            f"cache_dir={tmp_path / 'cache'}", f"tracking.uri={server.uri}", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    def run_dir():
        found = list((tmp_path / "cache" / "runs").glob("*/checkpoint-*.pt")) if (tmp_path / "cache").exists() else []
        return found[0].parent if found else None

    def wait_step(at_least: int) -> int:
        deadline = time.time() + 900
        while time.time() < deadline and proc.poll() is None:
            step = checkpoint.latest_step(run_dir()) if run_dir() else None
            if step is not None and step >= at_least:
                return step
            time.sleep(0.1)
        raise AssertionError(f"no checkpoint {at_least}:\n{proc.communicate()[0][-4000:] if proc.poll() is not None else ''}")

    stopped_at = wait_step(2 * every)
    server.stop()  # the store goes away; the job must keep training
    t_stop = time.time()
    wait_step(stopped_at + 3 * every)  # three checkpoints with nowhere to flush
    during = time.time() - t_stop
    server.start()
    out, _ = proc.communicate(timeout=900)
    path = "recovered mid-run" if proc.returncode == 0 else "finished first, replayed on the next start"
    if proc.returncode != 0:  # it finished before the server was back: the next start replays the rest
        assert "rerun the same command when the store answers" in out, out[-4000:]
        again = run_launch(args, tmp_path, timeout=900)
        assert "replaying" in again.stdout, again.stdout[-3000:]
        out += again.stdout + again.stderr
    else:
        assert "answers again: wrote the" in out, out[-4000:]
    assert "is not answering" in out and "Traceback (most recent call last)" not in out, out[-4000:]
    print(f"\n[measured] 3 checkpoints trained during the outage in {during:.1f}s; the run {path}")

    (run,) = mlflow_runs(server.uri)
    assert run.info.status == "FINISHED"
    hist = histories(server.uri, run.info.run_id)
    for key, points in hist.items():
        got = [s for s, _ in points]
        want = list(range(0, steps + 1, 30)) if key.startswith("eval/") else list(range(steps))
        assert got == want, f"{key}: {len(got)} points, duplicates or gaps around the outage"
