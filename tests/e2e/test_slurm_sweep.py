"""The real sweep on the real one-node SLURM cluster (scripts/slurm-up.sh).

`launch.py -m hydra/launcher=slurm ...` submits one job array; each task is a
SLURM job with its own CPU allotment. The same command again trains nothing.
A job requeued while it trains (by hand, or by submitit on the signal of a
timeout or a preemption) restarts from its checkpoint in the same
content-addressed folder and finishes into the same MLflow run.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from rlhf_sweeps import checkpoint
from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _env(slurm_env: dict) -> dict:
    return launch_env({"SLURM_CONF": slurm_env["SLURM_CONF"], "PATH": slurm_env["PATH"]})


def _args(tmp_path: Path, cache_dir: Path, sweep: str, *axes: str) -> list[str]:
    return ["-m", "hydra/launcher=slurm", *SMALL, *axes, f"cache_dir={cache_dir}",
            f"tracking.uri=sqlite:///{tmp_path / 'db'}", f"hydra.sweep.dir={tmp_path / sweep}"]


def test_slurm_sweep_lands_four_runs_under_one_parent_then_skips(slurm_env, tmp_path, cache_dir):
    axes = ("regularizer=entropy,kl", "lr=1e-4,1e-3")
    proc = run_launch(_args(tmp_path, cache_dir, "sweep", *axes), tmp_path, timeout=1200, env=_env(slurm_env))
    runs = mlflow_runs(f"sqlite:///{tmp_path / 'db'}")
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    assert len(parents) == 1 and len(children) == 4
    assert parents[0].info.status == "FINISHED"
    assert {(r.data.params["regularizer.name"], r.data.params["lr"]) for r in children} == {
        ("entropy", "0.0001"), ("entropy", "0.001"), ("kl", "0.0001"), ("kl", "0.001")}
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert r.data.tags["torch_threads"] == "1"  # SLURM_CPUS_PER_TASK from conf/hydra/launcher/slurm.yaml
    # they ran as tasks of one SLURM job array: <sweep>/.submitit/<array id>_<task id>/
    tasks = sorted(p.name for p in (tmp_path / "sweep" / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    assert "4 job(s): 4 finished;" in proc.stdout

    t0 = time.time()
    again = run_launch(_args(tmp_path, cache_dir, "sweep2", *axes), tmp_path, timeout=600, env=_env(slurm_env))
    elapsed = time.time() - t0
    assert "4 job(s): 4 skipped; no MLflow parent run" in again.stdout, again.stdout[-3000:]
    assert len(mlflow_runs(f"sqlite:///{tmp_path / 'db'}")) == 5
    assert elapsed < 120, f"a sweep with nothing to train took {elapsed:.0f}s"


def _wait_pending(job_id: str, env: dict, timeout: float = 90) -> None:
    """Until the requeued job is back in the queue (its old allocation is gone)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True,
                               text=True, timeout=30).stdout.strip()
        if state == "PENDING":
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not go back to the queue within {timeout}s")


@pytest.mark.parametrize("interrupt", ["scontrol requeue", "preemption signal"])
def test_requeued_job_resumes_from_its_checkpoint_into_the_same_run(slurm_env, tmp_path, cache_dir, interrupt):
    """`scontrol requeue` (SIGTERM, ignored by submitit, then SIGKILL), or the signal SLURM sends
    on preemption or timeout (SIGUSR2: submitit requeues the job itself and exits)."""
    steps, every = 240, 40  # past 2 x every, the job trains on for SLURM's KillWait (10 s) and more
    args = _args(tmp_path, cache_dir, "sweep", f"steps={steps}", f"checkpoint_every={every}",
                 f"eval_every={every}")
    launcher = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=_env(slurm_env), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    submitit = tmp_path / "sweep" / ".submitit"
    runs_dir = cache_dir / "runs"
    job_id, ckpt_step, deadline = None, -1, time.time() + 600
    while time.time() < deadline and launcher.poll() is None:
        logs = sorted(submitit.glob("*/*_log.out")) if submitit.exists() else []
        mine = [p.parent for p in runs_dir.glob("*/checkpoint-*.pt") if not (p.parent / "done.json").exists()]
        if logs and mine:
            job_id = logs[0].parent.name
            ckpt_step = checkpoint.latest_step(mine[0])
            ckpt_step = -1 if ckpt_step is None else ckpt_step
            if ckpt_step >= 2 * every:
                break
        time.sleep(0.5)
    assert job_id and ckpt_step >= 2 * every, launcher.communicate()[0][-5000:] if launcher.poll() is not None else ""
    if interrupt == "scontrol requeue":
        cmd = ["scontrol", "requeue", job_id]
    else:  # what submitit's own Job._interrupt() sends
        cmd = ["scancel", job_id, "--signal", "USR2"]
    subprocess.run(cmd, env=slurm_env, check=True, timeout=60)
    _wait_pending(job_id, slurm_env)
    if interrupt == "preemption signal":
        # submitit's USR2 handler runs `scontrol requeue` (which SIGTERMs the job) and then sys.exit:
        # whichever lands first ends the run, KILLED either way (a fresh-clone CI run saw the SIGTERM win).
        (run,) = [r for r in mlflow_runs(f"sqlite:///{tmp_path / 'db'}") if r.data.tags.get("sweep_parent") != "true"]
        reason = run.data.tags["failure_reason"]
        assert run.info.status == "KILLED" and ("SystemExit" in reason or "received SIGTERM" in reason), reason
    # SLURM holds a requeued job back ~2 minutes (its begin time): let it start now
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=slurm_env, check=True,
                   timeout=30)
    out, _ = launcher.communicate(timeout=900)
    assert launcher.returncode == 0, out[-5000:]
    assert "1 job(s): 1 finished;" in out and "(resumed from step" in out, out[-3000:]

    log = (submitit / job_id / f"{job_id}_0_log.out").read_text()
    if interrupt != "scontrol requeue":  # submitit's handler ran; its "Requeued job" line may not have:
        # the SIGTERM of its own `scontrol requeue` can end the job before it logs it (seen under load)
        assert "Caught signal SIGUSR2" in log and "Calling checkpoint method" in log, log[-3000:]
    m = re.search(r"resuming from step (\d+)", log)
    assert m and int(m.group(1)) >= ckpt_step, log[-3000:]
    (run,) = [r for r in mlflow_runs(f"sqlite:///{tmp_path / 'db'}") if r.data.tags.get("sweep_parent") != "true"]
    assert run.info.status == "FINISHED" and run.data.tags["resumed_from_step"] == m.group(1)
    assert "failure_reason" not in run.data.tags
    for key, points in histories(f"sqlite:///{tmp_path / 'db'}", run.info.run_id).items():
        got = [s for s, _ in points]
        want = list(range(0, steps + 1, every)) if key.startswith("eval/") else list(range(steps))
        assert got == want, f"{key}: {len(got)} points, duplicates or gaps"
