"""Samplers: HF `generate` (`hf.py`) and vLLM (`vllm.py`, imported lazily)."""

from rlhf_sweeps.rollout.base import Rollout, Sampler

__all__ = ["Rollout", "Sampler", "make_sampler"]


def make_sampler(rollout_cfg, model, model_dir=None):
    """The sampler named by `rollout.name`. vLLM is imported only when asked for."""
    if rollout_cfg.name == "hf":
        from rlhf_sweeps.rollout.hf import HFSampler

        return HFSampler(model, rollout_cfg)
    if rollout_cfg.name == "vllm":
        from rlhf_sweeps.rollout.vllm import VLLMSampler

        return VLLMSampler(model, rollout_cfg, model_dir=model_dir)
    raise ValueError(f"rollout.name={rollout_cfg.name!r}: allowed values are hf, vllm")
