"""Evaluation on a fixed held-out prompt set with fixed seeds (docs/science.md §4).

Every `eval_every` steps the current policy samples the same prompts with the
same seed, and we measure proxy and gold reward, KL to the initial policy as
a sequence sum (exact from full distributions, and the k1 / k3 estimates),
exact entropy, response length, EOS rate and the gold win rate against the
initial policy's samples (all pairs within a prompt, ties count 1/2).

Noise: the standard errors of the proxy and gold means are analytic and
clustered by prompt: the std of the per-prompt means over sqrt(#prompts).
The samples of one prompt are correlated (they share the prompt), so the
plain std/sqrt(N) over all responses would understate the error. Where the
gold scorer has parts (the embedded world), gold's content and fluency parts
are logged too, in gold's units, adding up to the gold mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import (
    entropy_from_logits,
    has_eos,
    kl_from_logits,
    kl_k1,
    kl_k3,
    logprobs_from_logits,
    masked_sum,
)
from rlhf_sweeps.models import make_sequence_batch, response_logits, special_ids


@dataclass
class SequenceStats:
    """Per-sequence statistics of sampled responses under policy and reference."""

    logp: torch.Tensor  # (N,) summed log-prob under the policy
    kl_exact: torch.Tensor  # (N,)
    kl_k1: torch.Tensor  # (N,)
    kl_k3: torch.Tensor  # (N,)
    entropy: torch.Tensor  # (N,)
    length: torch.Tensor  # (N,) response tokens excluding <eos>
    eos: torch.Tensor  # (N,) bool


@torch.no_grad()
def sequence_stats(policy, ref, prompts, responses, temperature: float, batch_size: int = 256) -> SequenceStats:
    """Computed on the policy's device; returned on the CPU, like the scorers' rewards."""
    pad_id, eos_id = special_ids(policy)
    device = next(policy.parameters()).device
    parts = []
    for s in range(0, len(prompts), batch_size):
        resp = responses[s : s + batch_size]
        batch = make_sequence_batch(prompts[s : s + batch_size], resp, eos_id, pad_id).to(device)
        resp = resp.to(device)
        logits, ref_logits = response_logits(policy, batch), response_logits(ref, batch)
        mask = batch.response_mask
        logp = logprobs_from_logits(logits, resp, temperature)
        ref_logp = logprobs_from_logits(ref_logits, resp, temperature)
        eos = has_eos(resp, eos_id)
        parts.append((
            masked_sum(logp, mask, 1),
            masked_sum(kl_from_logits(logits, ref_logits, temperature), mask, 1),
            masked_sum(kl_k1(logp, ref_logp), mask, 1),
            masked_sum(kl_k3(logp, ref_logp), mask, 1),
            masked_sum(entropy_from_logits(logits, temperature), mask, 1),
            mask.sum(1) - eos.long(),
            eos,
        ))
    return SequenceStats(*(torch.cat(cols).cpu() for cols in zip(*parts)))


def clustered_se(values: torch.Tensor, n_prompts: int) -> float:
    """Standard error of the mean of prompt-major `values` (n_prompts x k), clustered by prompt."""
    if n_prompts < 2:  # one cluster: fall back to the samples themselves
        return float(values.std() / len(values) ** 0.5) if len(values) > 1 else float("nan")
    per_prompt = values.view(n_prompts, -1).mean(1)  # (P,)
    return float(per_prompt.std() / n_prompts**0.5)


def win_rate(gold: torch.Tensor, init_gold: torch.Tensor, n_prompts: int) -> float:
    """P(gold of a current sample > gold of an initial sample of the same prompt)."""
    g = gold.view(n_prompts, -1, 1)
    g0 = init_gold.view(n_prompts, 1, -1)
    return float(((g > g0).float() + 0.5 * (g == g0).float()).mean())


class Evaluator:
    def __init__(self, prompts, proxy, gold, ref, temperature: float, samples_per_prompt: int, seed: int,
                 decode=None, n_table_rows: int = 16):
        self.prompts = prompts
        self.proxy, self.gold, self.ref = proxy, gold, ref
        self.temperature = temperature
        self.n = samples_per_prompt
        self.seed = seed
        self.decode = decode or (lambda ids: " ".join(map(str, ids)))
        self.n_table_rows = n_table_rows
        self.init_gold: Optional[torch.Tensor] = None  # set by the first evaluation (step 0)

    def __call__(self, policy, sampler) -> tuple[dict[str, float], list[dict]]:
        rollout = sampler.generate(self.prompts, n=self.n, seed=self.seed)
        responses = rollout.response_lists()  # as sampled: what both reward models score
        stats = sequence_stats(policy, self.ref, rollout.prompts, rollout.responses, self.temperature)
        proxy = self.proxy(rollout.prompts, responses)
        gold = self.gold(rollout.prompts, responses)
        if self.init_gold is None:
            self.init_gold = gold.clone()
        n_prompts = len(self.prompts)
        out = {
            M.EVAL_PROXY_REWARD: proxy.mean(),
            M.EVAL_GOLD_REWARD: gold.mean(),
            M.EVAL_PROXY_SE: clustered_se(proxy, n_prompts),
            M.EVAL_GOLD_SE: clustered_se(gold, n_prompts),
            M.EVAL_KL: stats.kl_exact.mean(),
            M.EVAL_KL_K1: stats.kl_k1.mean(),
            M.EVAL_KL_K3: stats.kl_k3.mean(),
            M.EVAL_ENTROPY: stats.entropy.mean(),
            M.EVAL_RESPONSE_LENGTH: stats.length.float().mean(),
            M.EVAL_EOS_RATE: stats.eos.float().mean(),
            M.EVAL_GOLD_WIN_RATE: win_rate(gold, self.init_gold, n_prompts),
        }
        if hasattr(self.gold, "parts"):
            content, fluency = self.gold.parts(rollout.prompts, responses)
            out[M.EVAL_GOLD_CONTENT], out[M.EVAL_GOLD_FLUENCY] = content.mean(), fluency.mean()
        rows = [
            {
                "prompt": self.decode(rollout.prompts[i]),
                "response": self.decode(responses[i]),
                "proxy": round(float(proxy[i]), 4),
                "gold": round(float(gold[i]), 4),
                "kl": round(float(stats.kl_exact[i]), 4),
            }
            for i in range(min(self.n_table_rows, len(rollout.prompts)))
        ]
        return {k: float(v) for k, v in out.items()}, rows
