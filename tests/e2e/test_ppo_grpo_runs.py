"""PPO and GRPO through `launch.py`: smoke runs log every key finite, a multirun
gives four children under one parent, a SIGKILLed PPO run resumes to the
numbers of an uninterrupted one, and PPO's critic starts from a GPT-NeoX
reward model on a real task. The math and the loop are in tests/unit/test_ppo_grpo.py.
"""

from __future__ import annotations

import math
import signal
import subprocess
import time
from pathlib import Path

import pytest

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import checkpoint
from rlhf_sweeps import metrics as M
from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs
from tests.launching import run_launch as run_in


@pytest.fixture(scope="module")
def multirun(tmp_path_factory, smoke_cache):
    """One multirun over algo x regularizer on the smoke world: (the process, every run,
    {(algo, regularizer): child run}, the store's uri). Its regularizer=kl members are each
    algorithm's default run (conf/config.yaml's default regularizer is kl)."""
    tmp = tmp_path_factory.mktemp("ppo_grpo")
    uri = f"sqlite:///{tmp}/mlflow.db"
    proc = run_in(["-m", "experiment=smoke", "algo=ppo,grpo", "regularizer=entropy,kl", "rollout=hf", "threads=1",
                   f"cache_dir={smoke_cache}", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp / 'sweep'}"],
                  tmp, timeout=1800)
    runs = mlflow_runs(uri)
    children = {(r.data.params["algo.name"], r.data.params["regularizer.name"]): r
                for r in runs if r.data.tags.get(M.TAG_IS_SWEEP_PARENT) != "true"}
    return proc, runs, children, uri


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_smoke_run_logs_every_eval_key_finite(algo, multirun):
    _, _, children, uri = multirun
    run = children[(algo, "kl")]
    assert run.info.status == "FINISHED"
    hist = histories(uri, run.info.run_id)
    for key in M.EVAL_KEYS:
        assert [s for s, _ in hist[key]] == [0, 3, 6], key
        assert all(math.isfinite(v) for _, v in hist[key]), key
    keys = [M.TRAIN_CLIP_FRAC, M.TRAIN_APPROX_KL, *M.TRAIN_KEYS]
    keys += [M.TRAIN_VALUE_LOSS, M.TRAIN_EXPLAINED_VARIANCE] if algo == "ppo" else []
    for key in keys:
        assert [s for s, _ in hist[key]] == list(range(6)), key
    if algo == "ppo":  # four passes over each rollout: the later ones are off-policy and clip
        assert max(v for _, v in hist[M.TRAIN_CLIP_FRAC]) > 0 and all(v > 0 for _, v in hist[M.TRAIN_VALUE_LOSS])
    else:  # one on-policy pass
        assert all(v == 0 for _, v in hist[M.TRAIN_CLIP_FRAC])
    assert run.data.params["regularizer.estimator"] == ("k1" if algo == "ppo" else "k3")


@pytest.mark.slow
def test_multirun_over_algorithms_and_regularizers_gives_four_children_under_one_parent(multirun):
    proc, runs, children, _ = multirun
    parents = [r for r in runs if r.data.tags.get(M.TAG_IS_SWEEP_PARENT) == "true"]
    assert len(parents) == 1 and len(children) == 4, proc.stdout[-3000:]
    assert all(r.info.status == "FINISHED" for r in children.values())
    assert all(r.data.tags[M.TAG_PARENT] == parents[0].info.run_id for r in children.values())
    assert sorted(children) == [("grpo", "entropy"), ("grpo", "kl"), ("ppo", "entropy"), ("ppo", "kl")]


STEPS, EVERY = 12, 4


def _resume_args(tmp_path: Path, db: str) -> list[str]:
    return [*SMALL, "algo=ppo", "regularizer.adaptive=true", f"steps={STEPS}", f"checkpoint_every={EVERY}",
            f"eval_every={EVERY}", "threads=1", f"cache_dir={tmp_path / 'cache'}",
            f"tracking.uri=sqlite:///{tmp_path / db}"]


@pytest.mark.slow
def test_sigkilled_ppo_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    """Like RLOO's test in tests/e2e/test_resume_runs.py, with PPO's value model, its optimizer and the
    adaptive KL controller in the checkpoint: any of them not restored changes the numbers."""
    run_in(_resume_args(tmp_path, "ref.db"), tmp_path, timeout=900)  # uninterrupted (builds the stages)
    (ref,) = mlflow_runs(f"sqlite:///{tmp_path / 'ref.db'}")
    ref_hist = histories(f"sqlite:///{tmp_path / 'ref.db'}", ref.info.run_id)
    ref_dir = Path(ref.data.tags["run_dir"])

    uri = f"sqlite:///{tmp_path / 'run.db'}"
    proc = subprocess.Popen(launch_cmd(_resume_args(tmp_path, "run.db")), cwd=tmp_path, env=launch_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, run_dir = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        dirs = [p.parent for p in (tmp_path / "cache" / "runs").glob("*/checkpoint*.pt") if p.parent != ref_dir]
        if dirs:
            run_dir = dirs[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # right after the first checkpoint landed
    out, _ = proc.communicate(timeout=60)
    assert run_dir is not None, out[-5000:]
    ckpt = checkpoint.load(run_dir)
    assert 0 < ckpt["step"] < STEPS and not (run_dir / "done.json").exists(), "killed too late to test a resume"
    assert {"coef", "value_model", "value_optimizer"} <= set(ckpt["extra"])
    assert ckpt["extra"]["value_optimizer"]["state"]  # Adam moments of the critic, not an empty optimizer
    killed_at = ckpt["step"]

    proc2 = run_in(_resume_args(tmp_path, "run.db"), tmp_path, timeout=900)
    assert f"resuming from step {killed_at}" in proc2.stdout, proc2.stdout[-3000:]
    (run,) = mlflow_runs(uri)
    assert run.info.status == "FINISHED"
    hist = histories(uri, run.info.run_id)
    assert sorted(hist) == sorted(ref_hist)
    for key in (M.TRAIN_VALUE_LOSS, M.TRAIN_EXPLAINED_VARIANCE, M.TRAIN_COEF, M.EVAL_GOLD_REWARD):
        assert key in hist, key
    for key, points in hist.items():
        if key.startswith("perf/"):
            continue
        assert [s for s, _ in points] == [s for s, _ in ref_hist[key]], key
        for (s, v), (_, v_ref) in zip(points, ref_hist[key]):
            assert v == pytest.approx(v_ref, abs=1e-6, nan_ok=True), f"{key} at step {s}: {v} vs {v_ref}"


@pytest.mark.slow
def test_ppo_on_real_loading_starts_its_critic_from_a_gpt_neox_reward_model(tmp_path):
    """paper_tldr_tiny (tests/tiny_hub.py: GPT-NeoX stand-ins for the Pythia checkpoints): the critic
    is a copy of the proxy RM, which reads the policy's tokenizer. A proxy with another tokenizer
    (the gold stand-in) cannot start the critic: the error names algo.value_init=policy, which runs."""
    from tests import tiny_hub

    hub = tiny_hub.build(tmp_path / "hub")
    base = ["experiment=paper_tldr_tiny", "algo=ppo", f"task.dataset={hub['tldr']}",
            f"model.policy_path={hub['policy']}", f"model.gold_rm_path={hub['gold_rm']}",
            f"cache_dir={tmp_path / 'cache'}"]
    uri = f"sqlite:///{tmp_path}/ok.db"
    run_in([*base, f"model.proxy_rm_path={hub['proxy_rm']}", f"tracking.uri={uri}"], tmp_path, timeout=900)
    (run,) = mlflow_runs(uri)
    hist = histories(uri, run.info.run_id)
    assert run.info.status == "FINISHED" and [s for s, _ in hist[M.EVAL_GOLD_REWARD]] == [0, 2, 4]
    assert all(math.isfinite(v) for _, v in hist[M.TRAIN_VALUE_LOSS])
    other = [*base, f"model.proxy_rm_path={hub['gold_rm']}"]
    proc = run_in([*other, f"tracking.uri=sqlite:///{tmp_path}/bad.db"], tmp_path, timeout=900, check=False)
    assert proc.returncode != 0 and "algo.value_init=policy" in proc.stdout + proc.stderr
    run_in([*other, "algo.value_init=policy", f"tracking.uri=sqlite:///{tmp_path}/policy.db"], tmp_path,
           timeout=900)
