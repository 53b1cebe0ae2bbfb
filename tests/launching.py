"""Run `launch.py` as a real process and read back what it wrote (tests only).

Shared by the end-to-end sweep, resume and SLURM tests. Every run uses the
smoke experiment made smaller still (a 20-step SFT, 64 pairs), the HF sampler
(deterministic on CPU, no engine start-up) and one torch thread unless the
test says otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch.py"

# Stage sizes: enough for every stage to run for real, small enough for 2 cores.
SMALL = [
    "experiment=smoke",
    "rollout=hf",
    "task.sft.steps=20",
    "task.sft.warmup_steps=5",
    "task.pairs.n_pairs=64",
    "task.proxy.n_norm_prompts=16",
    "task.n_eval_prompts=8",
]


def one_thread(args: list[str]) -> list[str]:
    """`args` + `threads=1`, unless they set threads or pick a launcher (whose cpus_per_task
    a test may check). Under `make test`'s two xdist workers the two cores are shared, and a job
    that takes every core for a tiny model only makes both wait."""
    if any(a.startswith(("threads=", "hydra/launcher=")) for a in args):
        return list(args)
    return [*args, "threads=1"]


def launch_cmd(args: list[str]) -> list[str]:
    return [sys.executable, str(LAUNCH), *one_thread(args)]


def launch_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HYDRA_FULL_ERROR": "1"})
    env.update(extra or {})
    return env


def run_launch(args: list[str], cwd: Path, timeout: float, env: Optional[dict[str, str]] = None,
               check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(launch_cmd(args), cwd=cwd, env=env or launch_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"launch.py {' '.join(args)} exited {proc.returncode}\n"
                             f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def mlflow_runs(uri: str, experiment: str = "rlhf-sweeps") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


def histories(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """key -> [(step, value)] sorted by step, every stored point (duplicates kept)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics.keys()
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}
