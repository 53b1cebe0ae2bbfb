"""Pieces of the clipped-ratio algorithms, PPO with a value model and GRPO (docs/science.md §3).

Each is a pure function of tensors; `rlhf_sweeps/loops/ppo.py` assembles them.

| function                     | used by | what it is                                                     |
|------------------------------|---------|----------------------------------------------------------------|
| `per_token_rewards`          | PPO     | -coef * p_t on every token, the score on the last (Ziegler)    |
| `group_advantages`           | GRPO    | (R - group mean) / (group std + eps), or R - group mean         |
| `clipped_surrogate`          | both    | per-token max(-A r, -A clip(r, 1 - eps, 1 + eps))               |
| `aggregate_token_loss`       | both    | token mean / sequence mean of token means / constant normalizer |
| `clipped_value_loss`         | PPO     | 0.5 * max((V - G)^2, (clip(V, V_old +- eps) - G)^2), token mean |
| `importance_corrected_penalty` | both  | p_t * pi/pi_old: TRL's `use_bias_correction_kl`                 |
| `explained_variance`         | PPO     | 1 - Var(G - V) / Var(G) over response tokens                   |

Every reduction takes optional batch-wide denominators (`n_seqs`, `n_tokens`), so a
loop that accumulates gradients over micro-batches gets exactly the loss (and the
gradient) of the whole minibatch: each micro-batch divides by the minibatch's
count, not its own.
"""

from __future__ import annotations

import torch

from rlhf_sweeps.algos.ops import exact_div, masked_mean, masked_sum, masked_var
from rlhf_sweeps.algos.regularizers import Regularizer

LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")
GROUP_NORMS = ("mean_std", "mean")


def per_token_rewards(
    scores: torch.Tensor,
    penalty: torch.Tensor,
    mask: torch.Tensor,
    coef: float | torch.Tensor,
    reg: Regularizer,
    eos_missing: torch.Tensor | None = None,
    eos_penalty: float = 0.0,
) -> torch.Tensor:
    """(B, T) per-token rewards whose sum over each response is `regularized_reward(...)`.

    The TL;DR PPO recipe (Ziegler et al. 2019; Stiennon et al. 2020): the
    regularizer's penalty on every response token, `-coef * p_t` (divided by
    |y| with `length_normalize`; nothing with placement "loss", which the loss
    handles), and the score `r` (minus `eos_penalty` for a response that never
    ended) on the last response token. Detached, like `regularized_reward`.
    scores (B,), penalty (B, T), mask (B, T) right-padded response mask.
    Zero outside the mask.
    """
    m = mask.bool()
    rewards = torch.zeros(penalty.shape, dtype=torch.float32, device=penalty.device)  # (B, T)
    if reg.placement == "reward":
        per_token = penalty.detach().float()
        if reg.length_normalize:
            per_token = per_token / m.sum(-1, keepdim=True).clamp(min=1).float()
        rewards = torch.where(m, -coef * per_token, rewards)
    final = scores.detach().float()  # (B,)
    if eos_penalty != 0.0:
        if eos_missing is None:
            raise ValueError("eos_penalty != 0 needs eos_missing (B,) flags")
        final = final - eos_penalty * eos_missing.float()
    last = (m.sum(-1) - 1).clamp(min=0)  # (B,) index of the last response token
    rows = torch.arange(len(last), device=last.device)
    rewards[rows, last] = rewards[rows, last] + final
    return rewards


def group_advantages(rewards: torch.Tensor, k: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantages (Shao et al. 2024, DeepSeekMath §4.1.2). (B*k,) -> (B*k,).

    rewards are prompt-major: the k samples of prompt i are rows i*k .. i*k+k-1.
    A_i = (R_i - mean_g R) / (std_g R + eps) with the unbiased group std (as
    TRL), or A_i = R_i - mean_g R with `scale=False` (the "mean only" option of
    Dr. GRPO, Liu et al. 2025: dividing by the std up-weights prompts whose
    samples barely differ). A group whose rewards tie has std 0 and gets
    advantages 0 (eps keeps 0/0 from being nan). Unlike RLOO the mean includes
    the sample itself, a (1 - 1/k) shrink of the centered reward.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B*k,), got shape {tuple(rewards.shape)}")
    if k < 2:
        raise ValueError(f"GRPO needs k >= 2 samples per prompt (a group), got k={k}")
    n_prompts = exact_div(rewards.shape[0], k, "grpo: number of rewards / samples per prompt k")
    grouped = rewards.view(n_prompts, k)  # (B, k)
    centered = grouped - grouped.mean(dim=1, keepdim=True)  # (B, k)
    if scale:
        centered = centered / (grouped.std(dim=1, keepdim=True) + eps)
    return centered.reshape(-1)


def clipped_surrogate(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate (Schulman et al. 2017, eq. 7), as a loss to minimize.

    logp (B, T) with grad; old_logp (B, T) of the policy that sampled (detached);
    advantages (B, T) per token (GRPO: the sequence's advantage on each token).
    Returns (loss_t, clipped, ratio), each (B, T): loss_t = max(-A r, -A clip(r));
    `clipped` marks tokens where the clipped branch is the larger one (its
    gradient is 0: the token has moved past the trust region in A's direction),
    the definition `ppo_clip_loss` uses for its clipfrac. Reduce loss_t with
    `aggregate_token_loss`; `ppo_clip_loss` is its "token_mean".
    """
    adv = advantages.detach()
    ratio = torch.exp(logp - old_logp.detach())  # (B, T)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).detach(), ratio


def aggregate_token_loss(
    loss_t: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    max_len: int | None = None,
    n_seqs: int | None = None,
    n_tokens: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss (B, T) to a scalar. docs/science.md §3, "Loss aggregation".

    - "token_mean": sum over every response token / n_tokens. Each token
      weighs the same; a response weighs in proportion to its length, relative
      to the other responses of the batch (DAPO's token-level loss; TRL "dapo").
    - "sequence_mean": mean over responses of each response's token mean (the
      GRPO paper's 1/G sum_i 1/|o_i| sum_t; TRL "grpo"). Each response weighs
      the same, so a token of a long response weighs 1/|y| as much as a token
      of a short one: a long response with a negative advantage is pushed down
      less per token than a short one (the length bias of Liu et al. 2025).
    - "constant": sum over every response token / (n_seqs * max_len), with
      max_len the length limit (Dr. GRPO; TRL "dr_grpo"). Each token weighs the
      same whatever the batch holds: the sequence-level policy gradient (sum of
      the response's token terms, like `policy_gradient_loss`) scaled by a
      constant.

    `n_seqs` / `n_tokens` default to this batch's counts; a micro-batch passes
    its minibatch's so that the micro-batch losses add up to the minibatch loss.
    """
    m = mask.bool()
    n_seqs = loss_t.shape[0] if n_seqs is None else n_seqs
    if mode == "token_mean":
        n_tokens = m.sum() if n_tokens is None else n_tokens
        if not torch.is_tensor(n_tokens):
            n_tokens = torch.tensor(float(n_tokens), device=loss_t.device)
        return masked_sum(loss_t, m) / n_tokens.clamp(min=1).to(loss_t.dtype)
    if mode == "sequence_mean":
        return masked_mean(loss_t, m, dim=-1).sum() / n_seqs
    if mode == "constant":
        if max_len is None or max_len < 1:
            raise ValueError(f"aggregation 'constant' needs the length limit max_len >= 1, got {max_len}")
        return masked_sum(loss_t, m) / (n_seqs * max_len)
    raise ValueError(f"loss aggregation must be one of {LOSS_AGGREGATIONS}, got {mode!r}")


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
    n_tokens: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped value loss of the TL;DR PPO recipes. -> (loss, stats).

    loss = 0.5 * token_mean(max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)):
    the prediction may not move further than `clip` from the rollout's value
    V_old and gain from it (OpenAI baselines' PPO2, kept by the recipes).
    values (B, T) with grad; old_values, returns (B, T) from the rollout.
    `n_tokens`: the minibatch's token count when this is one micro-batch of it.
    stats: value_clipfrac, the share of tokens where the clipped term is larger.
    """
    m = mask.bool()
    old, target = old_values.detach(), returns.detach()
    clipped_values = old + torch.clamp(values - old, -clip, clip)
    unclipped_sq = (values - target) ** 2
    clipped_sq = (clipped_values - target) ** 2
    loss = 0.5 * aggregate_token_loss(torch.maximum(unclipped_sq, clipped_sq), m, "token_mean", n_tokens=n_tokens)
    with torch.no_grad():
        stats = {"value_clipfrac": masked_mean((clipped_sq > unclipped_sq).float(), m)}
    return loss, stats


def importance_corrected_penalty(penalty: torch.Tensor, logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """p_t * pi(a_t|s_t) / pi_old(a_t|s_t), the ratio differentiated (TRL's `use_bias_correction_kl`).

    On samples of pi_old, E[r_t * p_t] = E_pi[p_t]: with k3 the value is an
    unbiased estimate of KL(pi || pi_ref) even after the policy moved away from
    the one that sampled (later PPO epochs and minibatches). The gradient
    changes too, even on-policy: without the ratio, k3 in the loss descends
    the reverse KL(pi_ref || pi) at each visited state; with it, the forward
    KL(pi || pi_ref) (docs/science.md §3, "PPO and GRPO"; tests/unit/test_ppo_grpo.py
    checks both on an exact categorical). (B, T) in, (B, T) out.
    """
    return penalty * torch.exp(logp - old_logp.detach())


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(G - V) / Var(G) over response tokens: 1 = a perfect critic, 0 = no better
    than a constant, < 0 = worse. nan when the returns do not vary (nothing to explain)."""
    with torch.no_grad():
        var_g = masked_var(returns.float(), mask)
        if var_g == 0:
            return torch.tensor(float("nan"))
        return 1.0 - masked_var((returns - values).float(), mask) / var_g
