"""Offline SimPO / DPO, online SimPO and best-of-n: math and determinism.

- The BoN estimator against brute-force enumeration of every n-subset.
- SimPO and DPO steps on fixed pairs increase the preference margin
  (direction), micro-batching gives the full-batch gradient (invariance), and
  an offline run interrupted after a checkpoint and resumed ends with the very
  same weights as an uninterrupted one (the batch is a function of (seed, step)).
- Through `launch.py`: tests/e2e/test_preference_runs.py.
"""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhf_sweeps.config import ModelConfig
from rlhf_sweeps.loops.bon import bon_estimate, bon_kl, bon_ns, bon_weights
from rlhf_sweeps.loops.preference import (
    PreferenceJob,
    minibatch_indices,
    preference_update,
    train_offline_preference,
)
from rlhf_sweeps.models import build_causal_lm
from rlhf_sweeps.plan import Plan
from rlhf_sweeps.world.language import SPECIAL_IDS

STEPS, EVAL_EVERY = 6, 3  # conf/experiment/smoke.yaml
VOCAB = 24  # ids 0-3 special (pad, bos, eos, sep), as in the embedded world


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on shared cores they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- best-of-n
def brute_force_bon(proxy: list[float], values: list[float], n: int) -> float:
    """Mean over all n-subsets of the value of the subset's proxy-argmax (first index on ties)."""
    picks = [values[max(sub, key=lambda i: (proxy[i], -i))] for sub in itertools.combinations(range(len(proxy)), n)]
    return float(np.mean(picks))


def test_bon_estimator_matches_enumeration():
    gen = torch.Generator().manual_seed(0)
    P, N = 3, 7
    proxy = torch.randn(P, N, generator=gen, dtype=torch.float64)
    gold = torch.randn(P, N, generator=gen, dtype=torch.float64)
    for n in range(1, N + 1):
        assert float(bon_weights(N, n).sum()) == pytest.approx(1.0, abs=1e-12)
        est = bon_estimate(proxy, gold, n)  # (P,)
        for p in range(P):
            assert float(est[p]) == pytest.approx(brute_force_bon(proxy[p].tolist(), gold[p].tolist(), n), abs=1e-10)
    # n = 1 is the plain mean, n = N the proxy-argmax; proxy's own BoN is non-decreasing in n
    assert torch.allclose(bon_estimate(proxy, gold, 1), gold.mean(1))
    assert torch.allclose(bon_estimate(proxy, gold, N), gold.gather(1, proxy.argmax(1, keepdim=True)).squeeze(1))
    own = torch.stack([bon_estimate(proxy, proxy, n) for n in range(1, N + 1)])
    assert bool((own.diff(dim=0) >= -1e-12).all())


def test_bon_schedule_and_kl():
    assert bon_ns(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bon_ns(6) == [1, 2, 4, 6]
    assert bon_ns(1) == [1]
    assert bon_kl(1) == 0.0
    assert bon_kl(4) == pytest.approx(math.log(4) - 0.75)


# --------------------------------------------------------------------------- tiny policy
def tiny_policy(seed: int = 0):
    mc = ModelConfig(name="t", hidden_size=32, num_layers=1, num_heads=1, head_dim=32, intermediate_size=64,
                     max_position_embeddings=32)
    return build_causal_lm(mc, VOCAB, seed, **SPECIAL_IDS)


def random_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        prompt = [1] + rng.integers(4, VOCAB, rng.integers(2, 5)).tolist() + [3]
        # one response ends (<eos> = 2), the other may be truncated: both masks are exercised
        chosen = rng.integers(4, VOCAB, rng.integers(1, 7)).tolist() + [2]
        rejected = rng.integers(4, VOCAB, rng.integers(1, 7)).tolist() + ([2] if rng.random() < 0.5 else [])
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


def algo_cfg(name: str, **kw):
    base = dict(name=name, gamma_beta_ratio=0.5, batch_size=8, grad_clip=1.0, micro_batch_size=None)
    return SimpleNamespace(**{**base, **kw})


def make_job(name: str, policy=None, lr: float = 1e-2, steps: int = 6, **algo_kw) -> PreferenceJob:
    policy = policy or tiny_policy()
    cfg = SimpleNamespace(algo=algo_cfg(name, **algo_kw), temperature=2.0 if name != "dpo" else 0.5, seed=0, steps=steps, eval_every=3, checkpoint_every=3,
                          task=SimpleNamespace(name="test"))
    mb = cfg.algo.micro_batch_size or cfg.algo.batch_size
    plan = Plan(steps=steps, prompts_per_step=0, samples_per_prompt=0, rollout_batch=0, n_evals=0, eval_responses=0,
                tokens_per_step_max=0, update_batch=cfg.algo.batch_size, micro_batch_size=mb,
                grad_accum_steps=-(-cfg.algo.batch_size // mb), max_prompt_tokens=0, max_sequence_tokens=0)
    return PreferenceJob(
        cfg=cfg, plan=plan, policy=policy, ref=copy.deepcopy(policy).eval().requires_grad_(False),
        optimizer=torch.optim.Adam(policy.parameters(), lr=lr),
        sampler=SimpleNamespace(sync_weights=lambda m: None),
        evaluator=lambda policy, sampler: ({}, []),
        log=lambda values, step: None, log_samples=lambda rows, step: None,
        save_checkpoint=lambda step, extra: None, rss_gb=lambda: 0.0, pairs=random_pairs(32),
    )


def split(rows):
    return [r["prompt_ids"] for r in rows], [r["chosen_ids"] for r in rows], [r["rejected_ids"] for r in rows]


@pytest.mark.parametrize("name", ["simpo", "dpo"])
def test_preference_steps_increase_margin(name):
    torch.manual_seed(0)
    job = make_job(name)
    batch = split(job.pairs[:8])
    margins = [float(preference_update(job, *batch, step)[1]["margin"]) for step in range(8)]
    # stats are taken before each update: the margin on the same pairs must grow
    assert margins[-1] > margins[0] + 0.1, margins
    if name == "dpo":
        assert margins[0] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the start


@pytest.mark.parametrize("name", ["simpo", "dpo"])
def test_micro_batches_give_the_full_batch_gradient(name):
    grads, stats = [], []
    for mb in (None, 3):  # 8 pairs as 3 + 3 + 2
        job = make_job(name, lr=0.0, micro_batch_size=mb)
        loss, st, _ = preference_update(job, *split(job.pairs[:8]), 0)
        grads.append(torch.cat([p.grad.flatten() for p in job.policy.parameters()]))
        stats.append({"loss": float(loss), **{k: float(v) for k, v in st.items()}})
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)
    for key in stats[0]:
        assert stats[1][key] == pytest.approx(stats[0][key], rel=1e-5, abs=1e-6), key


def test_minibatches_are_a_pure_function_of_seed_and_step():
    n, b = 10, 3  # 3 batches per epoch, one pair dropped per epoch
    epoch0 = np.concatenate([minibatch_indices(n, b, 0, s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no pair twice within an epoch
    assert np.array_equal(minibatch_indices(n, b, 0, 4), minibatch_indices(n, b, 0, 4))
    assert not np.array_equal(minibatch_indices(n, b, 0, 0), minibatch_indices(n, b, 0, 3))  # new epoch order
    assert not np.array_equal(minibatch_indices(n, b, 0, 0), minibatch_indices(n, b, 1, 0))  # seed matters


def test_offline_resume_is_exact():
    """Stop after the step-3 checkpoint, restore into fresh objects, finish: same weights as straight through."""
    straight = make_job("simpo")
    train_offline_preference(straight, 0)

    saved = {}
    first = make_job("simpo")

    def save(step, extra):
        saved.update(step=step, policy=copy.deepcopy(first.policy.state_dict()),
                     optimizer=copy.deepcopy(first.optimizer.state_dict()))

    class Killed(Exception):
        pass

    def log(values, step):
        if step == 4:
            raise Killed

    first.save_checkpoint, first.log = save, log
    with pytest.raises(Killed):
        train_offline_preference(first, 0)
    assert saved["step"] == 3

    resumed = make_job("simpo", policy=tiny_policy(seed=1))  # different init: the checkpoint must win
    resumed.policy.load_state_dict(saved["policy"])
    resumed.optimizer.load_state_dict(saved["optimizer"])
    train_offline_preference(resumed, saved["step"])
    for (k, a), b in zip(straight.policy.state_dict().items(), resumed.policy.state_dict().values()):
        assert torch.equal(a, b), k
