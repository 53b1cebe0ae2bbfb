"""Sweeps with real processes: shared stages built once, one parent run, skip, force, failures.

`launch.py -m hydra/launcher=local ...` runs its jobs as parallel processes
through submitit; `hydra/launcher=basic` runs them one after another in the
launching process. Both must give the same bookkeeping.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.launching import SMALL, mlflow_runs, run_launch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One stage cache for the module: the first test builds it, the others reuse it."""
    return tmp_path_factory.mktemp("cache")


def _sweep(tmp_path: Path, cache_dir: Path, launcher: str, *axes: str, db: str = "mlflow.db",
           sweep: str = "sweep", check: bool = True, timeout: float = 1200):
    args = ["-m", f"hydra/launcher={launcher}", *SMALL, *axes, f"cache_dir={cache_dir}",
            f"tracking.uri=sqlite:///{tmp_path / db}", f"hydra.sweep.dir={tmp_path / sweep}"]
    return run_launch(args, tmp_path, timeout=timeout, check=check)


def _split(runs):
    parents = [r for r in runs if r.data.tags.get("sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("sweep_parent") != "true"]
    return parents, children


def test_four_parallel_jobs_build_each_stage_once_under_one_parent(tmp_path, cache_dir):
    proc = _sweep(tmp_path, cache_dir, "local", "seed=0,1,2,3")

    # every stage built exactly once, although four processes needed each at the same moment
    built = [line.split()[1].rsplit("-", 1)[0] for line in (cache_dir / "builds.log").read_text().splitlines()]
    assert sorted(built) == ["pairs", "proxy", "sft"], built

    parents, children = _split(mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert len(parents) == 1 and len(children) == 4
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    sweep_id = parent.data.tags["sweep_id"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["sweep_id"] == sweep_id
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["torch_threads"] == "1"  # conf/hydra/launcher/local.yaml: cpus_per_task 1
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1", "2", "3"]
    assert re.search(r"4 job\(s\): 4 finished;", proc.stdout), proc.stdout[-3000:]
    assert f"MLflow parent run {parent.info.run_id} ended FINISHED" in proc.stdout

    # the same command again trains nothing, opens no MLflow run, and says what it skipped
    again = _sweep(tmp_path, cache_dir, "local", "seed=0,1,2,3", sweep="sweep2")
    assert re.search(r"4 job\(s\): 4 skipped; no MLflow parent run", again.stdout), again.stdout[-3000:]
    assert again.stdout.count("SKIPPED") == 4
    assert len(mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}")) == 5
    assert len((cache_dir / "builds.log").read_text().splitlines()) == 3

    # force=true reruns (here one member), into a new run under a new parent
    forced = _sweep(tmp_path, cache_dir, "basic", "seed=0", "force=true", sweep="sweep3")
    assert re.search(r"1 job\(s\): 1 finished;", forced.stdout), forced.stdout[-3000:]
    parents, children = _split(mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert len(parents) == 2 and len(children) == 5


@pytest.mark.parametrize("launcher", ["basic", "local"])
def test_a_failing_member_fails_alone_and_the_sweep_reports_it(tmp_path, cache_dir, launcher):
    # lr=1e30: the first update sends the weights to ~1e30 and the next forward pass to inf/NaN
    proc = _sweep(tmp_path, cache_dir, launcher, "lr=1e-3,1e30", check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"2 job\(s\): 1 failed, 1 finished;", proc.stdout), proc.stdout[-3000:]

    parents, children = _split(mlflow_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    (parent,) = parents
    assert parent.info.status == "FAILED"
    by_lr = {r.data.params["lr"]: r for r in children}
    assert by_lr["0.001"].info.status == "FINISHED"
    bad = by_lr["1e+30"]
    assert bad.info.status == "FAILED"
    reason = bad.data.tags["failure_reason"].lower()
    assert any(s in reason for s in ("nan", "inf", "non-finite")), reason
    assert bad.data.tags["mlflow.parentRunId"] == parent.info.run_id
