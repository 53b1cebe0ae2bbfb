"""Derived sizes, computed once from the config into a frozen Plan.

Derived values never go back into the config (a sweep would otherwise log
them as if they were choices). Inexact splits fail here, before compute.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_sweeps.algos.ops import exact_div


@dataclass(frozen=True)
class Plan:
    prompts_per_step: int
    samples_per_prompt: int
    rollout_batch: int  # responses per optimizer step
    n_evals: int
    eval_responses: int
    tokens_per_step_max: int


def make_plan(cfg) -> Plan:
    batch = cfg.algo.prompts_per_step * cfg.algo.k
    exact_div(batch, cfg.algo.k, "rollout batch / algo.k")
    n_evals = len(range(0, cfg.steps, cfg.eval_every)) + (0 if cfg.steps % cfg.eval_every == 0 else 1)
    return Plan(
        prompts_per_step=cfg.algo.prompts_per_step,
        samples_per_prompt=cfg.algo.k,
        rollout_batch=batch,
        n_evals=n_evals + (1 if cfg.steps % cfg.eval_every == 0 else 0),
        eval_responses=cfg.task.n_eval_prompts * cfg.task.eval_samples_per_prompt,
        tokens_per_step_max=batch * cfg.rollout.max_new_tokens,
    )
