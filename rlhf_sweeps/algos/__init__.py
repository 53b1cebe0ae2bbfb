"""Pure tensor math for RLHF (torch only): logprobs, KL estimators, regularizers,
advantages, policy and preference losses. See docs/science.md §2-3."""

from rlhf_sweeps.algos.adaptive_kl import AdaptiveKLController, CoefController
from rlhf_sweeps.algos.advantages import gae, reinforce_advantages, rloo_advantages
from rlhf_sweeps.algos.clipped import (
    GROUP_NORMS,
    LOSS_AGGREGATIONS,
    aggregate_token_loss,
    clipped_surrogate,
    clipped_value_loss,
    explained_variance,
    group_advantages,
    importance_corrected_penalty,
    per_token_rewards,
)
from rlhf_sweeps.algos.importance import truncated_is_weights
from rlhf_sweeps.algos.kl import KL_ESTIMATORS, kl_k1, kl_k2, kl_k3
from rlhf_sweeps.algos.logprobs import entropy_from_logits, kl_from_logits, logprobs_from_logits
from rlhf_sweeps.algos.losses import policy_gradient_loss, ppo_clip_loss
from rlhf_sweeps.algos.ops import (
    exact_div,
    first_true_indices,
    has_eos,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    response_mask,
)
from rlhf_sweeps.algos.preference import dpo_loss, maxent_bt_loss, simpo_loss
from rlhf_sweeps.algos.regularizers import (
    Regularizer,
    per_token_penalty,
    regularized_reward,
    regularizer_loss,
    sequence_penalty,
    uniform_ref_logprobs,
)

__all__ = [
    "AdaptiveKLController",
    "CoefController",
    "GROUP_NORMS",
    "LOSS_AGGREGATIONS",
    "KL_ESTIMATORS",
    "Regularizer",
    "aggregate_token_loss",
    "clipped_surrogate",
    "clipped_value_loss",
    "dpo_loss",
    "entropy_from_logits",
    "exact_div",
    "explained_variance",
    "first_true_indices",
    "gae",
    "group_advantages",
    "has_eos",
    "importance_corrected_penalty",
    "kl_from_logits",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "maxent_bt_loss",
    "per_token_penalty",
    "per_token_rewards",
    "policy_gradient_loss",
    "ppo_clip_loss",
    "regularized_reward",
    "regularizer_loss",
    "reinforce_advantages",
    "response_mask",
    "rloo_advantages",
    "sequence_penalty",
    "simpo_loss",
    "truncated_is_weights",
    "uniform_ref_logprobs",
]
