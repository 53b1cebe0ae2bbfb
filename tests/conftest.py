"""Shared fixtures: a session-wide stage cache for smoke runs, and a launcher helper.

Every test that runs `launch.py` does so in a subprocess, exactly as a user
would, with its own SQLite tracking store and a shared stage cache (so the
smoke world's SFT / pairs / proxy stages are built once per test session).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_cluster import slurm_env  # noqa: F401  (the one-node SLURM fixture of tests/e2e)

ROOT = Path(__file__).resolve().parent.parent


def run_launch(args: list[str], *, cwd: Path = ROOT, timeout: int = 600, check: bool = True,
               env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


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


def pytest_collection_modifyitems(items):
    """`make test` runs two xdist workers (--dist loadgroup): the tests that share the
    one-node SLURM cluster all go to one of them, which starts it once."""
    for item in items:
        if "slurm_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("slurm"))
