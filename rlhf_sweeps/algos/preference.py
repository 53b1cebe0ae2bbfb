"""Offline preference losses from implicit rewards (docs/science.md §2).

Each loss plugs an implicit reward into Bradley-Terry,
loss = -log sigmoid(r_chosen - r_rejected [- gamma]), averaged over pairs:

| loss          | implicit reward r(y)            | row of the docs/science.md §2 table |
|---------------|---------------------------------|-----------------------------------|
| dpo_loss      | beta * (log pi - log pi_ref)    | KL-constrained                    |
| maxent_bt_loss| alpha * log pi                  | maximum entropy                   |
| simpo_loss    | (beta / |y|) * log pi, margin g | length-normalized entropy         |

For DPO and MaxEnt-BT the partition terms beta*log Z(x), alpha*log Z(x)
cancel in the difference (same x, same temperature). With SimPO's
alpha = beta/|y| they do not when |y_w| != |y_l| (the reviewers' objection,
docs/science.md §1): the stationarity form's lambda(x) cancels but the offset
beta*(1/|y_w| - 1/|y_l|) remains, and SimPO drops it ("SimPO up to an offset").

Inputs: per-sequence summed logprobs (B,) over response tokens and response
lengths (B,). Stats are detached float scalars with the same keys for every loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bt_loss(
    chosen_reward: torch.Tensor,
    rejected_reward: torch.Tensor,
    chosen_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    margin: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = -F.logsigmoid(chosen_reward - rejected_reward - margin).mean()
    with torch.no_grad():
        stats = {
            "chosen_reward": chosen_reward.float().mean(),
            "rejected_reward": rejected_reward.float().mean(),
            "margin": (chosen_reward - rejected_reward).float().mean(),
            "accuracy": (chosen_reward > rejected_reward).float().mean(),
            "chosen_logp": chosen_logp.float().mean(),
            "rejected_logp": rejected_logp.float().mean(),
        }
    return loss, stats


def simpo_loss(
    chosen_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    chosen_len: torch.Tensor,
    rejected_len: torch.Tensor,
    beta: float,
    gamma: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO (Meng et al. 2024): r = beta * logp / |y|; loss = -logsigmoid(r_c - r_l - gamma).

    All inputs (B,). `gamma` is the target margin in reward units (not gamma/beta).
    Lengths are clamped to >= 1 so an empty response cannot divide by zero.
    """
    r_c = beta * chosen_logp / chosen_len.to(chosen_logp.dtype).clamp(min=1)
    r_l = beta * rejected_logp / rejected_len.to(rejected_logp.dtype).clamp(min=1)
    return _bt_loss(r_c, r_l, chosen_logp, rejected_logp, margin=gamma)


def dpo_loss(
    chosen_logp: torch.Tensor,
    rejected_logp: torch.Tensor,
    ref_chosen_logp: torch.Tensor,
    ref_rejected_logp: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO (Rafailov et al. 2023): r = beta * (logp - ref_logp). All inputs (B,)."""
    r_c = beta * (chosen_logp - ref_chosen_logp.detach())
    r_l = beta * (rejected_logp - ref_rejected_logp.detach())
    return _bt_loss(r_c, r_l, chosen_logp, rejected_logp)


def maxent_bt_loss(
    chosen_logp: torch.Tensor, rejected_logp: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reference-free MaxEnt Bradley-Terry: r = alpha * logp (constant temperature). Inputs (B,)."""
    return _bt_loss(alpha * chosen_logp, alpha * rejected_logp, chosen_logp, rejected_logp)
