"""The sampler interface every rollout engine implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch


@dataclass
class Rollout:
    prompts: list[list[int]]  # one entry per response (each prompt repeated n times, prompt-major)
    responses: torch.Tensor  # (N, T) token ids, <pad> after the first <eos>
    logprobs: Optional[torch.Tensor]  # (N, T) the engine's log-probs of the sampled tokens at the
    #                                   sampling temperature (0 at padding), or None


class Sampler(Protocol):
    def generate(self, prompts: list[list[int]], n: int, seed: int) -> Rollout:
        """`n` samples per prompt, reproducible for a given seed."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""

    def close(self) -> None:
        """Free the engine (a sweep may run many jobs in one process)."""
