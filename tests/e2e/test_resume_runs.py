"""A SIGKILLed `launch.py`, run again, resumes from its checkpoint into the same
MLflow run, and its curve equals an uninterrupted run's.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlhf_sweeps import checkpoint
from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch

STEPS, EVERY = 20, 5


def _args(tmp_path: Path, db: str) -> list[str]:
    return [*SMALL, f"steps={STEPS}", f"checkpoint_every={EVERY}", f"eval_every={EVERY}", "threads=1",
            f"cache_dir={tmp_path / 'cache'}", f"tracking.uri=sqlite:///{tmp_path / db}"]


def _ckpt_step(run_dir: Path) -> int:
    step = checkpoint.latest_step(run_dir)
    return -1 if step is None else step


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_into_the_same_run_exactly(tmp_path):
    # 1. uninterrupted reference (also builds the shared stages)
    ref_args = _args(tmp_path, "ref.db")
    run_launch(ref_args, tmp_path, timeout=900)
    (ref,) = mlflow_runs(f"sqlite:///{tmp_path / 'ref.db'}")
    assert ref.info.status == "FINISHED"
    ref_hist = histories(f"sqlite:///{tmp_path / 'ref.db'}", ref.info.run_id)
    ref_run_dir = Path(ref.data.tags["run_dir"])

    # 2. the same config into another store (so another run folder): kill it between checkpoints
    args = _args(tmp_path, "run.db")
    uri = f"sqlite:///{tmp_path / 'run.db'}"
    proc = subprocess.Popen(launch_cmd(args), cwd=tmp_path, env=launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    runs_dir = tmp_path / "cache" / "runs"
    seen: dict[int, float] = {}  # checkpoint step -> when it appeared
    killed_dir, deadline = None, time.time() + 600
    while time.time() < deadline and proc.poll() is None and 2 * EVERY not in seen:
        found = [p.parent for p in runs_dir.glob("*/checkpoint-*.pt") if p.parent != ref_run_dir]
        if found:
            killed_dir = found[0]
            seen.setdefault(_ckpt_step(killed_dir), time.time())
        time.sleep(0.05)
    assert {EVERY, 2 * EVERY} <= set(seen), f"checkpoints seen: {seen}\n{proc.communicate()[0][-5000:]}"
    # halfway to the next checkpoint: a few steps' metrics sit unflushed in the buffer
    per_step = (seen[2 * EVERY] - seen[EVERY]) / EVERY
    time.sleep(max(0.0, seen[2 * EVERY] + 0.5 * EVERY * per_step - time.time()))
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out[-5000:]
    killed_at = _ckpt_step(killed_dir)
    assert killed_at in (2 * EVERY, 3 * EVERY) and not (killed_dir / "done.json").exists()
    ckpt = checkpoint.load(killed_dir, repair=False)  # everything a resume needs, loadable with weights_only
    assert set(ckpt) >= {"step", "run_id", "policy", "optimizer", "rng", "init_gold", "extra", "pending_metrics"}
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"} and "coef" in ckpt["extra"]
    assert ckpt["optimizer"]["state"] and ckpt["init_gold"].numel() > 0
    (killed,) = mlflow_runs(uri)
    assert killed.info.status == "RUNNING"  # SIGKILL: nothing could mark it
    before = histories(uri, killed.info.run_id)
    # flushed up to the checkpoint and no further; or, killed between the checkpoint's rename and
    # the flush that follows it, up to the one before (the checkpoint holds those steps' metrics
    # as pending, and the resume below must replay them exactly once)
    assert max(s for s, _ in before["train/loss"]) in (killed_at - 1, killed_at - EVERY - 1)

    # 3. rerun the same command: resumes from the checkpoint into the same MLflow run
    proc2 = run_launch(args, tmp_path, timeout=900)
    assert f"resuming from step {killed_at}" in proc2.stdout, proc2.stdout[-3000:]
    (run,) = mlflow_runs(uri)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_step"] == str(killed_at)
    hist = histories(uri, run.info.run_id)

    # every key, every step, exactly once, the same steps as the uninterrupted run
    assert sorted(hist) == sorted(ref_hist)
    for key, points in hist.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{key}: duplicated steps {steps}"
        assert steps == [s for s, _ in ref_hist[key]], f"{key}: {steps} vs {[s for s, _ in ref_hist[key]]}"
    # and the same numbers (timings and memory excepted)
    for key, points in hist.items():
        if key.startswith("perf/"):
            continue
        for (s, v), (_, v_ref) in zip(points, ref_hist[key]):
            assert v == pytest.approx(v_ref, abs=1e-6), f"{key} at step {s}: {v} vs {v_ref}"
    assert hist["eval/gold_reward"][-1][0] == STEPS


