"""The sampler interface every rollout engine implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch


@dataclass(frozen=True)
class Sampling:
    """How a sampler draws: the same numbers for every engine, so switching engines does not
    change the experiment. Top-k is always off: samples must come from the policy itself."""

    temperature: float = 1.0  # also the temperature of every log-prob, KL and entropy
    top_p: float = 1.0
    max_new_tokens: int = 24

    @classmethod
    def of(cls, rollout_cfg) -> "Sampling":
        """The sampling keys of a `rollout` config."""
        return cls(rollout_cfg.temperature, rollout_cfg.top_p, rollout_cfg.max_new_tokens)


@dataclass
class Rollout:
    prompts: list[list[int]]  # one entry per response (each prompt repeated n times, prompt-major)
    responses: torch.Tensor  # (N, T) token ids, the sampler's padding after the first <eos>
    logprobs: Optional[torch.Tensor]  # (N, T) the engine's log-probs of the sampled tokens at the
    #                                   sampling temperature (0 at padding), or None
    # (N, T) bool: True at the positions the engine sampled (up to and including the first
    # <eos>, or all T when the response hit the length limit). Padding is told apart from a
    # <pad> the policy sampled by this mask, never by token id: a sampled special token is
    # part of the response and is scored as such (docs/science.md §5).
    mask: torch.Tensor

    def response_lists(self) -> list[list[int]]:
        """Each response exactly as sampled: its tokens up to its own length."""
        lengths = self.mask.sum(1).tolist()
        return [row[:n] for row, n in zip(self.responses.tolist(), lengths)]


class Sampler(Protocol):
    def generate(self, prompts: list[list[int]], n: int, seed: int) -> Rollout:
        """`n` samples per prompt, reproducible for a given seed."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""

    def close(self) -> None:
        """Free the engine (a sweep may run many jobs in one process)."""
