"""The real online loop: each regularizer pushes the way it must, and micro-batching
changes memory, not math.

A few steps of `train_online` (RLOO, HF sampling) on a tiny policy, trained on a
fixed token-value reward that by itself drives the policy away from its
reference and toward low entropy. Against `regularizer=none` on the same
seeds:

- the entropy bonus keeps the policy's entropy higher;
- a KL penalty in the reward (k1) keeps KL to the reference lower;
- a KL penalty in the loss (k2) does too.

A flipped sign in either placement (`regularized_reward`, `regularizer_loss`)
makes one of these fail. Effects are compared on the mean of the last steps'
train statistics over two seeds, with coefficients large enough that the
effect is many times the seed-to-seed spread (the loss placement's coefficient
is ~|y| times the reward's: it is a token mean, docs/science.md §3).

One update with accumulated micro-batches moves the weights exactly as one full
batch does, for each regularizer and placement.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import metrics as M
from rlhf_sweeps.loops.online import OnlineJob, make_coef_controller, train_online
from rlhf_sweeps.models import build_causal_lm
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.rollout.base import Sampling
from rlhf_sweeps.rollout.hf import HFSampler
from rlhf_sweeps.world.language import SPECIAL_IDS
from tests.conftest import ROOT

VOCAB, STEPS, LAST = 60, 30, 10
SEEDS = (0, 1)


def _cfg(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=[
            "model=tiny", "rollout=hf", "rollout.max_new_tokens=8", "algo.prompts_per_step=8", "algo.k=4",
            f"steps={STEPS}", f"eval_every={STEPS}", f"checkpoint_every={STEPS}", *overrides])


def run(overrides: list[str], seed: int) -> dict[str, float]:
    """Mean train/kl and train/entropy over the last LAST steps of a short online run."""
    cfg = _cfg([*overrides, f"seed={seed}"])
    torch.manual_seed(seed)
    base = build_causal_lm(cfg.model, VOCAB, 0, **SPECIAL_IDS)
    policy, ref = base, copy.deepcopy(base).eval().requires_grad_(False)
    values = torch.from_numpy(np.random.default_rng(7).normal(size=VOCAB)).float()  # a fixed token-value reward

    def reward(prompts, responses):
        return torch.tensor([float(values[r].mean()) * 3 if r else 0.0 for r in responses])

    rng = np.random.default_rng(seed)
    prompts = [[1] + rng.integers(4, VOCAB, 3).tolist() + [3] for _ in range(cfg.algo.prompts_per_step)]
    logged: dict[int, dict] = {}
    job = OnlineJob(cfg=cfg, plan=make_plan(cfg), policy=policy, ref=ref, optimizer=torch.optim.Adam(policy.parameters(), lr=3e-3),
                    sampler=HFSampler(policy, Sampling.of(cfg.rollout)), reward=reward,
                    evaluator=lambda pol, smp: ({}, []), train_prompts=lambda step: prompts,
                    log=lambda values, step: logged.setdefault(step, {}).update(values),
                    log_samples=lambda rows, step: None, save_checkpoint=lambda step, extra: None,
                    rss_gb=lambda: 0.0, coef=make_coef_controller(cfg))
    train_online(job, 0)
    tail = [logged[s] for s in range(STEPS - LAST, STEPS)]
    return {key: float(np.mean([m[key] for m in tail])) for key in (M.TRAIN_KL, M.TRAIN_ENTROPY)}


def mean_over_seeds(overrides):
    runs = [run(overrides, s) for s in SEEDS]
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}


@pytest.fixture(scope="module")
def unregularized():
    return mean_over_seeds(["regularizer=none"])


def test_the_reward_alone_moves_the_policy(unregularized):
    # otherwise the comparisons below would test nothing
    assert unregularized[M.TRAIN_KL] > 1.0


def test_entropy_bonus_raises_entropy(unregularized):
    bonus = mean_over_seeds(["regularizer=entropy", "regularizer.estimator=sampled", "temperature=0.5"])
    assert bonus[M.TRAIN_ENTROPY] > unregularized[M.TRAIN_ENTROPY] + 1.0


def test_kl_in_the_reward_holds_kl_down(unregularized):
    kl = mean_over_seeds(["regularizer=kl", "regularizer.estimator=k1", "regularizer.placement=reward",
                          "temperature=0.5"])
    assert kl[M.TRAIN_KL] < 0.5 * unregularized[M.TRAIN_KL]


def test_kl_in_the_loss_holds_kl_down(unregularized):
    kl = mean_over_seeds(["regularizer=kl", "regularizer.estimator=k2", "regularizer.placement=loss",
                          "temperature=4.0"])
    assert kl[M.TRAIN_KL] < 0.5 * unregularized[M.TRAIN_KL]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("reg", [("kl", "k1", "reward"), ("entropy", "exact", "loss"), ("kl", "k3", "loss")])
def test_online_update_is_invariant_to_micro_batching(reg):
    """One update with micro-batches of 2 (x4 accumulation) moves the weights exactly as
    one full batch of 8 does: the plan's micro-batch size changes memory, not math."""
    import copy

    from rlhf_sweeps.algos import CoefController, response_mask
    from rlhf_sweeps.loops.online import OnlineJob, train_online
    from rlhf_sweeps.models import build_causal_lm
    from rlhf_sweeps.rollout.base import Rollout

    torch.manual_seed(0)
    vocab, N, T = 40, 8, 6
    prompts = [[1] + torch.randint(4, vocab, (n,)).tolist() + [3] for n in (2, 3, 4, 3)]  # <bos> .. <sep>
    responses = torch.randint(4, vocab, (N, T))
    responses[0, 2], responses[3, 4] = 2, 2  # two finished responses (<eos>=2), the rest truncated
    responses[0, 3:], responses[3, 5:] = 0, 0
    scores = torch.randn(N)
    base = build_causal_lm(_compose(["model=tiny"]).model, vocab, 0, **SPECIAL_IDS)

    class Sampler:
        def generate(self, p, n, seed):
            return Rollout([q for q in p for _ in range(n)], responses.clone(), None, response_mask(responses, 2))

        def sync_weights(self, model):
            pass

    def after_one_step(micro):
        name, est, place = reg
        cfg = _compose([f"regularizer={name}", f"regularizer.estimator={est}", f"regularizer.placement={place}",
                        "algo.prompts_per_step=4", "algo.k=2", "steps=1", "eval_every=1", "checkpoint_every=1",
                        "temperature=0.3", "rollout.temperature=0.7", f"algo.micro_batch_size={micro}"])
        policy = copy.deepcopy(base)
        job = OnlineJob(cfg=cfg, plan=make_plan(cfg), policy=policy, ref=copy.deepcopy(base).requires_grad_(False),
                        optimizer=torch.optim.SGD(policy.parameters(), lr=1.0), sampler=Sampler(),
                        reward=lambda p, r: scores, evaluator=lambda pol, smp: ({}, []),
                        train_prompts=lambda step: prompts, log=lambda m, s: logged.append(m),
                        log_samples=lambda rows, s: None, save_checkpoint=lambda s, e: None, rss_gb=lambda: 0.0,
                        coef=CoefController(0.3))
        logged: list = []
        train_online(job, 0)
        loss = next(m["train/loss"] for m in logged if "train/loss" in m)
        return [p.detach() for p in policy.parameters()], loss

    full, loss_full = after_one_step("null")
    accum, loss_accum = after_one_step(2)
    moved = max(float((a - b.detach()).abs().max()) for a, b in zip(full, base.parameters()))
    assert moved > 1e-4  # the step did something
    assert abs(loss_full - loss_accum) < 1e-6
    for a, b in zip(full, accum):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_scaffold_pushes_weights_every_sync_every_steps_and_before_every_eval():
    """`rollout.sync_every=3`: the engine gets the weights after every third update, and an eval
    in between first brings it up to date (never evaluate a stale copy)."""
    from types import SimpleNamespace

    from rlhf_sweeps.loops.common import LoopScaffold

    synced = []
    sampler = SimpleNamespace(sync_weights=lambda policy: synced.append(policy))
    cfg = SimpleNamespace(seed=0, eval_every=100, checkpoint_every=100, rollout=SimpleNamespace(sync_every=3))
    job = SimpleNamespace(cfg=cfg, plan=SimpleNamespace(steps=10), policy="policy", sampler=sampler,
                          evaluator=lambda policy, sampler: ({}, []), log=lambda m, s: None,
                          log_samples=lambda rows, s: None)
    loop = LoopScaffold(job, 0, "test")
    lags = []
    for _ in range(4):
        loop.push_weights()
        lags.append(loop.staleness)
    assert lags == [1, 2, 0, 1] and len(synced) == 1
    loop.evaluate(4)  # one update behind: synced first
    assert loop.staleness == 0 and len(synced) == 2
    loop.evaluate(4)  # up to date: nothing to push
    assert len(synced) == 2
    loop.close()
