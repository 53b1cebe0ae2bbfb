"""Derived sizes, computed once from the config into a frozen Plan.

Derived values never go back into the config (a sweep would otherwise log
them as if they were choices). Inexact splits fail here, before compute, with
a ConfigError that names the keys to change.

Batch vocabulary (as in summarize_from_feedback_details):
- online algorithms: one optimizer step uses `rollout_batch` = prompts_per_step x k
  sampled responses (ppo / grpo: a minibatch of `algo.ppo_minibatch_size` of them, when
  set); online SimPO the prompts_per_step (best, worst) pairs ranked among them;
  offline algorithms `algo.batch_size` pairs. That is `update_batch`.
- the update runs in micro-batches of `micro_batch_size` (sequences online, pairs
  offline) and accumulates gradients over `grad_accum_steps` = update_batch /
  micro_batch_size of them. `algo.micro_batch_size=null` means one micro-batch.
  The preference loops allow a last, smaller micro-batch (each is weighted by its
  share of the pairs); the sequence loops need exact division.

The loops read their sizes from the Plan, never from `cfg.algo` again.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_sweeps.config import CLIPPED_ALGOS, OFFLINE_ALGOS, REAL_TASKS, ConfigError


@dataclass(frozen=True)
class Plan:
    steps: int  # optimizer steps; the loops evaluate and checkpoint once more, at `steps`
    prompts_per_step: int
    samples_per_prompt: int
    rollout_batch: int  # responses per optimizer step (online algorithms)
    n_evals: int
    eval_responses: int
    tokens_per_step_max: int  # response tokens per optimizer step, at most
    update_batch: int  # sequences (online) or pairs (offline) per optimizer step
    micro_batch_size: int  # sequences (online) or pairs (offline) per forward/backward
    grad_accum_steps: int  # micro-batches per optimizer step
    max_prompt_tokens: int
    max_sequence_tokens: int  # prompt + response: the longest sequence a forward sees


def _div(a: int, b: int, what: str, fix: str) -> int:
    """`a // b`, or a ConfigError with `fix` when `b` does not divide `a` (batch sizes never round)."""
    if b == 0 or a % b:
        raise ConfigError(f"Invalid config:\n  {what}: {a} is not divisible by {b}\n{fix}")
    return a // b


def make_plan(cfg) -> Plan:
    algo = cfg.algo
    batch = algo.prompts_per_step * algo.k
    offline = algo.name in OFFLINE_ALGOS
    update = algo.batch_size if offline else batch
    unit = "pairs (algo.batch_size)" if offline else "responses (algo.prompts_per_step x algo.k)"
    if algo.name == "online_simpo":  # one (best, worst) pair per prompt
        update, unit = algo.prompts_per_step, "pairs (algo.prompts_per_step)"
    if algo.name in CLIPPED_ALGOS and algo.ppo_minibatch_size is not None:
        # ppo / grpo: one optimizer step per minibatch of the rollout, ppo_epochs passes
        options = [d for d in range(1, batch + 1) if batch % d == 0]
        _div(batch, algo.ppo_minibatch_size, f"rollout batch of {batch} {unit} / algo.ppo_minibatch_size",
             f"Set algo.ppo_minibatch_size to a divisor of {batch} (one of {options}), or null for one "
             "minibatch (the whole rollout).")
        update, unit = algo.ppo_minibatch_size, "sequences (algo.ppo_minibatch_size)"
    micro = algo.micro_batch_size or update
    divisors = [d for d in range(1, update + 1) if update % d == 0]
    accum = _div(update, micro, f"update batch of {update} {unit} / algo.micro_batch_size",
                 f"Set algo.micro_batch_size to a divisor of {update} (one of {divisors}), or null.")
    n_evals = len(range(0, cfg.steps, cfg.eval_every)) + (0 if cfg.steps % cfg.eval_every == 0 else 1)
    if cfg.task.name in REAL_TASKS:
        max_prompt = cfg.task.max_prompt_tokens
        max_response = max(cfg.rollout.max_new_tokens, (cfg.task.max_response_tokens or 0) if offline else 0)
    else:  # the embedded world: <bos> + words + <sep>
        max_prompt = cfg.task.world.max_prompt_words + 2
        max_response = max(cfg.rollout.max_new_tokens, cfg.task.world.max_response_words + 1)
    return Plan(
        steps=cfg.steps,
        prompts_per_step=algo.prompts_per_step,
        samples_per_prompt=algo.k,
        rollout_batch=batch,
        n_evals=n_evals + (1 if cfg.steps % cfg.eval_every == 0 else 0),
        eval_responses=cfg.task.n_eval_prompts * cfg.task.eval_samples_per_prompt,
        tokens_per_step_max=batch * cfg.rollout.max_new_tokens,
        update_batch=update,
        micro_batch_size=micro,
        grad_accum_steps=accum,
        max_prompt_tokens=max_prompt,
        max_sequence_tokens=max_prompt + max_response,
    )
