"""Masked reductions and response bookkeeping shared by every algorithm.

Shapes: `B` sequences, `T` response positions. A mask is either bool or 0/1
float and marks the positions that belong to a response (see `response_mask`).
Masked-out positions may hold anything, including `nan` or `-inf` (padding
logprobs), so reductions select with `torch.where` instead of multiplying by
the mask: `0 * -inf` is `nan`.
"""

from __future__ import annotations

import torch


def _as_bool(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bool mask broadcast to `like`'s shape (a 0/1 float mask becomes bool)."""
    return torch.broadcast_to(mask.bool(), like.shape)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `x` over positions where `mask` is set; all of them if `dim` is None."""
    m = _as_bool(mask, x)
    x = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over masked positions; 0 (not nan) where no position is set.

    An empty row happens when a response is a bare EOS after truncation or in a
    padded microbatch; a `nan` there would poison a whole optimizer step.
    """
    m = _as_bool(mask, x)
    count = m.sum() if dim is None else m.sum(dim=dim)
    return masked_sum(x, m, dim) / count.clamp(min=1).to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` over all masked positions (a scalar), Bessel-corrected by default."""
    m = _as_bool(mask, x)
    mean = masked_mean(x, m)
    n = m.sum().to(x.dtype)
    sq = masked_sum((x - mean) ** 2, m)
    if unbiased:
        return sq / (n - 1).clamp(min=1)
    return sq / n.clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalize `x` to unit variance over the masked positions (batch-wide statistics).

    With `shift_mean=False` the mean is kept (only the scale changes), as for
    rewards whose sign matters. Masked-out positions are returned as 0.
    """
    m = _as_bool(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros((), dtype=x.dtype, device=x.device))


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """(B, T) bool -> (B,) long: index of the first True per row, T if the row has none."""
    T = bools.shape[-1]
    positions = torch.arange(T, device=bools.device)  # (T,)
    # A False position is pushed to T, so the row minimum is the first True (or T).
    return torch.where(bools, positions, torch.full_like(positions, T)).min(dim=-1).values


def response_mask(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) response tokens -> (B, T) bool: True up to and including the first EOS.

    Everything after the first EOS is padding (or garbage a sampler emitted
    past EOS) and must not count in logprobs, KL or length. A row without EOS
    (truncated at max length) is all True; `has_eos` tells those apart.
    """
    first_eos = first_true_indices(tokens == eos_id)  # (B,)
    positions = torch.arange(tokens.shape[-1], device=tokens.device)  # (T,)
    return positions.unsqueeze(0) <= first_eos.unsqueeze(-1)


def has_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(B, T) -> (B,) bool: whether the response contains an EOS token at all."""
    return (tokens == eos_id).any(dim=-1)


def exact_div(a: int, b: int, what: str) -> int:
    """`a // b`, raising if `b` does not divide `a` (batch arithmetic must never round)."""
    if b == 0 or a % b != 0:
        raise ValueError(f"{what}: {a} is not divisible by {b}")
    return a // b
