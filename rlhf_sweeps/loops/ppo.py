"""Clipped-ratio online RLHF: PPO with a value model (algo=ppo) and GRPO (algo=grpo).

Reads top to bottom, like the RLOO loop (`online.py`): evaluate, sample,
score, pass 1 (old log-probs, reference, values), advantages, then
`ppo_epochs` passes over the rollout in minibatches of `ppo_minibatch_size`
sequences, each an optimizer step whose gradient is accumulated over
micro-batches of `micro_batch_size`. The two algorithms differ only in the
advantages (and PPO's critic):

- **ppo** (the TL;DR recipe: Ziegler et al. 2019, Stiennon et al. 2020, as
  in Huang et al. 2024, "The N+ implementation details of RLHF with PPO"):
  per-token rewards with the regularizer's penalty `-coef * p_t` on every
  token and the score on the last (`per_token_rewards`), GAE(gamma, lambda)
  against the value model's V(s_t), advantages whitened over the rollout's
  tokens, the clipped value loss.
- **grpo** (Shao et al. 2024): the regularized sequence reward R of each of
  the k samples of a prompt, normalized within the prompt's group
  (`group_advantages`), on every token of the response; no critic.

The regularizer enters exactly as in the RLOO loop, through the same
`algos` functions: `per_token_penalty` -> in the reward (PPO per token via
`per_token_rewards`, GRPO per sequence via `regularized_reward`) or in the
loss (`regularizer_loss`, the coefficient times a token mean over the
minibatch, so `temperature` means the same in the loss for every online
algorithm). The loop does not know which regularizer it runs.

Deviations from the textbook, on purpose:
- The policy loss's per-token terms are reduced by `algo.loss_aggregation`
  (`aggregate_token_loss`); the loss-placed penalty is always a token mean
  (`regularizer_loss`), also under GRPO, where TRL reduces it with the policy
  loss. With `sequence_mean` the two weigh a long response's tokens
  differently; the coefficient, though, keeps one meaning across algorithms.
- `algo.kl_bias_correction` multiplies the loss-placed penalty by pi/pi_old
  (TRL's `use_bias_correction_kl`; `importance_corrected_penalty`).
- The value model has its own Adam (`algo.value_lr`, null = `lr`) and
  gradient clip, not a shared optimizer with a `vf_coef`: the recipes' critic
  is a separate network, so under Adam a `vf_coef` would only act through the
  joint gradient-norm clip.
- Constant learning rates (the recipes anneal linearly), like every loop here.
- Old log-probs are the trainer's own, recomputed in pass 1; when the
  sampler's differ (bf16 vLLM, `rollout.sync_every > 1`),
  `rollout.is_correction` multiplies the per-token policy loss by the
  truncated ratio pi_old / pi_rollout (TRL's vLLM importance correction).
- Micro-batch losses are scaled by their share of the minibatch (tokens or
  sequences, whichever the reduction divides by), so the accumulated gradient
  equals the minibatch's: `micro_batch_size` changes memory, not math.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import (
    GROUP_NORMS,
    LOSS_AGGREGATIONS,
    aggregate_token_loss,
    clipped_surrogate,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    gae,
    group_advantages,
    has_eos,
    importance_corrected_penalty,
    kl_k1,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_whiten,
    per_token_penalty,
    per_token_rewards,
    regularized_reward,
    regularizer_loss,
    truncated_is_weights,
)
from rlhf_sweeps.loops.common import LoopScaffold, check_finite, phase_times
from rlhf_sweeps.loops.online import OnlineJob, make_regularizer
from rlhf_sweeps.models import make_sequence_batch, response_logits, special_ids


@dataclass
class ClippedJob(OnlineJob):
    """The online job, plus PPO's critic (None for GRPO)."""

    value_model: Optional[torch.nn.Module] = None
    value_optimizer: Optional[torch.optim.Optimizer] = None


def minibatch_order(seed: int, step: int, epoch: int, n: int) -> torch.Tensor:
    """The rows of a rollout in the order one pass visits them: a pure function of
    (seed, step, epoch), so a resumed run shuffles as the uninterrupted one did."""
    return torch.from_numpy(np.random.default_rng([seed, step, 2, epoch]).permutation(n))


def train_clipped(job: ClippedJob, start_step: int) -> None:
    cfg, a = job.cfg, job.cfg.algo
    reg = make_regularizer(cfg.regularizer)
    temp = cfg.rollout.temperature  # of sampling, and of every log-prob, KL and entropy below
    plan = job.plan
    critic = job.value_model  # None: GRPO
    if (a.name == "ppo") != (critic is not None):
        raise ValueError(f"algo={a.name} {'needs' if a.name == 'ppo' else 'takes no'} value model")
    for key, value, allowed in (("algo.loss_aggregation", a.loss_aggregation, LOSS_AGGREGATIONS),
                                ("algo.group_norm", a.group_norm, GROUP_NORMS)):
        if value not in allowed:  # before step 0, not at the first update
            raise ValueError(f"{key}={value!r}: allowed values are {', '.join(allowed)}")
    if a.name == "grpo" and a.k < 2:
        raise ValueError(f"algo.k={a.k}: algo=grpo normalizes within groups of k samples per prompt; use algo.k >= 2")
    pad_id, eos_id = special_ids(job.policy)
    device = next(job.policy.parameters()).device
    loop = LoopScaffold(job, start_step, f"{a.name}/{reg.name}")
    for step in loop.steps():
        # ---- evaluate on the fixed held-out prompts (step 0 = the initial policy)
        if loop.evaluates(step):
            loop.evaluate(step)
        if loop.checkpoints(step):
            extra = {"coef": job.coef.state_dict()}
            if critic is not None:  # restored by runner.run_training
                extra.update(value_model=critic.state_dict(), value_optimizer=job.value_optimizer.state_dict())
            job.save_checkpoint(step, extra)
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

        # ---- pass 1, no grad: the rollout policy's log-probs (pi_old), the reference's, values
        batch = make_sequence_batch(rollout.prompts, rollout.responses, eos_id, pad_id).to(device)
        mask = batch.response_mask  # (N, T)
        N, W = mask.shape
        micro_size = plan.micro_batch_size  # plan.py checked the divisions
        old_logp, entropy, ref_logp, old_values = (torch.zeros(N, W, device=device) for _ in range(4))  # (N, T)
        with torch.no_grad():
            for s in range(0, N, micro_size):
                rows = torch.arange(s, min(s + micro_size, N), device=device)
                mb = batch.select(rows)
                w = mb.response_mask.shape[1]  # this micro-batch's longest response
                logits = response_logits(job.policy, mb)  # (n, w, V)
                old_logp[rows, :w] = logprobs_from_logits(logits, responses[rows, :w], temp)
                entropy[rows, :w] = entropy_from_logits(logits, temp)
                ref_logp[rows, :w] = logprobs_from_logits(response_logits(job.ref, mb), responses[rows, :w], temp)
                if critic is not None:
                    old_values[rows, :w] = critic(mb)

        # ---- regularized rewards and advantages, (N, T)
        coef = job.coef.value
        penalty = per_token_penalty(reg, old_logp, ref_logp, entropy if reg.needs_entropy else None)  # (N, T)
        eos_missing = ~has_eos(responses, eos_id)
        if critic is not None:
            token_rewards = per_token_rewards(scores, penalty, mask, coef, reg, eos_missing, a.eos_penalty)
            rewards = masked_sum(token_rewards, mask, 1)  # (N,) = regularized_reward(...)
            advantages, returns = gae(token_rewards, old_values, mask, a.gamma, a.lam)
            advantages = masked_whiten(advantages, mask)
        else:
            rewards = regularized_reward(scores, penalty, mask, coef, reg, eos_missing, a.eos_penalty)  # (N,)
            seq_adv = group_advantages(rewards, plan.samples_per_prompt, scale=a.group_norm == "mean_std")  # (N,)
            advantages = torch.where(mask, seq_adv.unsqueeze(1), torch.zeros_like(old_logp))
            returns = None
        is_weights, is_clipped = None, None
        if cfg.rollout.is_correction and rollout_logp is not None:
            is_weights, is_clipped = truncated_is_weights(old_logp, rollout_logp, mask, cfg.rollout.is_correction,
                                                          cfg.rollout.is_cap)

        # ---- pass 2: ppo_epochs passes, one optimizer step per minibatch, micro-batch accumulation
        mb_size = plan.update_batch  # the ppo minibatch (the whole rollout when unset)
        sums = dict.fromkeys(("tokens", "clipped", "approx_kl", "ratio"), 0.0)
        losses = dict.fromkeys(("pg", "reg", "value", "value_clip", "grad_norm"), 0.0)
        n_updates = 0
        for epoch in range(a.ppo_epochs):
            order = minibatch_order(cfg.seed, step, epoch, N).to(device)
            for start in range(0, N, mb_size):
                idx = order[start:start + mb_size]
                n_tokens = mask[idx].sum()  # the token mean's denominator: the whole minibatch's
                job.optimizer.zero_grad(set_to_none=True)
                if critic is not None:
                    job.value_optimizer.zero_grad(set_to_none=True)
                for ms in range(0, len(idx), micro_size):
                    rows = idx[ms:ms + micro_size]
                    mb = batch.select(rows)
                    m_mb, w = mb.response_mask, mb.response_mask.shape[1]
                    logits = response_logits(job.policy, mb)  # (n, w, V), with grad
                    logp = logprobs_from_logits(logits, responses[rows, :w], temp)
                    loss_t, clipped, ratio = clipped_surrogate(logp, old_logp[rows, :w], advantages[rows, :w],
                                                               a.cliprange)
                    if is_weights is not None:
                        loss_t = loss_t * is_weights[rows, :w]
                    pg = aggregate_token_loss(loss_t, m_mb, a.loss_aggregation, cfg.rollout.max_new_tokens,
                                              n_seqs=len(idx), n_tokens=n_tokens)
                    rl = torch.zeros((), device=device)
                    if reg.placement == "loss":
                        pen = per_token_penalty(reg, logp, ref_logp[rows, :w],
                                                entropy_from_logits(logits, temp) if reg.needs_entropy else None)
                        if a.kl_bias_correction and reg.name == "kl":
                            pen = importance_corrected_penalty(pen, logp, old_logp[rows, :w])
                        rl = regularizer_loss(pen, m_mb, coef, reg) * (m_mb.sum() / n_tokens)  # token share
                    check_finite(pg + rl, step, "the regularization coefficient (temperature=...) or algo.cliprange")
                    (pg + rl).backward()
                    if critic is not None:
                        vl, vstats = clipped_value_loss(critic(mb), old_values[rows, :w], returns[rows, :w], m_mb,
                                                        a.cliprange_value, n_tokens=n_tokens)
                        check_finite(vl, step, "algo.value_lr")
                        vl.backward()
                        losses["value"] += float(vl.detach())
                        losses["value_clip"] += float(vstats["value_clipfrac"]) * float(m_mb.sum())
                    with torch.no_grad():
                        log_ratio = logp.detach() - old_logp[rows, :w]
                        sums["tokens"] += float(m_mb.sum())
                        sums["clipped"] += float(masked_sum(clipped.float(), m_mb))
                        sums["approx_kl"] += float(masked_sum(torch.expm1(log_ratio) - log_ratio, m_mb))  # k3
                        sums["ratio"] += float(masked_sum(ratio.detach(), m_mb))
                    losses["pg"] += float(pg.detach())
                    losses["reg"] += float(rl.detach())
                losses["grad_norm"] += float(torch.nn.utils.clip_grad_norm_(job.policy.parameters(), a.grad_clip))
                job.optimizer.step()
                if critic is not None:
                    torch.nn.utils.clip_grad_norm_(critic.parameters(), a.grad_clip)
                    job.value_optimizer.step()
                n_updates += 1
        t3 = time.perf_counter()

        # ---- push the new weights into the rollout engine
        loop.push_weights()
        t4 = time.perf_counter()

        # ---- adaptive coefficient, fed the sequence-summed KL (Ziegler et al.)
        with torch.no_grad():
            seq_kl = masked_sum(kl_k1(old_logp, ref_logp), mask, 1)  # (N,)
        job.coef.update(float(seq_kl.mean()), N)

        tokens = max(sums["tokens"], 1.0)
        with torch.no_grad():
            train = {
                M.TRAIN_PROXY_REWARD: scores.mean(),
                M.TRAIN_RLHF_REWARD: rewards.mean(),
                M.TRAIN_KL: seq_kl.mean(),
                M.TRAIN_ENTROPY: masked_sum(entropy, mask, 1).mean(),
                M.TRAIN_RESPONSE_LENGTH: (mask.sum(1) - (~eos_missing).long()).float().mean(),
                M.TRAIN_EOS_RATE: (~eos_missing).float().mean(),
                # losses: mean over the step's optimizer updates (each the sum of its micro-batches)
                M.TRAIN_LOSS: (losses["pg"] + losses["reg"]) / n_updates,
                M.TRAIN_PG_LOSS: losses["pg"] / n_updates,
                M.TRAIN_REG_LOSS: losses["reg"] / n_updates,
                M.TRAIN_COEF: coef,
                M.TRAIN_GRAD_NORM: losses["grad_norm"] / n_updates,
                # token shares over every pass and minibatch of the step
                M.TRAIN_CLIP_FRAC: sums["clipped"] / tokens,
                M.TRAIN_APPROX_KL: sums["approx_kl"] / tokens,
                M.TRAIN_RATIO: sums["ratio"] / tokens,
                **phase_times(t0, t1, t2, t3, t4, job.rss_gb()),
            }
            if critic is not None:
                train[M.TRAIN_VALUE_LOSS] = losses["value"] / n_updates
                train[M.TRAIN_VALUE_CLIP_FRAC] = losses["value_clip"] / tokens
                train[M.TRAIN_EXPLAINED_VARIANCE] = explained_variance(old_values, returns, mask)
            if rollout_logp is not None:
                gap = (old_logp - rollout_logp).abs()
                train[M.ROLLOUT_LOGPROB_GAP_MEAN] = masked_mean(gap, mask)
                train[M.ROLLOUT_LOGPROB_GAP_MAX] = torch.where(mask, gap, torch.zeros_like(gap)).max()
            if is_clipped is not None:
                train[M.ROLLOUT_IS_CLIPPED_FRAC] = is_clipped
            if cfg.rollout.sync_every > 1:
                train[M.ROLLOUT_STALENESS] = loop.staleness
        train = {key: float(v.detach()) if torch.is_tensor(v) else float(v) for key, v in train.items()}
        job.log(train, step)
        loop.advance(reward=f"{train[M.TRAIN_PROXY_REWARD]:+.2f}", kl=f"{train[M.TRAIN_KL]:.2f}",
                     clip=f"{train[M.TRAIN_CLIP_FRAC]:.2f}")
    loop.close()
