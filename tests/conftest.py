"""Shared fixtures: a session-wide stage cache for smoke runs, and a launcher helper.

Every test that runs `launch.py` does so in a subprocess, exactly as a user
would, with its own SQLite tracking store and a shared stage cache (so the
smoke world's SFT / pairs / proxy stages are built once per test session).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from tests import launching
from tests.slurm_cluster import slurm_env  # noqa: F401  (the one-node SLURM fixture of tests/e2e)
from tests.slurm_cluster import stop_if_tests_started_it

ROOT = Path(__file__).resolve().parent.parent
HAVE_VLLM = importlib.util.find_spec("vllm") is not None  # without importing it (seconds)


def run_launch(args: list[str], *, cwd: Path = ROOT, timeout: int = 600, check: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
    """`tests.launching.run_launch` in the caller's own environment (SLURM_* and Hydra's short
    errors kept), from the repository root unless `cwd` says otherwise."""
    return launching.run_launch(args, cwd, timeout, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})},
                                check=check)


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """One stage cache for all smoke runs of the session."""
    return tmp_path_factory.mktemp("smoke_cache")


@pytest.fixture
def tracking_uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    """The tiny hub (tests/tiny_hub.py): datasets and checkpoints of a real task, on disk."""
    from tests import tiny_hub

    return tiny_hub.build(tmp_path_factory.mktemp("tiny_hub"))


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    """One stage cache for a module's real-task runs."""
    return tmp_path_factory.mktemp("real_cache")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """For `make test`'s two workers (`pytest -n 2 --dist loadgroup --no-loadscope-reorder`):
    the tests that share the one-node SLURM cluster go to one worker, which starts and stops it
    once; so do a module's tests that share a module- or class-scoped fixture (a multirun, a
    tiny hub, an engine), built once, not per worker. Then the longest work goes first, so that
    the last minutes are short tests filling both workers rather than one long run on one:
    the SLURM group, the slow end-to-end runs, the other end-to-end tests, the unit tests that
    share an engine or a fixture, the other unit tests (a stable sort: file order within each)."""
    if not hasattr(config, "workerinput"):  # xdist's workers collect; its controller schedules
        return
    rank = {}
    for item in items:
        slurm = "slurm_env" in item.fixturenames
        defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        shared = any(d.scope in ("module", "class") for fixturedefs in defs.values() for d in fixturedefs)
        if slurm or shared:
            item.add_marker(pytest.mark.xdist_group("slurm" if slurm else item.module.__name__))
        e2e = item.nodeid.startswith("tests/e2e/")
        rank[item] = 0 if slurm else 1 if e2e and item.get_closest_marker("slow") else 2 if e2e else 3 if shared else 4
    items.sort(key=rank.__getitem__)  # xdist hands out the groups in this order (--no-loadscope-reorder)


def pytest_sessionfinish(session):
    """Under pytest-xdist: the controller stops the SLURM cluster a worker started, once all
    workers are done (a worker's own teardown could stop it under another worker's test)."""
    if not hasattr(session.config, "workerinput"):  # the controller, or a run without xdist
        stop_if_tests_started_it()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_per_worker():
    """Under `make test`'s two xdist workers the two cores are shared; torch's default of one thread
    per core then makes the in-process tests' tiny models wait on each other (a 2 s test
    took 30 s). One thread each, as every launched job gets (tests/launching.py)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
    yield
