"""dry_run=true: plan + parameter counts + memory estimate, nothing downloaded or trained;
batch arithmetic that fails early; the GPU check's CPU smoke."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps.config import ConfigError, validate
from rlhf_sweeps.dry_run import Arch, memory_estimate, param_count
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.world.language import SPECIAL_IDS
from tests.conftest import ROOT, run_launch


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


def test_paper_tldr_dry_run_prints_plan_and_fits_pythia_1b_on_80gb(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = run_launch(["experiment=paper_tldr", "dry_run=true", f"tracking.uri=sqlite:///{db}",
                       f"cache_dir={tmp_path}/cache"])
    out = proc.stdout
    assert "policy_path: cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr" in out  # resolved config
    assert "128 prompts x k=4 = 512 responses per optimizer step" in out
    assert "16 sequences x 32 gradient-accumulation steps" in out
    assert "512 prompt + 53 response = 565 tokens" in out
    assert "1,011,781,632" in out  # Pythia-1B's published parameter count
    assert "6,650,736,640" in out  # the 6.9B gold RM without its LM head, with a scalar head
    assert re.search(r"=> FITS on a 80 GiB GPU", out)
    assert not db.exists() and not (tmp_path / "cache").exists()  # no run, no stage, no download


def test_dry_run_says_when_it_does_not_fit():
    cfg = _compose(["experiment=paper_tldr", "model=pythia-2.8b", "gpu.memory_gb=40"])
    validate(cfg)
    est = memory_estimate(cfg, make_plan(cfg))
    assert not est["fits"]
    cfg = _compose(["experiment=paper_tldr", "model=pythia-2.8b", "gpu.memory_gb=141"])
    assert memory_estimate(cfg, make_plan(cfg))["fits"]


@pytest.mark.parametrize("model,micro,measured_gib", [("pythia-1b", 16, 20.86), ("pythia-2.8b", 16, 57.10)])
def test_estimate_matches_the_peak_measured_on_an_h200(model, micro, measured_gib):
    """bench/gpu_check.sh on an H200 (bench/results/gpu_check_h200.log): 64 sequences of
    512 + 53 tokens, micro-batches of 16, checkpointing, fp32 weights + Adam, bf16
    reference, no reward models. The estimate of that setup is within 1 GiB."""
    cfg = _compose(["experiment=paper_tldr", f"model={model}", "algo.prompts_per_step=16", "algo.k=4",
                    f"algo.micro_batch_size={micro}", "model.proxy_rm_arch=null", "model.gold_rm_arch=null"])
    est = memory_estimate(cfg, make_plan(cfg))
    assert abs(est["trainer"] / 2**30 - measured_gib) < 1.0


def test_offline_plan_counts_pairs():
    cfg = _compose(["experiment=paper_simpo"])
    plan = make_plan(cfg)
    assert (plan.update_batch, plan.micro_batch_size, plan.grad_accum_steps) == (128, 8, 16)
    from rlhf_sweeps.dry_run import describe

    assert "128 pairs per optimizer step" in describe(cfg, plan)


def test_inexact_micro_batch_fails_before_compute_naming_the_key():
    cfg = _compose(["experiment=paper_tldr", "algo.micro_batch_size=24"])
    with pytest.raises(ConfigError, match=r"algo.micro_batch_size.*divisor of 512"):
        make_plan(cfg)
    assert make_plan(_compose([])).grad_accum_steps == 1  # the CPU default: one full-batch update


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
def test_param_formula_matches_the_hugging_face_classes(family):
    from transformers import (GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification, LlamaConfig,
                              LlamaForCausalLM, LlamaForSequenceClassification)

    h, L, i, V = 64, 3, 176, 300
    if family == "gpt_neox":
        conf = GPTNeoXConfig(vocab_size=V, hidden_size=h, num_hidden_layers=L, num_attention_heads=4,
                             intermediate_size=i, tie_word_embeddings=False, num_labels=1)
        lm, rm = GPTNeoXForCausalLM(conf), GPTNeoXForSequenceClassification(conf)
    else:
        conf = LlamaConfig(vocab_size=V, hidden_size=h, num_hidden_layers=L, num_attention_heads=4,
                           num_key_value_heads=4, intermediate_size=i, tie_word_embeddings=False, num_labels=1)
        lm, rm = LlamaForCausalLM(conf), LlamaForSequenceClassification(conf)
    arch = Arch(family, h, L, i, V)
    assert param_count(arch, "lm") == sum(p.numel() for p in lm.parameters())
    assert param_count(arch, "scalar") == sum(p.numel() for p in rm.parameters())


def test_gpu_check_torch_stand_in_has_the_gpt_neox_parameter_count():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    model = gpu_check.TorchNeoX(300, **gpu_check.TOY)
    arch = Arch("gpt_neox", gpu_check.TOY["hidden_size"], gpu_check.TOY["num_hidden_layers"],
                gpu_check.TOY["intermediate_size"], 300)
    assert sum(p.numel() for p in model.parameters()) == param_count(arch, "lm")


def test_gpu_check_cpu_only_smoke(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-only"], cwd=ROOT,
                          env={"PATH": f"{ROOT}/.venv/bin:/usr/bin:/bin", "OUT": str(tmp_path),
                               "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "status: OK" in proc.stdout
    import json

    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["update_toy"]["update_tokens_per_s"] > 0 and torch.isfinite(torch.tensor(res["update_toy"]["loss"]))
    # the reason fp32 master weights are kept: lr=1e-7 moves fp32 weights, barely any bf16 one
    assert res["numerics"]["changed_by_lr1e-7_float32"] > 0.5 > 0.05 > res["numerics"]["changed_by_lr1e-7_bfloat16"]


@pytest.mark.parametrize("reg", [("kl", "k1", "reward"), ("entropy", "exact", "loss"), ("kl", "k3", "loss")])
def test_online_update_is_invariant_to_micro_batching(reg):
    """One update with micro-batches of 2 (x4 accumulation) moves the weights exactly as
    one full batch of 8 does: the plan's micro-batch size changes memory, not math."""
    import copy

    from rlhf_sweeps.algos import CoefController
    from rlhf_sweeps.loops.online import OnlineJob, train_online
    from rlhf_sweeps.algos import response_mask
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
