"""A real one-node SLURM cluster (scripts/slurm-up.sh) and the launcher presets.

The ``slurm`` tests start the project-local cluster if it is not up (and stop
it again at the end of the session if they started it); they are skipped
where it cannot run (not root, no slurm and no apt-get, RLHF_SLURM_TESTS=0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_cluster import REPO

APP_DIR = Path(__file__).parents[1] / "data" / "slurm_app"


def _app_conf(tmp_path: Path) -> Path:
    """Tmp config dir: the test app's config.yaml + the project's launcher presets."""
    conf = tmp_path / "conf"
    (conf / "hydra" / "launcher").mkdir(parents=True)
    shutil.copy(APP_DIR / "config.yaml", conf / "config.yaml")
    presets = sorted((REPO / "conf" / "hydra" / "launcher").glob("*.yaml"))
    assert {p.name for p in presets} >= {"local.yaml", "slurm.yaml"}
    for p in presets:
        shutil.copy(p, conf / "hydra" / "launcher" / p.name)
    return conf


def _run_sweep(tmp_path: Path, launcher: str, env: dict[str, str], timeout: float):
    conf = _app_conf(tmp_path)
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable,
        str(APP_DIR / "app.py"),
        "--config-path",
        str(conf),
        "--config-name",
        "config",
        "-m",
        f"hydra/launcher={launcher}",
        "x=1,2",
        f"hydra.sweep.dir={sweep}",
        "hydra.job.chdir=false",
    ]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    results = {}
    for num in (0, 1):
        path = sweep / str(num) / "result.json"
        assert path.is_file(), f"{path} missing\n{proc.stdout}\n{proc.stderr}"
        r = json.loads(path.read_text())
        results[r["x"]] = r
    assert sorted(results) == [1, 2]
    assert [results[x]["y"] for x in (1, 2)] == [10, 20]
    return sweep, results


@pytest.mark.slurm
def test_sbatch_runs_a_job(slurm_env, tmp_path):
    out = tmp_path / "hi.txt"
    proc = subprocess.run(
        ["sbatch", "--wait", "--parsable", "-o", str(tmp_path / "slurm-%j.out"),
         "--wrap", f"echo hi > {out}"],
        env=slurm_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().strip() == "hi"


@pytest.mark.slurm
def test_hydra_slurm_preset_runs_sweep_as_slurm_jobs(slurm_env, tmp_path):
    sweep, results = _run_sweep(tmp_path, "slurm", slurm_env, timeout=300)
    # ran as tasks of one SLURM job array, not as local processes
    job_ids = {r["slurm_job_id"] for r in results.values()}
    assert None not in job_ids and len(job_ids) == 2
    assert sorted(r["slurm_array_task_id"] for r in results.values()) == ["0", "1"]
    assert {r["submitit_executor"] for r in results.values()} == {"slurm"}
    # submitit folders under <sweep>/.submitit/<array id>_<task id>/
    logs = sorted((sweep / ".submitit").glob("*_*/*_log.out"))
    assert len(logs) == 2, list((sweep / ".submitit").rglob("*"))


def test_hydra_local_preset_runs_sweep(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    sweep, results = _run_sweep(tmp_path, "local", env, timeout=300)
    assert {r["slurm_job_id"] for r in results.values()} == {None}
    assert {r["submitit_executor"] for r in results.values()} == {"local"}
    assert len(list((sweep / ".submitit").iterdir())) >= 1
