"""Policy losses, each returning (loss, stats) with detached scalar stats.

Deviation from many RLHF codebases, on purpose: the REINFORCE/RLOO loss sums
logprobs over the sequence (one action = one response, docs/science.md §2)
instead of averaging them over tokens. See `policy_gradient_loss`.
"""

from __future__ import annotations

import torch

from rlhf_sweeps.algos.ops import masked_mean, masked_sum


def policy_gradient_loss(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sequence-level REINFORCE: loss = -mean_i A_i * sum_t w_t * logp_t.

    logp (B, T) with grad; advantages (B,); mask (B, T); is_weights (B, T)
    truncated importance weights or None (treated as constants).

    Why a sum over tokens: log pi(y|x) = sum_t log pi(a_t|s_t), so
    A * grad sum_t logp_t is the unbiased score-function gradient of E[R] with
    the whole response as one action. A token mean would weight each sequence
    by 1/|y|, a length-dependent step size that biases the gradient (e.g. a
    long bad response is pushed down less than a short one) and would
    confound the very length effects this project measures.
    """
    adv = advantages.detach()  # (B,)
    weighted = logp if is_weights is None else logp * is_weights.detach()  # (B, T)
    seq_logp = masked_sum(weighted, mask, dim=-1)  # (B,)
    loss = -(adv * seq_logp).mean()
    stats = {
        "pg_loss": loss.detach().float(),
        "advantage_mean": adv.float().mean(),
        "advantage_std": adv.float().std(unbiased=False),
    }
    if is_weights is not None:
        stats["is_weight_mean"] = masked_mean(is_weights.detach().float(), mask)
    return loss, stats


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages_t: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO clipped surrogate, token mean over the batch (Schulman et al. 2017).

    logp (B, T) with grad; old_logp (B, T) from the policy that sampled;
    advantages_t (B, T) per-token advantages (e.g. from `gae`); clip epsilon.
    loss = token_mean(max(-A r, -A clip(r, 1-eps, 1+eps))), r = exp(logp - old_logp).
    stats: pg_loss, clipfrac (share of tokens where the clipped branch is
    active), approx_kl (k3 estimate of KL(old || new) on the old policy's
    samples: (r - 1) - log r, token mean), ratio_mean.
    """
    adv = advantages_t.detach()
    log_ratio = logp - old_logp.detach()  # (B, T)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "pg_loss": loss.detach().float(),
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean((torch.expm1(log_ratio) - log_ratio).float(), mask),
            "ratio_mean": masked_mean(ratio.float(), mask),
        }
    return loss, stats
