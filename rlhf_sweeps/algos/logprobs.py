"""Per-position statistics of a categorical policy, from logits at a temperature.

Every function divides the logits by `temperature` itself (docs/science.md §3:
logp, ref and d are "all computed from logits divided by the same sampling
temperature"). Sampling at T != 1 while scoring at T = 1 is a classic silent
bug: the logprobs then describe a policy that never produced the samples and
every KL / entropy number is off. The temperature is a sweep axis, so it has
no default.

Inputs may be bf16; all math runs in float32 (a bf16 log-softmax over a large
vocabulary loses several digits) and float32 is returned.
"""

from __future__ import annotations

import torch


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`. logits (B, T, V), tokens (B, T) -> (B, T)."""
    logp_all = _log_softmax(logits, temperature)  # (B, T, V)
    return logp_all.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # (B, T)


def entropy_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Exact entropy H_t = -sum_v p_v log p_v of softmax(logits / temperature). (B, T, V) -> (B, T).

    This is the `entropy (exact)` regularizer of docs/science.md §3. Vocabulary
    entries with p = 0 (logit -inf, e.g. suppressed tokens) contribute 0, not nan.
    """
    logp = _log_softmax(logits, temperature)  # (B, T, V)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros((), device=p.device))
    return -plogp.sum(dim=-1)  # (B, T)


def kl_from_logits(logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Exact per-position KL(p || q), p = softmax(logits/T), q = softmax(ref_logits/T). -> (B, T).

    Summing this over a response gives the exact sequence KL(pi || pi_ref) of
    the evaluation metrics (docs/science.md §4), conditional on the sampled prefix.
    """
    logp = _log_softmax(logits, temperature)  # (B, T, V)
    logq = _log_softmax(ref_logits, temperature)  # (B, T, V)
    p = logp.exp()
    # p = 0 contributes 0 even where q = 0 too; p > 0 with q = 0 is +inf, as it should be.
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros((), device=p.device))
    return terms.sum(dim=-1)  # (B, T)
