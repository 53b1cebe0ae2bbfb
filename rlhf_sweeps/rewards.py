"""Proxy and gold reward scorers, normalized against the initial policy.

docs/science.md §4: both rewards are normalized so the initial policy's
samples score mean 0 and variance 1, so a regularization coefficient means
the same thing whatever reward model is plugged in. The statistics are
computed once, when the proxy stage is built, and stored with it.

Real reward models (`TextRewardScorer`) may come with their own tokenizer:
the policy's tokens are decoded to text and re-tokenized for the RM. There,
per the real-scale issue, the proxy is only centered (mean 0, its own scale
kept, so `algo.eos_penalty` and the KL coefficient keep the units of the
public TL;DR recipes) and the gold is standardized (mean 0, variance 1).

Every scorer is called with each response exactly as sampled (token lists,
`Rollout.response_lists`: no padding, a sampled special token kept) and
returns a CPU float tensor whatever device its model is on; a loop moves what
it needs. A reward model reads the whole response: its score is pooled at the
last real token by the attention mask, not at the last token that differs
from the pad id (the Hugging Face heads' rule), so a `<pad>` the policy
sampled is scored like any other token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from rlhf_sweeps.models import chain_sequences, right_pad


@dataclass(frozen=True)
class Normalization:
    mean: float = 0.0
    std: float = 1.0

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std


def pooled_reward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) scalar head at each row's last attended token; rows are right-padded.

    Hugging Face's sequence-classification heads pool at the last token that is not
    `pad_token_id`, which skips a `<pad>` the policy sampled at the end of a response.
    Pooling by the attention mask reads every sampled token; on sequences without a
    sampled pad both rules pick the same position.
    """
    score = getattr(model, "score", None)
    if score is None:  # a head of another shape: its own pooling
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
    last = attention_mask.sum(1) - 1  # (B,)
    return score(hidden[torch.arange(len(last), device=last.device), last])[:, 0]


class RewardModelScorer:
    """A sequence-classification reward model that reads the policy's own token ids.

    It scores each prompt followed by its response, padded with the pad id of its
    own config (a real RM with another tokenizer is a `TextRewardScorer`).
    """

    def __init__(self, model, norm: Normalization = Normalization(), batch_size: int = 256):
        self.model = model.eval()
        self.norm = norm
        self.batch_size = batch_size
        if model.config.pad_token_id is None:
            raise ValueError("reward model: its config has no pad_token_id; save it with one (distinct from eos)")
        self.pad_id = int(model.config.pad_token_id)

    @torch.no_grad()
    def raw(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        out = []
        for s in range(0, len(prompts), self.batch_size):
            ids, mask = chain_sequences(prompts[s : s + self.batch_size], responses[s : s + self.batch_size],
                                        self.pad_id)
            out.append(pooled_reward(self.model, ids.to(device), mask.to(device)).float().cpu())
        return torch.cat(out)

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return self.norm(self.raw(prompts, responses))


class ZeroReward:
    """`reward=zero`: every response scores 0, so only the regularizer moves the policy."""

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return torch.zeros(len(responses))


class TextRewardScorer:
    """A Hugging Face reward model (scalar head) scoring the policy's prompt + response.

    The reward model reads `prompt + response` in its own tokenization. When its
    vocabulary is the policy's (same tokens, same ids), the policy's ids are used
    as they are; otherwise both parts are decoded to text and re-tokenized, and a
    response that ended with the policy's eos ends with the RM's eos. Sequences
    are right-padded with the RM's pad id, which the head's pooling skips (it
    reads the last non-pad token: the eos of a finished response).
    """

    def __init__(self, model, rm_tokenizer, policy_tokenizer, norm: Normalization = Normalization(),
                 batch_size: int = 32, max_length: Optional[int] = None):
        from rlhf_sweeps.models import ensure_distinct_pad

        self.model = model.eval()
        self.norm = norm
        self.batch_size = batch_size
        self.rm_tok, self.policy_tok = rm_tokenizer, policy_tokenizer
        self.pad_id = ensure_distinct_pad(rm_tokenizer, model.config.vocab_size, "reward model")
        self.model.config.pad_token_id = self.pad_id  # what the head's pooling skips
        self.rm_eos = rm_tokenizer.eos_token_id
        self.policy_pad, self.policy_eos = policy_tokenizer.pad_token_id, policy_tokenizer.eos_token_id
        self.same_vocab = rm_tokenizer.get_vocab() == policy_tokenizer.get_vocab()
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)

    def _rm_ids(self, prompt: list[int], response: list[int]) -> list[int]:
        if self.same_vocab:
            return prompt + response
        ended = bool(response) and response[-1] == self.policy_eos
        body = response[:-1] if ended else response
        bos = self.policy_tok.bos_token_id
        if prompt and bos is not None and prompt[0] == bos:
            prompt = prompt[1:]  # the RM tokenizer adds its own, if it uses one
        prompt_text = self.policy_tok.decode(prompt, skip_special_tokens=False)
        response_text = self.policy_tok.decode(body, skip_special_tokens=False)
        ids = self.rm_tok(prompt_text + response_text, add_special_tokens=True)["input_ids"]
        if ended and self.rm_eos is not None:
            ids = ids + [self.rm_eos]
        return ids

    @torch.no_grad()
    def raw(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        seqs = [self._rm_ids(p, r) for p, r in zip(prompts, responses)]
        if self.max_length and max(map(len, seqs)) > self.max_length:
            raise ValueError(f"reward model input of {max(map(len, seqs))} tokens exceeds its "
                             f"{self.max_length} positions; lower task.max_prompt_tokens or rollout.max_new_tokens")
        out = []
        for s in range(0, len(seqs), self.batch_size):
            ids, mask = right_pad(seqs[s : s + self.batch_size], self.pad_id)  # (B, L)
            out.append(pooled_reward(self.model, ids.to(device), mask.to(device)).float().cpu())
        return torch.cat(out)

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return self.norm(self.raw(prompts, responses))


def fit_normalization(raw: torch.Tensor) -> Normalization:
    return Normalization(float(raw.mean()), float(raw.std().clamp_min(1e-6)))


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])
