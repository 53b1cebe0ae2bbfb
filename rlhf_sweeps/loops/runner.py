"""Build what a job needs (task, models, sampler, evaluator) and run its loop.

Kept apart from `job.py` so the lifecycle (skip / resume / MLflow status) and
the construction of models stay separately readable. Tracking is passed in
as plain callables: the loops never see MLflow.

Every algorithm gets the same policy, frozen SFT reference, optimizer,
sampler and `Evaluator`, so their eval/* curves are comparable; `algo.name`
only picks the loop: rloo / reinforce -> `online.train_online`, ppo / grpo ->
`ppo.train_clipped` (PPO also gets its value model here), simpo / dpo ->
`preference.train_offline_preference`, online_simpo ->
`preference.train_online_simpo`, bon -> `bon.run_bon` (no training).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import psutil
import torch

from rlhf_sweeps import checkpoint
from rlhf_sweeps import metrics as M
from rlhf_sweeps.evaluation import Evaluator
from rlhf_sweeps.models import load_causal_lm, prepare_for_training, resolve_device
from rlhf_sweeps.rewards import ZeroReward
from rlhf_sweeps.terminal import mlflow_run_url, run_end_block
from rlhf_sweeps.rollout import choose_engine, make_sampler


def rss_gb() -> float:
    return psutil.Process().memory_info().rss / 2**30


def learning_range_warning(cfg) -> str | None:
    """A warning when `lr` is below the model's measured learning range (the run still goes)."""
    rng = cfg.model.learning_range
    if not rng or cfg.lr >= rng[0] or cfg.algo.name == "bon":
        return None
    return (f"[rlhf-sweeps] warning: lr={cfg.lr:g} is below the measured learning range of "
            f"model={cfg.model.name} ({rng[0]:g} to {rng[1]:g}): gold, proxy and KL are not expected to "
            "move. The paper's 1e-7/1e-6 are for Pythia-scale widths (README, 'The embedded world').")


def run_training(cfg, plan, tracker, run_dir: Path, ckpt) -> None:
    from rlhf_sweeps.loops.online import OnlineJob, make_coef_controller, train_online
    from rlhf_sweeps.loops.preference import PreferenceJob, train_offline_preference, train_online_simpo
    from rlhf_sweeps.tasks import build_task

    warning = learning_range_warning(cfg)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    task = build_task(cfg)
    tracker.log_json(task.meta, "task_stages.json")

    # policy and reference on `device` (bf16 autocast / gradient checkpointing on CUDA only);
    # build_task put the reward models there too
    device, m = resolve_device(cfg.device), cfg.model
    policy, ref = prepare_for_training(load_causal_lm(task.policy_dir, trust_remote_code=m.trust_remote_code),
                                       device, m.dtype, m.gradient_checkpointing)
    tracker.set_tags({"device": str(device)})
    proxy, gold = task.proxy, task.gold
    # What the policy is trained on (the `reward` group): the proxy RM; the gold itself
    # (oracle control: nothing to exploit); or zero (the regularizer alone). The
    # evaluator always measures both proxy and gold.
    reward = {"proxy": proxy, "gold": gold, "zero": ZeroReward()}[cfg.reward.name]
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    coef = make_coef_controller(cfg)
    value_model = value_optimizer = None
    if cfg.algo.name == "ppo":  # its critic, from the proxy RM or the policy (rlhf_sweeps/value_model.py)
        from rlhf_sweeps.value_model import build_value_model

        value_model = build_value_model(cfg.algo.value_init, policy, task.proxy_model, task.proxy.norm,
                                        getattr(task.proxy, "same_vocab", True), device, m.dtype,
                                        m.gradient_checkpointing)
        value_optimizer = torch.optim.Adam(value_model.parameters(), lr=cfg.algo.value_lr or cfg.lr)
    evaluator = Evaluator(task.eval_prompts, proxy, gold, ref, cfg.rollout.temperature,
                          cfg.task.eval_samples_per_prompt, cfg.task.eval_seed,
                          decode=task.decode, n_table_rows=cfg.tracking.samples_per_eval)
    start_step = 0
    if ckpt is not None:
        policy.load_state_dict(ckpt["policy"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if "coef" in ckpt["extra"]:  # preference loops have no coefficient controller
            coef.load_state_dict(ckpt["extra"]["coef"])
        if value_model is not None:
            value_model.load_state_dict(ckpt["extra"]["value_model"])
            value_optimizer.load_state_dict(ckpt["extra"]["value_optimizer"])
        evaluator.init_gold = ckpt["init_gold"]
        checkpoint.set_rng_state(ckpt["rng"])
        start_step = ckpt["step"]
    # every eval's numbers, for the block printed when the run ends (kept across a resume)
    history: dict[int, dict] = dict(ckpt.get("eval_history", {})) if ckpt is not None else {}

    def log(values: dict, step: int) -> None:
        tracker.log_metrics(values, step)
        if M.EVAL_GOLD_REWARD in values:
            history[step] = dict(values)

    engine, why = choose_engine(cfg.rollout.name, sum(p.numel() for p in policy.parameters()),
                                device.type == "cuda")
    tracker.log_params({M.PARAM_ENGINE: engine})
    print(f"[rlhf-sweeps] rollout engine: {engine} ({why})", flush=True)
    sampler = make_sampler(engine, cfg.rollout, policy, model_dir=task.policy_dir)
    if ckpt is not None:
        sampler.sync_weights(policy)

    def save_checkpoint(step: int, extra: dict) -> None:
        checkpoint.save(run_dir, {
            "step": step, "run_id": tracker.run_id, "policy": policy.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(),
            "init_gold": evaluator.init_gold, "extra": extra, "pending_metrics": tracker.pending(),
            "eval_history": history,
        })
        tracker.flush()  # only after the rename: exactly-once metrics (rlhf_sweeps/tracking.py)

    def log_samples(rows: list[dict], step: int) -> None:
        tracker.log_table(rows, f"{M.ARTIFACT_SAMPLES_DIR}/step_{step:06d}.json")  # a table in the MLflow UI

    def train_prompts(step: int) -> list[list[int]]:
        return task.train_prompts(cfg.seed, step, plan.prompts_per_step)

    common = dict(cfg=cfg, plan=plan, policy=policy, ref=ref, optimizer=optimizer, sampler=sampler, evaluator=evaluator,
                  log=log, log_samples=log_samples, save_checkpoint=save_checkpoint,
                  rss_gb=rss_gb)
    try:
        name = cfg.algo.name
        if name == "bon":
            from rlhf_sweeps.loops.bon import run_bon

            run_dir.mkdir(parents=True, exist_ok=True)  # no checkpoint creates it; job.py writes done.json there
            run_bon(cfg, policy, sampler, evaluator, reward, proxy, gold, task.eval_prompts, log, log_samples)
        elif name in ("simpo", "dpo"):
            train_offline_preference(PreferenceJob(**common, pairs=task.pairs()), start_step)
        elif name == "online_simpo":
            train_online_simpo(PreferenceJob(**common, reward=reward, train_prompts=train_prompts), start_step)
        elif name in ("ppo", "grpo"):
            from rlhf_sweeps.loops.ppo import ClippedJob, train_clipped

            train_clipped(ClippedJob(**common, reward=reward, train_prompts=train_prompts, coef=coef,
                                     value_model=value_model, value_optimizer=value_optimizer), start_step)
        else:
            train_online(OnlineJob(**common, reward=reward, train_prompts=train_prompts, coef=coef), start_step)
    finally:
        sampler.close()
    print(run_end_block(f"MLflow run {tracker.run_id}", history,
                        mlflow_run_url(cfg.tracking.uri, tracker.experiment_id, tracker.run_id)), flush=True)
