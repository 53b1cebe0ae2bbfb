"""Checkpoint and resume: a SIGKILLed job, rerun, continues into the same MLflow run.

The end-to-end test kills a real `launch.py` process mid-training and reruns
the same command; the MLflow history must hold every (key, step) exactly once
and, on CPU with a fixed seed, the same numbers as an uninterrupted run.
The unit tests cover the instants a SIGKILL cannot be aimed at: between a
checkpoint's rename and the metrics flush, and halfway through that flush.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlhf_sweeps import checkpoint
from rlhf_sweeps.tracking import Tracker

try:
    from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch
except ModuleNotFoundError:  # pytest's rootdir-less "prepend" import
    from launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch  # type: ignore

STEPS, EVERY = 30, 5


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
    assert max(s for s, _ in before["train/loss"]) == killed_at - 1  # flushed up to the checkpoint, no further

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


# ---------------------------------------------------------------------------- units
def _metrics(step: int) -> dict[str, float]:
    return {"train/loss": 1.0 / (step + 1), "train/kl": 0.1 * step}


def _eval(step: int) -> dict[str, float]:
    return {"eval/gold": 0.01 * step}


def _loop(tr: Tracker, run_dir: Path, start: int, stop: int, every: int = 3) -> None:
    """The loops' order: evaluate (every `every`), checkpoint, then train and log the step."""
    for step in range(start, stop + 1):
        if step % every == 0:
            tr.log_metrics(_eval(step), step)
        if step > start and step % every == 0:
            checkpoint.save(run_dir, {"step": step, "run_id": tr.run_id, "pending_metrics": tr.pending()})
            tr.flush()
        if step < stop:
            tr.log_metrics(_metrics(step), step)


def _assert_history(uri: str, run_id: str, stop: int, every: int = 3) -> None:
    hist = histories(uri, run_id)
    for key in ("train/loss", "train/kl"):
        assert [s for s, _ in hist[key]] == list(range(stop)), key
        assert [v for _, v in hist[key]] == pytest.approx([_metrics(s)[key] for s in range(stop)])
    assert [s for s, _ in hist["eval/gold"]] == list(range(0, stop + 1, every))


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    """One store for the unit tests (creating MLflow's tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.mark.parametrize("flushed", [0, 4, 7])
def test_resume_replays_a_flush_cut_short_exactly_once(tmp_path, uri, flushed):
    """Killed after checkpoint 6 was renamed into place, when `flushed` of its 7 pending points had landed."""
    tr = Tracker(uri, "resume-units")
    run_id = tr.start("r", {}, {})
    run_dir = tmp_path / "run"
    _loop(tr, run_dir, 0, 3)  # checkpoint 3, flushed
    for step in range(3, 6):
        tr.log_metrics(_metrics(step), step)
    tr.log_metrics(_eval(6), 6)
    checkpoint.save(run_dir, {"step": 6, "run_id": run_id, "pending_metrics": tr.pending()})
    tr._buffer = tr.pending()[:flushed]  # noqa: SLF001 - the process dies during this flush
    tr.flush()

    ckpt = checkpoint.load(run_dir)
    assert ckpt["step"] == 6 and len(ckpt["pending_metrics"]) == 7  # steps 3, 4, 5 x 2 keys + eval at 6
    tr = Tracker(uri, "resume-units")  # the resumed job, as rlhf_sweeps.job does it
    tr.start("r", {}, {}, run_id=run_id)
    tr.replay(ckpt["pending_metrics"])
    _loop(tr, run_dir, ckpt["step"], 9)  # re-evaluates at 6, as the loops do
    tr.finish()
    _assert_history(uri, run_id, 9)


def test_failed_run_keeps_its_curve_and_a_resume_does_not_duplicate_it(tmp_path, uri):
    """A failure flushes the buffer (steps after the last checkpoint); a later resume drops those steps."""
    tr = Tracker(uri, "resume-units")
    run_id = tr.start("r", {}, {})
    _loop(tr, tmp_path / "run", 0, 3)
    for step in range(3, 5):  # fails during step 5
        tr.log_metrics(_metrics(step), step)
    tr.finish("FAILED", "FloatingPointError: non-finite loss")
    assert [s for s, _ in histories(uri, run_id)["train/loss"]] == [0, 1, 2, 3, 4]

    ckpt = checkpoint.load(tmp_path / "run")
    tr = Tracker(uri, "resume-units")
    tr.start("r", {}, {}, run_id=run_id)
    tr.replay(ckpt["pending_metrics"])
    _loop(tr, tmp_path / "run", ckpt["step"], 9)
    tr.finish()
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and "failure_reason" not in run.data.tags
    _assert_history(uri, run_id, 9)
