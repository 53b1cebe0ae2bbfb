"""The hidden language's gold reward as a scorer, split into content and fluency."""

from __future__ import annotations

import torch

from rlhf_sweeps.rewards import Normalization


class GoldScorer:
    """The hidden language's gold reward (numpy), as a normalized tensor.

    `parts` splits it into content and fluency in the same normalized units:
    with raw gold g = c + f and normalization (g - mean) / std, content is
    (c - content_mean) / std and fluency the rest, where content_mean is the
    mean content on the initial policy's samples. So content + fluency = gold
    for every response (docs/science.md §5).
    """

    def __init__(self, language, norm: Normalization = Normalization(), content_mean: float = 0.0):
        self.language = language
        self.norm = norm
        self.content_mean = content_mean

    def raw(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return torch.from_numpy(self.language.gold_reward(prompts, responses)).float()

    def __call__(self, prompts: list[list[int]], responses: list[list[int]]) -> torch.Tensor:
        return self.norm(self.raw(prompts, responses))

    def parts(self, prompts: list[list[int]], responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(content, fluency), each (N,), normalized so that they add up to `self(...)`."""
        c, f = (torch.from_numpy(x).float() for x in self.language.gold_parts(prompts, responses))
        content = (c - self.content_mean) / self.norm.std
        return content, self.norm(c + f) - content
