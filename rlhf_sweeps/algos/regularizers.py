"""Regularizers as pure functions of per-token statistics (docs/science.md §3).

One sign convention everywhere: a regularizer yields a per-token *penalty*
p_t, and the regularized sequence reward is

    R = r - coef * sum_t p_t          (placement "reward", docs/science.md §3)

or, in the loss, `coef * token_mean(p_t)` is added to the policy loss
(placement "loss"). An entropy *bonus* is therefore a negative penalty.

| name / estimator   | p_t                 | R                               |
|--------------------|---------------------|---------------------------------|
| kl / k1, k2, k3    | estimator of d_t    | r - beta * sum KL-estimate      |
| entropy / sampled  | logp_t              | r + alpha * sum(-logp_t)        |
| entropy / exact    | -H_t                | r + alpha * sum H_t             |
| none               | 0                   | r                               |

The paper's MaxEnt RL is `entropy / sampled / reward`. Length normalization
divides the sum by |y| (SimPO's temperature alpha = beta/|y|, docs/science.md §2).

Identity made visible by `uniform_ref_logprobs` (docs/science.md §2): the
sampled entropy penalty is the k1 KL penalty toward the uniform reference
minus log|V| per token, so MaxEnt RL = KL-to-uniform RL + a length bonus
alpha*log|V| per generated token.

Known weak spots, kept on purpose because they are sweep points, not bugs:
k1 and `entropy/sampled` placed in the *loss* have a zero-mean gradient
(E_pi[grad log pi] = 0), so they regularize nothing in expectation; use k2 or
k3 (or `entropy/exact`) in the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlhf_sweeps.algos.kl import KL_ESTIMATORS
from rlhf_sweeps.algos.ops import masked_mean, masked_sum
from rlhf_sweeps.config import ENTROPY_REG, PLACEMENTS, REGULARIZERS

_NAMES = tuple(REGULARIZERS)
_ENTROPY_ESTIMATORS = REGULARIZERS[ENTROPY_REG]
_PLACEMENTS = PLACEMENTS


@dataclass(frozen=True)
class Regularizer:
    """Which regularizer, how it is estimated, and where it enters the objective.

    name: "kl" | "entropy" | "none".
    estimator: "k1" | "k2" | "k3" for kl; "sampled" | "exact" for entropy;
        ignored for none.
    placement: "reward" (subtracted from the sequence reward before
        advantages) | "loss" (token mean added to the policy loss).
    length_normalize: divide the sequence sum by the response length
        (placement "reward" only; the loss placement is a token mean already).
    """

    name: str
    estimator: str
    placement: str
    length_normalize: bool

    def __post_init__(self) -> None:
        if self.name not in _NAMES:
            raise ValueError(f"regularizer name must be one of {_NAMES}, got {self.name!r}")
        if self.name == "kl" and self.estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl estimator must be one of {tuple(KL_ESTIMATORS)}, got {self.estimator!r}"
            )
        if self.name == "entropy" and self.estimator not in _ENTROPY_ESTIMATORS:
            raise ValueError(
                f"entropy estimator must be one of {_ENTROPY_ESTIMATORS}, got {self.estimator!r}"
            )
        if self.placement not in _PLACEMENTS:
            raise ValueError(f"placement must be one of {_PLACEMENTS}, got {self.placement!r}")

    @property
    def needs_entropy(self) -> bool:
        """Whether the exact per-position entropy (full-vocabulary softmax) is needed."""
        return self.name == "entropy" and self.estimator == "exact"


def per_token_penalty(
    reg: Regularizer,
    logp: torch.Tensor,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, T) penalty p_t such that R = r - coef * sum_t p_t (see module docstring).

    logp, ref_logp: (B, T) logprobs of the sampled tokens at the sampling
    temperature; entropy: (B, T) exact entropy at that temperature. The
    autograd graph through `logp` / `entropy` is kept: the loss placement
    differentiates the penalty. Padding positions are not zeroed here; every
    consumer reduces with the response mask.
    """
    if reg.name == "kl":
        if ref_logp is None:
            raise ValueError("kl regularizer needs ref_logp (reference-model logprobs)")
        return KL_ESTIMATORS[reg.estimator](logp, ref_logp)
    if reg.name == "entropy":
        if reg.estimator == "sampled":
            # -logp_t is a Monte Carlo estimate of H_t; the bonus is a negative penalty.
            return logp
        if entropy is None:
            raise ValueError("entropy/exact regularizer needs the exact per-token entropy")
        return -entropy
    return torch.zeros_like(logp)


def uniform_ref_logprobs(logp: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logprobs of the uniform reference, -log|V| everywhere, shaped like `logp`.

    docs/science.md §2: -log pi(a_t) = -(log pi(a_t) - log(1/|V|)) + log|V|.
    Hence, per token,

        penalty(entropy/sampled) = kl_k1(logp, uniform_ref_logprobs(logp, V)) - log|V|

    and the MaxEnt reward R = r - alpha*sum_t logp_t equals the KL-to-uniform
    reward plus alpha*log|V| per generated token: a hidden incentive to be long.
    """
    return torch.full_like(logp, -math.log(vocab_size))


def sequence_penalty(penalty: torch.Tensor, mask: torch.Tensor, length_normalize: bool) -> torch.Tensor:
    """(B, T) per-token penalty -> (B,) sum over response tokens, / |y| if length_normalize.

    Length normalization is SimPO's temperature alpha = beta/|y| (docs/science.md
    §2, third row). A response of length 0 gives 0, not nan.
    """
    total = masked_sum(penalty, mask, dim=-1)  # (B,)
    if not length_normalize:
        return total
    length = mask.bool().sum(dim=-1).clamp(min=1).to(total.dtype)  # (B,)
    return total / length


def regularized_reward(
    scores: torch.Tensor,
    penalty: torch.Tensor,
    mask: torch.Tensor,
    coef: float | torch.Tensor,
    reg: Regularizer,
    eos_missing: torch.Tensor | None = None,
    eos_penalty: float = 0.0,
) -> torch.Tensor:
    """(B,) sequence reward that advantages are computed from.

    R = scores - coef * sequence_penalty(penalty)    (placement "reward" only)
               - eos_penalty * eos_missing

    The penalty is detached: in the reward it is a number that REINFORCE
    weights logp with, not something to differentiate. A missing-EOS penalty
    (docs/science.md §3) must come with the `eos_missing` flags; asking for a
    nonzero penalty without them raises instead of silently doing nothing.
    """
    reward = scores.float()
    if reg.placement == "reward":
        seq = sequence_penalty(penalty.detach().float(), mask, reg.length_normalize)  # (B,)
        reward = reward - coef * seq
    if eos_penalty != 0.0:
        if eos_missing is None:
            raise ValueError("eos_penalty != 0 needs eos_missing (B,) flags")
        reward = reward - eos_penalty * eos_missing.float()
    return reward


def regularizer_loss(
    penalty: torch.Tensor, mask: torch.Tensor, coef: float | torch.Tensor, reg: Regularizer
) -> torch.Tensor:
    """Scalar loss term coef * token_mean(penalty) for placement "loss", else 0.

    A token mean over the whole batch (docs/science.md §3, "added to the policy
    loss, token mean"); `length_normalize` does not apply here. Gradients flow
    through `penalty`.
    """
    if reg.placement != "loss":
        return torch.zeros((), dtype=penalty.dtype, device=penalty.device)
    return coef * masked_mean(penalty, mask)
