"""Per-token estimators of KL(pi || pi_ref) on tokens sampled from pi (docs/science.md §3).

With `d = logp - ref_logp` at a sampled token (both at the sampling temperature):

- k1 = d: unbiased for the KL, high variance, often negative per token.
- k2 = d^2 / 2: biased as a value, but its gradient in expectation equals the
  gradient of KL(pi || ref) when placed in the loss (the "right gradient").
- k3 = exp(-d) - 1 + d = (r - 1) - log r with r = ref/pi: unbiased and >= 0
  (Schulman's "Approximating KL divergence" note).

All take and return (B, T) tensors and keep the autograd graph.
"""

from __future__ import annotations

import torch


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = logp - ref_logp. (B, T) -> (B, T)."""
    return logp - ref_logp


def kl_k2(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2. (B, T) -> (B, T)."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = exp(-d) - 1 + d with d = logp - ref_logp. (B, T) -> (B, T).

    `expm1` keeps precision for the small |d| typical of a policy near its
    reference, where `exp(-d) - 1` would cancel catastrophically.
    """
    d = logp - ref_logp
    return torch.expm1(-d) + d


KL_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
