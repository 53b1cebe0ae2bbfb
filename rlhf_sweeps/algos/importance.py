"""Truncated importance weights for rollout/trainer mismatch.

The rollout engine (vLLM, or a stale copy of the weights) samples with
logprobs `rollout_logp` that differ from the trainer's `train_logp` (kernels,
precision, staleness). Weighting the policy gradient by min(pi_train /
pi_rollout, cap) corrects most of that bias while bounding the variance
(truncated IS, Ionides 2008; "TIS" in recent RLHF systems).
"""

from __future__ import annotations

import math

import torch

from rlhf_sweeps.algos.ops import masked_mean, masked_sum


def truncated_is_weights(
    train_logp: torch.Tensor,
    rollout_logp: torch.Tensor,
    mask: torch.Tensor,
    level: str,
    cap: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (weights (B, T) detached, clipped_frac scalar float tensor).

    level "token": w_t = min(exp(train_t - rollout_t), cap).
    level "sequence": w = min(exp(sum_t (train_t - rollout_t)), cap), the
    sequence ratio broadcast to all its tokens.
    clipped_frac is the share of response tokens (level "token") or of
    sequences (level "sequence") whose ratio exceeded `cap`. The minimum is
    taken in log space so an enormous ratio cannot overflow to inf. Weights
    are 0 outside the mask.
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"importance level must be 'token' or 'sequence', got {level!r}")
    if not cap > 0:
        raise ValueError(f"importance cap must be > 0, got {cap}")
    m = mask.bool()
    log_cap = math.log(cap)
    with torch.no_grad():
        log_ratio = (train_logp.detach() - rollout_logp.detach()).float()  # (B, T)
        log_ratio = torch.where(m, log_ratio, torch.zeros_like(log_ratio))
        if level == "token":
            clipped = log_ratio > log_cap  # (B, T)
            weights = torch.exp(log_ratio.clamp(max=log_cap))  # (B, T)
            clipped_frac = masked_mean(clipped.float(), m)
        else:
            seq_log_ratio = masked_sum(log_ratio, m, dim=-1)  # (B,)
            clipped = seq_log_ratio > log_cap  # (B,)
            seq_w = torch.exp(seq_log_ratio.clamp(max=log_cap))  # (B,)
            weights = seq_w.unsqueeze(-1).expand_as(log_ratio)  # (B, T)
            clipped_frac = clipped.float().mean()
        weights = torch.where(m, weights, torch.zeros_like(weights))
    return weights, clipped_frac
