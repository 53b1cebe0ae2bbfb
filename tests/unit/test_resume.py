"""Exactly-once metrics across a resume: a flush cut short is replayed once, and a
failed run keeps its curve without duplicates. The SIGKILLed `launch.py` that
resumes into the same run is in tests/e2e/test_resume_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_sweeps import checkpoint
from rlhf_sweeps.tracking import Tracker
from tests.launching import histories

STEPS, EVERY = 30, 5


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
