"""Best-of-n baseline (Gao et al. 2022; docs/science.md §4). No training.

From the initial policy, sample N = `algo.bon_n` responses per held-out eval
prompt (one seeded draw), score them with the proxy and the gold reward, and
log for n = 1, 2, 4, ..., N (and N itself if it is not a power of two), with
MLflow step = n:

- `bon/gold_reward`: the expected gold reward of the proxy-argmax of a
  uniformly random n-subset of the N samples, averaged over prompts. With the
  samples sorted by proxy ascending (i = 1..N), the i-th is the argmax of a
  random n-subset with probability C(i-1, n-1) / C(N, n), which gives an
  unbiased estimator that uses all N samples instead of N/n disjoint groups.
- `bon/proxy_reward`: the same weights on the proxy scores.
- `bon/kl`: the analytic KL(best-of-n || pi_init) = ln n - (n-1)/n (an upper
  bound, Stiennon et al. 2020 / Beirami et al. 2024).

Samples are ranked by the training reward (`reward` group: the proxy by
default, gold for an oracle best-of-n; zero makes every n the n=1 policy).
Ties are broken by sample order (stable sort): with continuous scores they
only occur between identical responses, whose gold is also equal.
The eval/* keys are logged once at step 0 by the shared Evaluator so a BoN
run shows up next to the others; `steps`, `lr` and the regularizer are unused.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from rlhf_sweeps import metrics as M
from rlhf_sweeps.terminal import eval_line


def bon_ns(N: int) -> list[int]:
    """1, 2, 4, ... up to N, plus N itself."""
    ns = [1 << j for j in range(N.bit_length()) if (1 << j) <= N]
    return ns if ns[-1] == N else ns + [N]


def bon_weights(N: int, n: int) -> torch.Tensor:
    """(N,) weights C(i-1, n-1) / C(N, n) for the i-th lowest-proxy sample, i = 1..N. They sum to 1."""
    if not 1 <= n <= N:
        raise ValueError(f"best-of-n needs 1 <= n <= N, got n={n}, N={N}")
    i = np.arange(1, N + 1)
    # in log space so large N does not overflow; C(i-1, n-1) = 0 for i < n
    log_c = np.full(N, -np.inf)
    ok = i >= n
    log_c[ok] = [math.lgamma(a) - math.lgamma(n) - math.lgamma(a - n + 1) for a in i[ok]]
    log_total = math.lgamma(N + 1) - math.lgamma(n + 1) - math.lgamma(N - n + 1)
    return torch.from_numpy(np.exp(log_c - log_total))


def bon_estimate(proxy: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Expected `values` of the proxy-argmax of a random n-subset, per prompt.

    proxy, values: (P, N). Returns (P,).
    """
    order = torch.sort(proxy, dim=1, stable=True).indices  # ascending
    ranked = torch.gather(values, 1, order)  # (P, N)
    w = bon_weights(proxy.shape[1], n).to(ranked.dtype)  # (N,)
    return ranked @ w


def bon_kl(n: int) -> float:
    return math.log(n) - (n - 1) / n


def run_bon(cfg, policy, sampler, evaluator, reward: Callable, proxy: Callable, gold: Callable,
            prompts: list[list[int]],
            log: Callable[[dict[str, float], int], None], log_samples: Callable[[list[dict], int], None]) -> None:
    eval_metrics, rows = evaluator(policy, sampler)
    log(eval_metrics, 0)
    log_samples(rows, 0)
    print(eval_line(0, eval_metrics), flush=True)

    N = cfg.algo.bon_n
    seed = int(np.random.default_rng([cfg.seed, 2]).integers(2**31))  # independent of the eval draw
    rollout = sampler.generate(prompts, n=N, seed=seed)  # prompt-major: (P*N, T)
    responses = rollout.response_lists()
    # select by the training reward (reward=proxy: the proxy RM; gold: an oracle best-of-n)
    select = reward(rollout.prompts, responses).view(len(prompts), N)  # (P, N)
    proxy_s = proxy(rollout.prompts, responses).view(len(prompts), N)  # (P, N)
    gold_s = gold(rollout.prompts, responses).view(len(prompts), N)  # (P, N)
    for n in bon_ns(N):
        log({
            M.BON_GOLD_REWARD: float(bon_estimate(select, gold_s, n).mean()),
            M.BON_PROXY_REWARD: float(bon_estimate(select, proxy_s, n).mean()),
            M.BON_KL: bon_kl(n),
        }, n)
