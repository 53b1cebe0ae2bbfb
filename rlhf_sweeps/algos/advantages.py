"""Advantages: RLOO, REINFORCE with a batch-mean baseline, and GAE (docs/science.md §3)."""

from __future__ import annotations

import torch

from rlhf_sweeps.algos.ops import exact_div


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """Leave-one-out advantages: each reward minus the mean of the other k-1 of its prompt.

    rewards (B*k,) prompt-major: the k samples of prompt i are rows
    i*k .. i*k+k-1. The baseline excludes the sample itself, so it is
    independent of that sample and the gradient estimate stays unbiased
    (Ahmadian et al. 2024). Returns (B*k,).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B*k,), got shape {tuple(rewards.shape)}")
    if k < 2:
        raise ValueError(f"RLOO needs k >= 2 samples per prompt, got k={k}")
    n_prompts = exact_div(rewards.shape[0], k, "rloo: number of rewards / samples per prompt k")
    grouped = rewards.view(n_prompts, k)  # (B, k)
    others_mean = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)  # (B, k)
    return (grouped - others_mean).reshape(-1)


def reinforce_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) rewards minus the batch mean (plain REINFORCE baseline)."""
    return rewards - rewards.mean()


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016). -> (advantages, returns), (B, T).

    rewards, values, mask: (B, T); rewards are per token (in RLHF typically the
    sequence score at the last response token, minus per-token penalties).
    Only masked positions are steps of the episode: an unmasked position is
    skipped (it neither contributes nor breaks the recursion), so the value
    after the last response token is 0 (terminal) and left padding works too.
    Advantages and returns are 0 outside the mask. Returns = advantages +
    values are the value-head targets.
    """
    m = mask.bool()
    B, T = rewards.shape
    zeros = rewards.new_zeros(B)  # (B,)
    next_value = zeros
    last_gae = zeros
    advantages = torch.zeros_like(rewards)  # (B, T)
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        candidate = delta + gamma * lam * last_gae
        valid = m[:, t]
        last_gae = torch.where(valid, candidate, last_gae)
        next_value = torch.where(valid, values[:, t], next_value)
        advantages[:, t] = torch.where(valid, candidate, zeros)
    returns = torch.where(m, advantages + values, torch.zeros_like(values))
    return advantages, returns
