"""Pass 1 of the online update reuses the engine's log-probs only when they are the trainer's.

With reuse on, the policy's no-grad forward of pass 1 is skipped; the run must
be the same run (to float rounding: the HF engine's log-probs differ from the
trainer's by ~1e-6 nats). An engine whose log-probs are off is caught by the
per-step check, and the run falls back to recomputing: then it is exactly the
run without reuse.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import metrics as M
from rlhf_sweeps.loops.online import REUSE_TOL, OnlineJob, make_coef_controller, train_online
from rlhf_sweeps.models import build_causal_lm
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.rollout.base import Sampling
from rlhf_sweeps.rollout.hf import HFSampler
from rlhf_sweeps.world.language import SPECIAL_IDS
from tests.conftest import ROOT

VOCAB, STEPS = 60, 4
KEYS = (M.TRAIN_LOSS, M.TRAIN_KL, M.TRAIN_ENTROPY, M.TRAIN_RLHF_REWARD, M.TRAIN_GRAD_NORM)


class OffByOne(HFSampler):
    """An engine whose log-probs are off by 0.01 nats: never exact for the trainer."""

    def generate(self, prompts, n, seed):
        out = super().generate(prompts, n, seed)
        out.logprobs = torch.where(out.mask, out.logprobs + 0.01, out.logprobs)
        return out


def run(reuse: bool, regularizer: str = "kl", sampler_cls=HFSampler, micro: str = "null"):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=[
            "model=tiny", "rollout=hf", "rollout.max_new_tokens=10", "algo.prompts_per_step=8", "algo.k=4",
            f"steps={STEPS}", f"eval_every={STEPS}", f"checkpoint_every={STEPS}", f"regularizer={regularizer}",
            "temperature=0.1", "rollout.temperature=0.8", f"rollout.reuse_logprobs={reuse}",
            f"algo.micro_batch_size={micro}"])
    torch.manual_seed(0)
    policy = build_causal_lm(cfg.model, VOCAB, 0, **SPECIAL_IDS)
    values = torch.from_numpy(np.random.default_rng(7).normal(size=VOCAB)).float()
    prompts = [[1] + np.random.default_rng(i).integers(4, VOCAB, 3).tolist() + [3] for i in range(8)]
    logged: dict[int, dict] = {}
    job = OnlineJob(cfg=cfg, plan=make_plan(cfg), policy=policy, ref=copy.deepcopy(policy).eval().requires_grad_(False),
                    optimizer=torch.optim.Adam(policy.parameters(), lr=3e-3), sampler=sampler_cls(policy, Sampling.of(cfg.rollout)),
                    reward=lambda p, r: torch.tensor([float(values[x].mean()) if x else 0.0 for x in r]),
                    evaluator=lambda pol, smp: ({}, []), train_prompts=lambda step: prompts,
                    log=lambda v, s: logged.setdefault(s, {}).update(v), log_samples=lambda rows, s: None,
                    save_checkpoint=lambda s, e: None, rss_gb=lambda: 0.0, coef=make_coef_controller(cfg))
    train_online(job, 0)
    return logged, [p.detach().clone() for p in policy.parameters()]


def test_reuse_gives_the_same_run_within_the_logged_gap():
    for regularizer in ("kl", "entropy"):
        on, w_on = run(True, regularizer)
        off, w_off = run(False, regularizer)
        gap = max(on[s][M.ROLLOUT_LOGPROB_GAP_MAX] for s in range(STEPS))
        assert gap < REUSE_TOL  # the check ran and passed: reuse was really on
        for s in range(STEPS):
            for key in KEYS:
                assert abs(on[s][key] - off[s][key]) <= 1e-3 * (1 + abs(off[s][key])), (regularizer, s, key)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(w_on, w_off))


def test_an_engine_off_by_more_than_the_tolerance_falls_back_to_recomputing(capsys):
    fell, w_fell = run(True, sampler_cls=OffByOne)
    off, w_off = run(False, sampler_cls=OffByOne)
    assert "recomputing them from now on" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(w_fell, w_off))  # exactly the run without reuse


def test_micro_batches_sorted_and_cut_give_the_full_batch_gradient():
    full, w_full = run(False, micro="null")
    split, w_split = run(False, micro="8")
    for s in range(STEPS):
        assert abs(full[s][M.TRAIN_LOSS] - split[s][M.TRAIN_LOSS]) < 1e-5
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(w_full, w_split))
