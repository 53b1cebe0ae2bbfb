"""Online RLHF: RLOO (default) or REINFORCE with a pluggable regularizer.

Reads top to bottom: evaluate, sample, score, regularize, advantages, update,
sync, log. The loop does not know which regularizer it runs: the per-token
penalty `p_t` comes from `algos.per_token_penalty` with the convention
`R = r - coef * sum_t p_t` (docs/science.md §3), placed in the reward or in
the loss by the regularizer's config. `r` is the training reward: the proxy
reward model, or under the `reward` group's controls the gold itself (oracle)
or zero (the regularizer alone); the loop does not know which.

Deviations from the textbook, on purpose:
- One optimizer step per batch (fully on-policy), so the PPO ratio is 1 and
  the policy-gradient loss is plain REINFORCE with a leave-one-out baseline.
  When the sampler's weights lag (`rollout.sync_every > 1`) or its numerics
  differ (bf16 vLLM), `rollout.is_correction` re-weights by the truncated
  ratio pi_train / pi_rollout.
- The sampling temperature is used for every log-prob, KL and entropy: the
  policy being optimized is softmax(logits / temperature).
- The update takes two passes, like the rollout and training phases of the
  TL;DR PPO recipes: pass 1 (no grad) computes the policy's and reference's
  log-probs of the whole batch, which the rewards and RLOO baselines need;
  pass 2 recomputes the policy's log-probs with grad in micro-batches of
  `algo.micro_batch_size` sequences, each loss scaled by its share of the
  batch, so the accumulated gradient equals the full-batch one (null: one
  micro-batch).
- Work the step need not do is skipped: pass 1 takes the policy's log-probs
  from the rollout engine when they are exact for the trainer (checked on a
  sample every step, `reuse_allowed`); micro-batches hold responses of
  similar length and each is cut to its own longest response, so padding
  is barely computed. Neither changes the gradient beyond float rounding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Union

import torch

from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import (
    AdaptiveKLController,
    CoefController,
    Regularizer,
    entropy_from_logits,
    has_eos,
    kl_k1,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    per_token_penalty,
    policy_gradient_loss,
    regularized_reward,
    regularizer_loss,
    reinforce_advantages,
    rloo_advantages,
    truncated_is_weights,
)
from rlhf_sweeps.loops.common import LoopJob, LoopScaffold, check_finite, phase_times
from rlhf_sweeps.models import make_sequence_batch, response_logits, special_ids


@dataclass
class OnlineJob(LoopJob):
    """The shared job, plus the training reward, the prompts and the coefficient."""

    reward: Callable  # (prompts, responses) -> (N,) the training reward: proxy RM, gold or zero (`reward` group)
    train_prompts: Callable[[int], list[list[int]]]  # step -> prompts
    coef: Union[CoefController, AdaptiveKLController]  # the regularizer's; checkpointed with the run


def make_regularizer(reg_cfg) -> Regularizer:
    estimator = reg_cfg.estimator if reg_cfg.name != "none" else "none"
    return Regularizer(reg_cfg.name, estimator, reg_cfg.placement, reg_cfg.length_normalize)


def make_coef_controller(cfg) -> Union[CoefController, AdaptiveKLController]:
    if cfg.regularizer.adaptive:
        return AdaptiveKLController(cfg.temperature, cfg.regularizer.target, cfg.regularizer.horizon)
    return CoefController(cfg.temperature)


# Pass 1 may take the policy's log-probs from the rollout engine instead of a no-grad forward
# of its own (~20% of the update's FLOPs) when they are the same numbers: on-policy (synced
# every step), same dtype, no importance correction. Every step re-scores REUSE_CHECK sampled
# responses to confirm it; a gap above REUSE_TOL switches reuse off for the rest of the run.
# float32 engines agree to ~1e-6 nats (rollout/logprob_gap_max), far inside the tolerance.
REUSE_TOL = 1e-4
REUSE_CHECK = 8


def reuse_allowed(cfg, reg: Regularizer) -> tuple[bool, str | None]:
    """(may pass 1 reuse the engine's log-probs, why not)."""
    if not cfg.rollout.reuse_logprobs:
        return False, "rollout.reuse_logprobs=false"
    if cfg.rollout.sync_every != 1:
        return False, "the engine lags the trainer (rollout.sync_every > 1)"
    if cfg.rollout.is_correction:
        return False, "importance correction compares the two (rollout.is_correction)"
    if cfg.rollout.dtype != "float32" or cfg.model.dtype != "float32":
        return False, "engine or trainer is not float32"
    if reg.needs_entropy and reg.placement == "reward":
        return False, "the exact-entropy reward needs the full distribution before the update"
    return True, None


def micro_batches(mask: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Row indices of each micro-batch, rows sorted by response length.

    Any partition of the rows gives the same accumulated gradient (each loss is scaled by its
    share of the batch); sorted, each micro-batch holds responses of similar length and
    `SequenceBatch.select` cuts it to its own longest, so little padding is computed.
    """
    order = torch.argsort(mask.sum(1), stable=True)  # (N,)
    return [order[s : s + size] for s in range(0, len(order), size)]


def scatter_rows(parts: list[torch.Tensor], micro: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
    """Per-micro-batch (n, l <= L) results back into one (N, L) tensor in row order (0 past l)."""
    out = torch.zeros(shape, dtype=parts[0].dtype, device=parts[0].device)
    for rows, part in zip(micro, parts):
        out[rows, : part.shape[1]] = part
    return out


@torch.no_grad()
def reuse_gap(policy, batch, responses, rollout_logp, temperature: float, step: int) -> tuple[float, float]:
    """Mean and largest |trainer - engine| log-prob over REUSE_CHECK responses (another sample each step)."""
    n = len(responses)
    rows = ((torch.arange(min(REUSE_CHECK, n)) + step * REUSE_CHECK) % n).to(responses.device)
    mb = batch.select(rows)
    logits = response_logits(policy, mb)
    logp = logprobs_from_logits(logits, responses[rows, : logits.shape[1]], temperature)
    gap = (logp - rollout_logp[rows, : logits.shape[1]]).abs()
    return float(masked_mean(gap, mb.response_mask)), float(torch.where(mb.response_mask, gap, torch.zeros_like(gap)).max())


def train_online(job: OnlineJob, start_step: int) -> None:
    cfg, plan = job.cfg, job.plan
    reg = make_regularizer(cfg.regularizer)
    temp = cfg.rollout.temperature  # of sampling, and of every log-prob, KL and entropy below
    k = plan.samples_per_prompt
    pad_id, eos_id = special_ids(job.policy)  # the policy's own tokenizer ids (Pythia: eos=0)
    # samplers and scorers return CPU tensors; what the update needs goes to the policy's device
    device = next(job.policy.parameters()).device
    reuse, why_not = reuse_allowed(cfg, reg)
    if why_not and cfg.rollout.reuse_logprobs:
        print(f"[rlhf-sweeps] pass 1 recomputes the policy's log-probs: {why_not}", flush=True)
    loop = LoopScaffold(job, start_step, f"{cfg.algo.name}/{reg.name}")
    for step in loop.steps():
        # ---- evaluate on the fixed held-out prompts (step 0 = the initial policy)
        if loop.evaluates(step):
            loop.evaluate(step)
        if loop.checkpoints(step):
            job.save_checkpoint(step, {"coef": job.coef.state_dict()})
        if step == loop.last:
            break

        # ---- rollout: k samples per prompt from the current policy
        t0 = time.perf_counter()
        rollout = loop.sample(step)
        responses = rollout.responses.to(device)  # (N, T)
        rollout_logp = None if rollout.logprobs is None else rollout.logprobs.to(device)  # (N, T)
        t1 = time.perf_counter()
        scores = job.reward(rollout.prompts, rollout.response_lists()).to(device)  # (N,)
        t2 = time.perf_counter()

        # ---- pass 1, no grad: log-probs under the policy and the reference, same temperature.
        # The policy's own are the engine's when those are exact (`reuse`, checked on a sample)
        batch = make_sequence_batch(rollout.prompts, rollout.responses, eos_id, pad_id).to(device)
        mask = batch.response_mask  # (N, L)
        N, L = responses.shape
        micro = micro_batches(mask, plan.micro_batch_size)  # plan.py checked that the size divides N
        checked_gap = None
        if reuse and rollout_logp is not None:
            checked_gap = reuse_gap(job.policy, batch, responses, rollout_logp, temp, step)
            gap = checked_gap[1]
            if gap > REUSE_TOL:
                reuse = False
                print(f"[rlhf-sweeps] step {step}: the engine's log-probs differ from the trainer's by {gap:.2e} "
                      f"(> {REUSE_TOL:g}); recomputing them from now on (rollout.reuse_logprobs)", flush=True)
        reused = reuse and rollout_logp is not None
        with torch.no_grad():
            parts = []
            for rows in micro:
                mb = batch.select(rows)  # cut to its own longest response: (n, l <= L)
                ref_logits = response_logits(job.ref, mb)  # (n, l, V)
                width = ref_logits.shape[1]
                part = [logprobs_from_logits(ref_logits, responses[rows, :width], temp)]
                if not reused:
                    logits = response_logits(job.policy, mb)
                    part += [logprobs_from_logits(logits, responses[rows, :width], temp),
                             entropy_from_logits(logits, temp)]
                parts.append(part)
            ref_logp, *own = (scatter_rows(list(col), micro, (N, L)) for col in zip(*parts))  # (N, L) each
            # reused: the engine's log-probs; the entropy comes from pass 2's logits, below
            logp, entropy = own if own else (rollout_logp, None)

        # ---- regularized reward and advantages
        coef = job.coef.value
        penalty = per_token_penalty(reg, logp, ref_logp, entropy if reg.needs_entropy else None)  # (N, L)
        eos_missing = ~has_eos(responses, eos_id)
        rewards = regularized_reward(scores, penalty, mask, coef, reg, eos_missing, cfg.algo.eos_penalty)
        if cfg.algo.name == "rloo":
            advantages = rloo_advantages(rewards, k)
        else:
            advantages = reinforce_advantages(rewards)

        # ---- pass 2: policy update, gradients accumulated over micro-batches
        is_weights, clipped = None, None
        if cfg.rollout.is_correction and rollout_logp is not None:
            is_weights, clipped = truncated_is_weights(logp, rollout_logp, mask,
                                                       cfg.rollout.is_correction, cfg.rollout.is_cap)
        job.optimizer.zero_grad(set_to_none=True)
        n_tokens = mask.sum().clamp(min=1)
        pg_loss = reg_loss = 0.0
        entropy_parts = []
        for rows in micro:
            mb = batch.select(rows)  # cut to its own longest response
            logits = response_logits(job.policy, mb)  # (n, l, V), with grad
            width = logits.shape[1]
            logp_mb = logprobs_from_logits(logits, responses[rows, :width], temp)
            entropy_mb = entropy_from_logits(logits, temp) if reg.needs_entropy or reused else None
            penalty_mb = per_token_penalty(reg, logp_mb, ref_logp[rows, :width],
                                           entropy_mb if reg.needs_entropy else None)
            # shares: the pg loss is a sequence mean, the regularizer loss a token mean
            pg, _ = policy_gradient_loss(logp_mb, advantages[rows], mb.response_mask,
                                         None if is_weights is None else is_weights[rows, :width])
            pg = pg * (len(logp_mb) / N)
            rl = regularizer_loss(penalty_mb, mb.response_mask, coef, reg) * (mb.response_mask.sum() / n_tokens)
            check_finite(pg + rl, step, "the regularization coefficient (temperature=...)")
            (pg + rl).backward()
            pg_loss, reg_loss = pg_loss + pg.detach(), reg_loss + rl.detach()
            if reused:
                entropy_parts.append(entropy_mb.detach())
        if reused:  # the same weights as pass 1 would have seen: these are its numbers
            entropy = scatter_rows(entropy_parts, micro, (N, L))
        loss = pg_loss + reg_loss
        grad_norm = torch.nn.utils.clip_grad_norm_(job.policy.parameters(), cfg.algo.grad_clip)
        job.optimizer.step()
        t3 = time.perf_counter()

        # ---- push the new weights into the rollout engine
        loop.push_weights()
        t4 = time.perf_counter()

        # ---- adaptive coefficient, fed the sequence-summed KL (Ziegler et al.)
        with torch.no_grad():
            seq_kl = masked_sum(kl_k1(logp, ref_logp), mask, 1)  # (N,)
        job.coef.update(float(seq_kl.mean()), plan.rollout_batch)

        with torch.no_grad():
            train = {
                M.TRAIN_PROXY_REWARD: scores.mean(),
                M.TRAIN_RLHF_REWARD: rewards.mean(),
                M.TRAIN_KL: seq_kl.mean(),
                M.TRAIN_ENTROPY: masked_sum(entropy, mask, 1).mean(),
                M.TRAIN_RESPONSE_LENGTH: (mask.sum(1) - (~eos_missing).long()).float().mean(),
                M.TRAIN_EOS_RATE: (~eos_missing).float().mean(),
                M.TRAIN_LOSS: loss,
                M.TRAIN_PG_LOSS: pg_loss,
                M.TRAIN_REG_LOSS: reg_loss,
                M.TRAIN_COEF: coef,
                M.TRAIN_GRAD_NORM: grad_norm,
                **phase_times(t0, t1, t2, t3, t4, job.rss_gb()),
            }
            if checked_gap is not None:  # reused: the gap on the responses re-scored to check it
                train[M.ROLLOUT_LOGPROB_GAP_MEAN], train[M.ROLLOUT_LOGPROB_GAP_MAX] = checked_gap
            elif rollout_logp is not None:
                gap = (logp - rollout_logp).abs()
                train[M.ROLLOUT_LOGPROB_GAP_MEAN] = masked_mean(gap, mask)
                train[M.ROLLOUT_LOGPROB_GAP_MAX] = torch.where(mask, gap, torch.zeros_like(gap)).max()
            if clipped is not None:
                train[M.ROLLOUT_IS_CLIPPED_FRAC] = clipped
            if cfg.rollout.sync_every > 1:
                train[M.ROLLOUT_STALENESS] = loop.staleness
        train = {key: float(v.detach()) if torch.is_tensor(v) else float(v) for key, v in train.items()}
        job.log(train, step)
        loop.advance(reward=f"{train[M.TRAIN_PROXY_REWARD]:+.2f}", kl=f"{train[M.TRAIN_KL]:.2f}")
    loop.close()
