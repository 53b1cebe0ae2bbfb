"""Small pieces every training loop shares."""

from __future__ import annotations

import torch


def check_finite(loss: torch.Tensor, step: int, coefficient_hint: str) -> None:
    """Stop before a non-finite loss reaches the weights; the last checkpoint stays valid."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite loss ({loss.item()}) at step {step}. Lower lr or {coefficient_hint}, or set "
            "algo.grad_clip; the last checkpoint is kept."
        )


def sync_after_update(sampler, policy, staleness: int, sync_every: int) -> int:
    """Count one optimizer step of rollout-engine staleness and push the policy's
    weights into the engine when `sync_every` steps have passed. Returns the new staleness."""
    staleness += 1
    if staleness >= sync_every:
        sampler.sync_weights(policy)
        return 0
    return staleness
