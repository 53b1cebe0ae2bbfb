"""What every training loop shares: the schedule, the terminal, the rollout seed.

`LoopScaffold` holds the eval / checkpoint schedule (eval at step 0, every
`eval_every` steps and at the end; checkpoint every `checkpoint_every` steps
and at the end, never at the step a run resumed from), the terminal (a
progress bar over optimizer steps that reaches 100%, and one line per eval
printed above it with the numbers MLflow gets), the seed of each step's
rollout (a pure function of (seed, step), so a resumed run samples what the
uninterrupted run would have), and how far the rollout engine's weights lag
the policy's (`rollout.sync_every`; an eval always sees the current policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_sweeps import metrics as M
from rlhf_sweeps.plan import Plan
from rlhf_sweeps.terminal import eval_line


@dataclass
class LoopJob:
    """What every loop is handed by `rlhf_sweeps.loops.runner`; each loop's job adds its own."""

    cfg: Any  # the typed config (rlhf_sweeps.config.Config)
    plan: Plan  # every derived size: the loops read batch and micro-batch sizes here
    policy: torch.nn.Module
    ref: torch.nn.Module  # the frozen SFT copy: the KL anchor, DPO's reference
    optimizer: torch.optim.Optimizer
    sampler: Any  # rlhf_sweeps.rollout.Sampler
    evaluator: Any  # rlhf_sweeps.evaluation.Evaluator
    log: Callable[[dict[str, float], int], None]
    log_samples: Callable[[list[dict], int], None]
    save_checkpoint: Callable[[int, dict], None]
    rss_gb: Callable[[], float]


class LoopScaffold:
    """Schedule, terminal and rollout seeds of one training loop (see the module doc)."""

    def __init__(self, job: LoopJob, start_step: int, desc: str):
        self.job, self.cfg, self.start_step = job, job.cfg, start_step
        self.last = job.plan.steps
        self.staleness = 0  # optimizer steps the rollout engine's weights are behind the policy's
        self.bar = tqdm(total=self.last, initial=start_step, desc=desc, dynamic_ncols=True)

    def steps(self) -> range:
        """Optimizer steps still to take, plus the final evaluation at `plan.steps`."""
        return range(self.start_step, self.last + 1)

    def evaluates(self, step: int) -> bool:
        return step % self.cfg.eval_every == 0 or step == self.last

    def checkpoints(self, step: int) -> bool:
        return step > self.start_step and (step % self.cfg.checkpoint_every == 0 or step == self.last)

    def evaluate(self, step: int) -> None:
        """Evaluate the current policy on the fixed prompts; log it and print its line."""
        job = self.job
        if self.staleness:  # evaluate the current policy, not the engine's stale copy
            job.sampler.sync_weights(job.policy)
            self.staleness = 0
        metrics, rows = job.evaluator(job.policy, job.sampler)
        job.log(metrics, step)
        job.log_samples(rows, step)
        if M.EVAL_GOLD_REWARD in metrics:
            self.bar.write(eval_line(step, metrics))

    def rollout_seed(self, step: int) -> int:
        return int(np.random.default_rng([self.cfg.seed, step, 1]).integers(2**31))

    def sample(self, step: int):
        """This step's rollout: `plan.samples_per_prompt` samples of each of the step's train
        prompts (the job's `train_prompts`) from the current policy, seeded by (seed, step)."""
        job = self.job
        return job.sampler.generate(job.train_prompts(step), n=job.plan.samples_per_prompt,
                                    seed=self.rollout_seed(step))

    def mark_stale(self) -> None:
        """One optimizer step the engine is not told of (offline training samples only at evals,
        which then push the weights first)."""
        self.staleness += 1

    def push_weights(self) -> None:
        """One optimizer step taken: push the policy's weights into the rollout engine every
        `rollout.sync_every` steps; in between the engine samples from a copy `staleness` behind."""
        self.mark_stale()
        if self.staleness >= self.cfg.rollout.sync_every:
            self.job.sampler.sync_weights(self.job.policy)
            self.staleness = 0

    def advance(self, **postfix: str) -> None:
        """One optimizer step done."""
        self.bar.update(1)
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()


def phase_times(t0: float, t1: float, t2: float, t3: float, t4: float, rss_gb: float) -> dict[str, float]:
    """perf/* of one step from its clock marks: rollout, score, update, sync, and the whole."""
    return {M.PERF_ROLLOUT_S: t1 - t0, M.PERF_SCORE_S: t2 - t1, M.PERF_UPDATE_S: t3 - t2,
            M.PERF_SYNC_S: t4 - t3, M.PERF_STEP_S: t4 - t0, M.PERF_RSS_GB: rss_gb}


def check_finite(loss: torch.Tensor, step: int, coefficient_hint: str) -> None:
    """Stop before a non-finite loss reaches the weights."""
    if not torch.isfinite(loss):
        # at step 0 no update has happened yet: the loss is the coefficient's, not lr's doing
        fix = f"lower {coefficient_hint}" if step == 0 else f"lower lr or {coefficient_hint}"
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at step {step}: {fix}, then rerun the same command: the run "
            "resumes from its last checkpoint, or starts over if it had none."
        )

