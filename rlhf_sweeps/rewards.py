"""Proxy and gold reward scorers, normalized against the initial policy.

SCIENCE.md section 4: both rewards are normalized so the initial policy's
samples score mean 0 and variance 1, so a regularization coefficient means
the same thing whatever reward model is plugged in. The statistics are
computed once, when the proxy stage is built, and stored with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rlhf_sweeps.models import chain_sequences, trim_response


@dataclass(frozen=True)
class Normalization:
    mean: float = 0.0
    std: float = 1.0

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.mean) / self.std


def responses_as_lists(responses: torch.Tensor) -> list[list[int]]:
    return [trim_response(row) for row in responses.tolist()]


class RewardModelScorer:
    """A sequence-classification reward model scoring `<bos> prompt <sep> response`."""

    def __init__(self, model, norm: Normalization = Normalization(), batch_size: int = 256):
        self.model = model.eval()
        self.norm = norm
        self.batch_size = batch_size

    @torch.no_grad()
    def raw(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        out = []
        for s in range(0, len(prompts), self.batch_size):
            ids, mask = chain_sequences(prompts[s : s + self.batch_size], responses[s : s + self.batch_size])
            out.append(self.model(input_ids=ids, attention_mask=mask).logits[:, 0].float())
        return torch.cat(out)

    def __call__(self, prompts: list[list[int]], responses: torch.Tensor) -> torch.Tensor:
        return self.norm(self.raw(prompts, responses_as_lists(responses)))


class GoldScorer:
    """The hidden language's gold reward (numpy), as a normalized tensor."""

    def __init__(self, language, norm: Normalization = Normalization()):
        self.language = language
        self.norm = norm

    def raw(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return torch.from_numpy(self.language.gold_reward(prompts, responses)).float()

    def __call__(self, prompts: list[list[int]], responses: torch.Tensor) -> torch.Tensor:
        return self.norm(self.raw(prompts, responses_as_lists(responses)))


def fit_normalization(raw: torch.Tensor) -> Normalization:
    return Normalization(float(raw.mean()), float(raw.std().clamp_min(1e-6)))


def pearson(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float), np.asarray(b, float))[0, 1])
