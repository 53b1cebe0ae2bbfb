"""dry_run=true: plan + parameter counts + memory estimate, nothing downloaded or trained;
batch arithmetic that fails early. The command-line dry run: tests/e2e/test_dry_run_cli.py."""

from __future__ import annotations

import sys

import pytest
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps.config import ConfigError, validate
from rlhf_sweeps.dry_run import Arch, memory_estimate, param_count
from rlhf_sweeps.plan import make_plan
from tests.conftest import ROOT


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


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
    from transformers import (
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        GPTNeoXForSequenceClassification,
        LlamaConfig,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

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
