"""PPO's value model (critic): a scalar head on a transformer backbone, V(s_t) per response token.

Initialization (`algo.value_init`, docs/science.md §3, "PPO and GRPO"):

* `reward` (the default, as the TL;DR PPO recipes do: Stiennon et al. 2020,
  Huang et al. 2024): a trainable fp32 copy of the proxy reward model, its
  backbone and its scalar head. The reward model already reads the features
  the score depends on, so the critic starts by predicting, at every prefix,
  roughly the score the finished response would get: a useful baseline from
  step 0 instead of one learned from scratch while the policy moves. The
  reward's normalization is folded into the head (w/std, bias (b - mean)/std),
  so the critic starts in the units the policy is trained on. It is the proxy
  whatever `reward` trains the policy (gold, zero): the critic then learns
  those returns from the proxy's starting point.
* `policy`: the SFT policy's backbone with a zero head, so V = 0 everywhere at
  the start, the mean of the normalized reward on SFT samples. Use it when the
  reward model's tokenizer differs from the policy's (its positions would not
  line up with the policy's tokens), or to study a critic that knows nothing
  of the reward model.

The value of state s_t (prompt and the response tokens before a_t) is read at
the hidden state that predicts a_t, the same positions as `response_logits`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from rlhf_sweeps.models import SequenceBatch, autocast_forward

VALUE_INITS = ("reward", "policy")


class ValueModel(nn.Module):
    """backbone (a Hugging Face base model, no LM head) + Linear(hidden, 1) with a bias."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    @property
    def device(self) -> torch.device:  # `autocast_forward` reads it, as on a PreTrainedModel
        return self.head.weight.device

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, T) values of the response positions, float32."""
        hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False).last_hidden_state  # (B, P+T, H)
        P = batch.prompt_len
        return self.head(hidden[:, P - 1: -1]).squeeze(-1).float()  # (B, T)


def _head_from(weight: torch.Tensor, bias: torch.Tensor | float, mean: float, std: float) -> nn.Linear:
    """Linear(h, 1) computing (w.x + b - mean) / std: the normalized reward's units."""
    head = nn.Linear(weight.shape[-1], 1, bias=True)
    with torch.no_grad():
        head.weight.copy_(weight.detach().float().reshape(1, -1) / std)
        head.bias.fill_((float(bias) - mean) / std)
    return head


def build_value_model(init: str, policy: nn.Module, reward_model: nn.Module | None, reward_norm,
                      same_vocab: bool, device: torch.device, dtype: str = "float32",
                      gradient_checkpointing: bool = False) -> ValueModel:
    """A trainable fp32 critic on `device` (see the module docstring for `init`).

    reward_model: the proxy RM module (a *ForSequenceClassification with a `score`
    head); reward_norm: its Normalization (mean, std); same_vocab: whether it reads
    the policy's token ids. On CUDA, as for the policy (`models.prepare_for_training`),
    `dtype` bfloat16 runs its forward under autocast over fp32 weights and
    `gradient_checkpointing` recomputes the backbone's activations.
    """
    if init == "reward":
        from rlhf_sweeps.config import ConfigError

        if reward_model is None or not same_vocab:
            raise ConfigError("algo.value_init=reward: the proxy reward model does not read the policy's token ids "
                              "(another tokenizer), so its values cannot be aligned with the policy's tokens; "
                              "use algo.value_init=policy")
        score = getattr(reward_model, "score", None)
        if not isinstance(score, nn.Linear) or score.out_features != 1:
            raise ConfigError(f"algo.value_init=reward: {type(reward_model).__name__} has no scalar `score` head to "
                              "start the critic from; use algo.value_init=policy")
        backbone = copy.deepcopy(reward_model.base_model)
        bias = 0.0 if score.bias is None else score.bias.detach().item()
        head = _head_from(score.weight, bias, reward_norm.mean, reward_norm.std)
    elif init == "policy":
        backbone = copy.deepcopy(policy.base_model)
        head = nn.Linear(policy.config.hidden_size, 1, bias=True)
        with torch.no_grad():  # V = 0: the normalized reward's mean on the initial policy's samples
            head.weight.zero_()
            head.bias.zero_()
    else:
        raise ValueError(f"algo.value_init must be one of {VALUE_INITS}, got {init!r}")
    value = ValueModel(backbone.float(), head).to(device).requires_grad_(True)
    if device.type == "cuda":
        if dtype != "float32":
            autocast_forward(value, getattr(torch, dtype))
        if gradient_checkpointing:
            value.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            value.train()
    return value
