"""Preference optimization: offline SimPO / DPO on the task's pairs, and online SimPO.

Reads top to bottom like `online.py`: evaluate, (sample and rank,) one
optimizer step on a minibatch of pairs, log. Evaluation is the very same
`Evaluator` the online loops use (same held-out prompts and seeds, same
`eval/*` keys: KL to the SFT policy, gold win rate, ...), so offline and
online runs sit on the same axes (docs/science.md §7, claims C5 and C6).

Losses (`rlhf_sweeps.algos.preference`, docs/science.md §2):

- `simpo`: r(y) = (beta/|y|) log pi(y|x), margin gamma = gamma_beta_ratio * beta,
  no reference model.
- `dpo`: r(y) = beta (log pi(y|x) - log pi_sft(y|x)), the reference being the
  frozen SFT copy that the evaluator also measures KL against.
- `online_simpo` (claim C6): each step samples k >= 2 responses per train
  prompt from the current policy, the training reward (the proxy reward model
  under the default `reward=proxy`) picks the best and the worst per prompt
  (one pair per prompt), and the policy takes a SimPO step on those pairs.
  The gold reward trains only the `reward=gold` oracle control.

The coefficient: beta is the top-level `temperature`, the one coefficient key
of every algorithm (SimPO's beta is the length-normalized entropy temperature
alpha = beta/|y|, DPO's the KL coefficient); conf/algo/{simpo,dpo,online_simpo}.yaml
set its default. The `regularizer` group is not read here.

Choices a reader should know about:

- Sequence log-probs in the preference losses are computed at temperature 1,
  i.e. from the policy itself (SimPO / DPO as published). Evaluation, and
  online SimPO's sampling and `train/kl`, use `rollout.temperature` as every
  other run does (default 1, where the two coincide).
- |y| counts the response tokens including <eos> (a response that ends
  has one more decision than its words), as in SimPO's reference code.
- Offline minibatches: epoch e is a permutation of the pairs drawn from
  rng([seed, e]); step s takes batch s mod (n_pairs // batch_size) of epoch
  s // (n_pairs // batch_size). The last partial batch of an epoch is
  dropped (a different one each epoch). The data position is therefore a pure
  function of (seed, step) and a resumed run sees exactly the same batches.
  Training length is `steps` (optimizer steps), like online runs, so the
  eval schedule matches across algorithms; `train/epoch` logs the passes made.
- Online SimPO takes one optimizer step per sampled batch (fully on-policy,
  engine weights synced every `rollout.sync_every` steps and before every
  eval). A prompt whose k samples are identical gives a pair with zero
  gradient. Its train/* statistics (proxy, k1 KL to the SFT policy, entropy,
  length) describe all k samples per prompt, under the policy that drew them.
- `algo.micro_batch_size` counts pairs per forward/backward (both for the
  offline and the online pairs); the gradient is accumulated to the full batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import dpo_loss, logprobs_from_logits, masked_sum, simpo_loss
from rlhf_sweeps.evaluation import sequence_stats
from rlhf_sweeps.loops.common import LoopJob, LoopScaffold, check_finite, phase_times
from rlhf_sweeps.models import (
    SequenceBatch,
    make_sequence_batch,
    response_logits,
    right_pad,
    special_ids,
)

# The preference losses score the policy itself, softmax(logits / 1).
LOSS_TEMPERATURE = 1.0

PREF_STAT_KEYS = {
    "chosen_reward": M.PREF_CHOSEN_REWARD,
    "rejected_reward": M.PREF_REJECTED_REWARD,
    "margin": M.PREF_MARGIN,
    "accuracy": M.PREF_ACCURACY,
    "chosen_logp": M.PREF_CHOSEN_LOGP,
    "rejected_logp": M.PREF_REJECTED_LOGP,
}


@dataclass
class PreferenceJob(LoopJob):
    """The shared job, plus the offline pairs or the online reward and prompts."""

    pairs: Optional[list[dict]] = None  # offline: rows with prompt_ids, chosen_ids, rejected_ids
    reward: Optional[Callable] = None  # online: (prompts, responses) -> (N,) training reward (`reward` group)
    train_prompts: Optional[Callable[[int], list[list[int]]]] = None  # online: step -> prompts


# ----------------------------------------------------------------------------- helpers
def minibatch_indices(n_pairs: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Pair indices of optimizer step `step`: a pure function of (seed, step)."""
    per_epoch = max(1, n_pairs // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_pairs)
    return perm[i * batch_size : (i + 1) * batch_size]


def list_batch(prompts: list[list[int]], responses: list[list[int]], eos_id: int, pad_id: int,
               device: torch.device) -> tuple[SequenceBatch, torch.Tensor]:
    """Model input for responses given as token lists of different lengths.

    `make_sequence_batch` masks up to the first <eos>; a response that never
    ends (truncated) is masked by its own length here, so padding never counts.
    Returns the batch and the (B, T) response token ids, on `device`.
    """
    resp, real = right_pad(responses, pad_id)  # (B, T), (B, T)
    batch = make_sequence_batch(prompts, resp, eos_id, pad_id)
    mask = batch.response_mask & real.bool()  # (B, T)
    P = batch.prompt_len
    attention = torch.cat([batch.attention_mask[:, :P], mask.long()], dim=1)  # (B, P+T)
    position_ids = (attention.cumsum(1) - 1).clamp(min=0)
    batch = SequenceBatch(batch.input_ids.to(device), attention.to(device), position_ids.to(device), P,
                          mask.to(device))
    return batch, resp.to(device)


def sequence_logps(model, batch: SequenceBatch, responses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob (B,), length |y| (B,)) at the loss temperature."""
    logits = response_logits(model, batch)  # (B, T, V)
    logp = logprobs_from_logits(logits, responses, LOSS_TEMPERATURE)  # (B, T)
    mask = batch.response_mask  # (B, T)
    return masked_sum(logp, mask, 1), mask.sum(1)


def preference_loss(algo_cfg, beta: float, logp_c, logp_r, len_c, len_r, ref_c=None, ref_r=None):
    """The loss of `algo_cfg.name` at coefficient `beta` (the run's `temperature`)."""
    if algo_cfg.name in ("simpo", "online_simpo"):
        # SimPO is tuned with gamma as a ratio of beta (Meng et al. 2024 report gamma/beta).
        return simpo_loss(logp_c, logp_r, len_c, len_r, beta, algo_cfg.gamma_beta_ratio * beta)
    if algo_cfg.name == "dpo":
        return dpo_loss(logp_c, logp_r, ref_c, ref_r, beta)
    raise ValueError(f"algo.name={algo_cfg.name!r} is not a preference algorithm (simpo, dpo, online_simpo)")


def preference_update(job: PreferenceJob, prompts: list[list[int]], chosen: list[list[int]],
                      rejected: list[list[int]], step: int) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """One optimizer step on B pairs; returns (loss, pref stats, grad norm).

    The pairs go through the model in micro-batches of `algo.micro_batch_size`
    pairs (null: all at once), chosen and rejected of a micro-batch in one
    forward pass. Every loss and stat is a mean over pairs, so weighting each
    micro-batch by its share of the B pairs gives exactly the full-batch
    gradient and stats.
    """
    cfg = job.cfg
    pad_id, eos_id = special_ids(job.policy)
    device = next(job.policy.parameters()).device
    B = len(prompts)
    mb = job.plan.micro_batch_size  # = B unless algo.micro_batch_size is set
    job.optimizer.zero_grad(set_to_none=True)
    total_loss, total_stats = torch.zeros(()), {}
    for s in range(0, B, mb):
        sl = slice(s, min(s + mb, B))
        n = sl.stop - sl.start
        batch, resp = list_batch(prompts[sl] + prompts[sl], chosen[sl] + rejected[sl], eos_id, pad_id, device)
        logp, length = sequence_logps(job.policy, batch, resp)  # (2n,): [chosen | rejected]
        ref_c = ref_r = None
        if cfg.algo.name == "dpo":
            with torch.no_grad():
                ref_logp, _ = sequence_logps(job.ref, batch, resp)
            ref_c, ref_r = ref_logp[:n], ref_logp[n:]
        loss, stats = preference_loss(cfg.algo, cfg.temperature, logp[:n], logp[n:], length[:n], length[n:], ref_c, ref_r)
        check_finite(loss, step, "the coefficient beta (temperature=...)")
        (loss * (n / B)).backward()
        total_loss = total_loss + loss.detach().cpu() * (n / B)
        for key, v in stats.items():
            total_stats[key] = total_stats.get(key, 0.0) + v.cpu() * (n / B)
    grad_norm = torch.nn.utils.clip_grad_norm_(job.policy.parameters(), cfg.algo.grad_clip)
    job.optimizer.step()
    return total_loss, total_stats, grad_norm


def evaluate_and_checkpoint(job: PreferenceJob, loop: LoopScaffold, step: int) -> None:
    """The scaffold's schedule (as `online.train_online`): eval at step 0, every eval_every, the end."""
    if loop.evaluates(step):
        loop.evaluate(step)
    if loop.checkpoints(step):
        job.save_checkpoint(step, {})


def _floats(d: dict) -> dict[str, float]:
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in d.items()}


# ----------------------------------------------------------------------------- offline
def train_offline_preference(job: PreferenceJob, start_step: int) -> None:
    """SimPO or DPO on the task's fixed preference pairs."""
    cfg = job.cfg
    pairs = job.pairs
    if not pairs:
        raise ValueError(f"algo={cfg.algo.name} needs preference pairs, and task {cfg.task.name!r} gave none")
    per_epoch = max(1, len(pairs) // job.plan.update_batch)
    loop = LoopScaffold(job, start_step, cfg.algo.name)
    for step in loop.steps():
        evaluate_and_checkpoint(job, loop, step)
        if step == loop.last:
            break

        t0 = time.perf_counter()
        rows = [pairs[i] for i in minibatch_indices(len(pairs), job.plan.update_batch, cfg.seed, step)]
        loss, stats, grad_norm = preference_update(
            job, [r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows],
            [r["rejected_ids"] for r in rows], step)
        t1 = time.perf_counter()
        loop.mark_stale()

        train = {PREF_STAT_KEYS[k]: v for k, v in stats.items()}
        train.update({
            M.TRAIN_LOSS: loss,
            M.TRAIN_GRAD_NORM: grad_norm,
            M.TRAIN_EPOCH: (step + 1) / per_epoch,
            M.PERF_UPDATE_S: t1 - t0,
            M.PERF_STEP_S: t1 - t0,
            M.PERF_RSS_GB: job.rss_gb(),
        })
        train = _floats(train)
        job.log(train, step)
        loop.advance(margin=f"{train[M.PREF_MARGIN]:+.3f}", acc=f"{train[M.PREF_ACCURACY]:.2f}")
    loop.close()


# ----------------------------------------------------------------------------- online
def best_worst(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat row indices (P,) of the highest- and lowest-scoring of each prompt's k samples.

    `scores` is (P*k,) prompt-major, as the sampler returns them.
    """
    s = scores.view(-1, k)  # (P, k)
    base = torch.arange(s.shape[0]) * k
    return base + s.argmax(1), base + s.argmin(1)


def train_online_simpo(job: PreferenceJob, start_step: int) -> None:
    """On-policy pairs ranked by the training reward, SimPO update (claim C6)."""
    cfg = job.cfg
    temp = cfg.rollout.temperature
    k = job.plan.samples_per_prompt
    loop = LoopScaffold(job, start_step, cfg.algo.name)
    for step in loop.steps():
        evaluate_and_checkpoint(job, loop, step)
        if step == loop.last:
            break

        # ---- rollout: k samples per prompt from the current policy, same seeds as online.py
        t0 = time.perf_counter()
        rollout = loop.sample(step)
        responses = rollout.responses  # (N, T)
        rows = rollout.response_lists()  # each response as sampled
        t1 = time.perf_counter()
        scores = job.reward(rollout.prompts, rows)  # (N,) the training reward (reward=proxy: the proxy RM)
        chosen, rejected = best_worst(scores, k)  # (P,), (P,) row indices
        t2 = time.perf_counter()

        # ---- statistics of the samples under the policy that drew them (before the update),
        # at the sampling temperature, as online.py logs them
        stats = sequence_stats(job.policy, job.ref, rollout.prompts, responses, temp)

        # ---- SimPO step on (best, worst) per prompt
        loss, pref, grad_norm = preference_update(
            job, [rollout.prompts[i] for i in chosen.tolist()], [rows[i] for i in chosen.tolist()],
            [rows[i] for i in rejected.tolist()], step)
        t3 = time.perf_counter()

        loop.push_weights()
        t4 = time.perf_counter()

        train = {PREF_STAT_KEYS[key]: v for key, v in pref.items()}
        train.update({
            M.TRAIN_PROXY_REWARD: scores.mean(),
            M.TRAIN_PROXY_CHOSEN: scores[chosen].mean(),
            M.TRAIN_PROXY_REJECTED: scores[rejected].mean(),
            M.TRAIN_KL: stats.kl_k1.mean(),
            M.TRAIN_ENTROPY: stats.entropy.mean(),
            M.TRAIN_RESPONSE_LENGTH: stats.length.float().mean(),
            M.TRAIN_EOS_RATE: stats.eos.float().mean(),
            M.TRAIN_LOSS: loss,
            M.TRAIN_GRAD_NORM: grad_norm,
            **phase_times(t0, t1, t2, t3, t4, job.rss_gb()),
        })
        if cfg.rollout.sync_every > 1:
            train[M.ROLLOUT_STALENESS] = loop.staleness
        train = _floats(train)
        job.log(train, step)
        loop.advance(reward=f"{train[M.TRAIN_PROXY_REWARD]:+.2f}", kl=f"{train[M.TRAIN_KL]:.2f}",
                     margin=f"{train[M.PREF_MARGIN]:+.3f}")
    loop.close()
