"""Start (or reuse) the project-local one-node SLURM cluster for tests.

Test modules import the `slurm_env` fixture from here::

    from tests.slurm_cluster import slurm_env  # noqa: F401 - a pytest fixture

    @pytest.mark.slurm
    def test_x(slurm_env): subprocess.run(["sbatch", ...], env=slurm_env)

It does what these helpers do::

    reason = cluster_available()
    if reason: pytest.skip(reason)
    env = ensure_cluster()      # {"SLURM_CONF": ".../.slurm/slurm.conf"}
    subprocess.run(["sbatch", ...], env={**os.environ, **env})

The cluster is the one of ``scripts/slurm-up.sh`` (folder ``$RLHF_SLURM_DIR``,
default ``<repo>/.slurm``). ``scripts/install-slurm.sh`` is run first; it
apt-installs slurm + munge only if they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
BINARIES = ("slurmctld", "slurmd", "sbatch", "sinfo", "munged")
_SBIN = ("/usr/sbin", "/sbin")


def slurm_dir() -> Path:
    return Path(os.environ.get("RLHF_SLURM_DIR", REPO / ".slurm")).resolve()


def _path_with_sbin() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [p for p in _SBIN if p not in parts])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_path_with_sbin())


def cluster_available() -> str | None:
    """None if a cluster can be started here, else the reason it cannot."""
    if os.environ.get("RLHF_SLURM_TESTS", "1") == "0":
        return "RLHF_SLURM_TESTS=0"
    if not sys.platform.startswith("linux"):
        return f"SLURM cluster needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    missing = [b for b in BINARIES if _which(b) is None]
    if missing and _which("apt-get") is None:
        return f"slurm not installed ({', '.join(missing)} missing) and no apt-get to install it"
    return None


def cluster_env() -> dict[str, str]:
    """Environment variables a client subprocess needs to reach the cluster."""
    return {"SLURM_CONF": str(slurm_dir() / "slurm.conf")}


def _script_env() -> dict[str, str]:
    return {**os.environ, "PATH": _path_with_sbin(), "RLHF_SLURM_DIR": str(slurm_dir())}


def cluster_is_up() -> bool:
    """True if all three daemons of this folder run and the node answers."""
    run = slurm_dir() / "run"
    for name in ("munged", "slurmctld", "slurmd"):
        pidfile = run / f"{name}.pid"
        try:
            os.kill(int(pidfile.read_text().strip()), 0)
        except (OSError, ValueError):
            return False
    sinfo = _which("sinfo")
    if sinfo is None:
        return False
    proc = subprocess.run(
        [sinfo, "-h", "-N", "-o", "%t"],
        env={**os.environ, **cluster_env()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode == 0 and proc.stdout.strip().startswith(("idle", "mix", "alloc"))


def _run_script(name: str, timeout: float) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPTS / name)],
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"scripts/{name} failed (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )


def ensure_cluster(install_timeout: float = 900, up_timeout: float = 180) -> dict[str, str]:
    """Install if needed, start the cluster if it is not up; return client env."""
    reason = cluster_available()
    if reason:
        raise RuntimeError(f"no SLURM cluster possible here: {reason}")
    _run_script("install-slurm.sh", install_timeout)
    if not cluster_is_up():
        _run_script("slurm-up.sh", up_timeout)
    return cluster_env()


def stop_cluster(timeout: float = 120) -> None:
    _run_script("slurm-down.sh", timeout)


def _started_marker() -> Path:
    """Present while the cluster runs because a test session started it."""
    return slurm_dir() / "started-by-pytest"


def stop_if_tests_started_it() -> None:
    marker = _started_marker()
    if marker.exists():
        marker.unlink()
        stop_cluster()


@pytest.fixture(scope="session")
def slurm_env():
    """os.environ + SLURM_CONF, for subprocesses that talk to the test cluster.

    Starts the cluster if it is not up, and stops it at the end of the session
    only if a test session started it; skips where no cluster can run here.
    """
    reason = cluster_available()
    if reason:
        pytest.skip(f"SLURM cluster unavailable: {reason}")
    was_up = cluster_is_up()
    env = ensure_cluster()
    if not was_up:
        _started_marker().touch()
    yield {**os.environ, **env}
    # Under pytest-xdist another worker may still be using the cluster: the controller stops
    # it once every worker is done (tests/conftest.py, pytest_sessionfinish).
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        stop_if_tests_started_it()
