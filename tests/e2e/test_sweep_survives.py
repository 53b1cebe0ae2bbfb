"""A sweep survives its members (issues 17 and 12).

Real sweeps, real signals: a member SIGKILLed (as the OOM killer does) and one
SIGTERMed (`kill`, `timeout`, scancel's first signal) in a `hydra/launcher=local`
sweep, the same SIGKILL on the local SLURM cluster, and a SIGTERM to a whole
in-process sweep. Each time the sweep command prints its summary (no
traceback), the parent run ends FAILED (KILLED when the sweep itself was
stopped), the command exits non-zero and no run stays RUNNING. Rerunning the
sweep resumes what was lost.

The unit tests check the end-of-sweep table and the run names of a sweep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlhf_sweeps import checkpoint
from rlhf_sweeps.sweep import RESULT_GRACE_ENV
from tests.launching import SMALL, launch_cmd, launch_env, mlflow_runs, run_launch

TRACEBACK = "Traceback (most recent call last)"


# ----------------------------------------------------------------------------- real sweeps
def _sweep_args(tmp_path: Path, launcher: str, *axes: str) -> list[str]:
    return ["-m", f"hydra/launcher={launcher}", *SMALL, *axes, f"cache_dir={tmp_path / 'cache'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]


def _result(tmp_path: Path, num: int) -> dict:
    path = tmp_path / "sweep" / ".results" / f"{num}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _wait_checkpoint(tmp_path: Path, num: int, proc, timeout: float = 900) -> int:
    """The member's pid, once its run has its first checkpoint."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        r = _result(tmp_path, num)
        if r.get("run_id"):
            for marker in (tmp_path / "cache" / "runs").glob("*/mlflow_run_id"):
                if marker.read_text().strip() == r["run_id"] and checkpoint.latest_step(marker.parent):
                    return int(r["pid"])
        time.sleep(0.2)
    raise AssertionError(f"member #{num} never checkpointed:\n"
                         f"{proc.communicate()[0][-4000:] if proc.poll() is not None else ''}")


def _assert_nothing_running(tmp_path: Path) -> None:
    running = [r.info.run_name for r in mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")
               if r.info.status == "RUNNING"]
    assert not running, running


@pytest.mark.slow
def test_a_local_sweep_reports_a_sigkilled_and_a_sigtermed_member_then_resumes_them(tmp_path):
    args = _sweep_args(tmp_path, "local", "seed=0,1,2", "steps=16", "eval_every=8", "checkpoint_every=2")
    proc = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    os.kill(_wait_checkpoint(tmp_path, 1, proc), signal.SIGKILL)  # as the OOM killer does
    os.kill(_wait_checkpoint(tmp_path, 2, proc), signal.SIGTERM)  # as kill, timeout, scancel do
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1 and TRACEBACK not in out, out[-5000:]
    summary = out[out.index("[rlhf-sweeps] sweep"):]
    assert re.search(r"3 job\(s\): 1 finished, 1 killed, 1 lost; MLflow parent run \w+ ended FAILED", summary), summary
    assert re.search(r"^\s+1\s+1\s+LOST", summary, re.M) and re.search(r"^\s+2\s+2\s+KILLED", summary, re.M), summary
    assert "#1 LOST: the process died without reporting (SIGKILL" in summary
    assert "run the same sweep command again" in summary and "#2 KILLED: received SIGTERM" in summary
    assert "python -m analysis --sweep" in summary
    runs = {r.info.run_name: r for r in mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")}
    assert runs["seed=1"].info.status == "FAILED" and runs["seed=1"].data.tags["failure_reason"].startswith("lost")
    assert runs["seed=2"].info.status == "KILLED" and "SIGTERM" in runs["seed=2"].data.tags["failure_reason"]
    assert runs["seed=0,1,2"].info.status == "FAILED"  # the parent, named after the grid
    _assert_nothing_running(tmp_path)

    # the same command again: the finished member is skipped, the two others resume and finish
    again = run_launch(args, tmp_path, timeout=900)
    assert re.search(r"3 job\(s\): 2 finished, 1 skipped;", again.stdout), again.stdout[-3000:]
    assert again.stdout.count("FINISHED (resumed from step") == 2
    statuses = {r.info.run_name: r.info.status for r in mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")}
    assert statuses["seed=1"] == statuses["seed=2"] == "FINISHED"


@pytest.mark.slow
def test_sigterm_to_an_in_process_sweep_ends_the_member_and_the_parent_killed(tmp_path):
    args = _sweep_args(tmp_path, "basic", "seed=0,1", "steps=40", "eval_every=20")
    proc = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    _wait_checkpoint(tmp_path, 0, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143 and TRACEBACK not in out, out[-5000:]
    assert re.search(r"1 job\(s\): 1 killed; MLflow parent run \w+ ended KILLED; interrupted: received SIGTERM", out)
    assert [r.info.status for r in mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")] == ["KILLED", "KILLED"]


@pytest.mark.slurm
@pytest.mark.slow
def test_a_sigkilled_member_of_a_slurm_sweep_is_reported_lost(slurm_env, tmp_path):
    # the sweep's files are local: no shared file system's delay to wait out before calling a job lost
    env = launch_env({"SLURM_CONF": slurm_env["SLURM_CONF"], "PATH": slurm_env["PATH"], RESULT_GRACE_ENV: "5"})
    args = _sweep_args(tmp_path, "slurm", "seed=0,1", "steps=40", "eval_every=20")
    proc = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    os.kill(_wait_checkpoint(tmp_path, 1, proc), signal.SIGKILL)  # the job's python, as the OOM killer would
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1 and TRACEBACK not in out, out[-5000:]
    assert re.search(r"2 job\(s\): 1 finished, 1 lost; MLflow parent run \w+ ended FAILED", out), out[-3000:]
    assert "#1 LOST: the process died without reporting" in out
    _assert_nothing_running(tmp_path)
