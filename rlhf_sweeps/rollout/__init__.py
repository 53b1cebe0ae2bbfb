"""Samplers: HF `generate` (`hf.py`) and vLLM (`vllm.py`, imported lazily).

`rollout=auto` (the default) picks the engine by measurement, not by habit:
vLLM on a GPU (the paper-scale setting it is built for), and on the CPU only
from the model size at which `bench/rollout.py` measured it ahead of HF
`generate` (bench/RESULTS.md: HF is 1.4-2.8x faster on the ~0.4M-parameter
embedded policy, vLLM 1.04-1.3x faster from ~20M parameters). `rollout=hf`
and `rollout=vllm` force either.
"""

from __future__ import annotations

import importlib.util

from rlhf_sweeps.rollout.base import Rollout, Sampler, Sampling

__all__ = ["Rollout", "Sampler", "Sampling", "choose_engine", "make_sampler"]

# Parameters from which vLLM beat HF generate on this project's 2-core CPU (bench/RESULTS.md).
VLLM_CPU_MIN_PARAMS = 20_000_000


def choose_engine(name: str, n_params: int, on_cuda: bool) -> tuple[str, str]:
    """(engine, why) for `rollout.name`; `auto` decides from the device and the model size."""
    if name != "auto":
        return name, f"rollout={name} was asked for"
    if importlib.util.find_spec("vllm") is None:
        return "hf", "rollout=auto: vLLM is not installed"
    if on_cuda:
        return "vllm", "rollout=auto: a GPU run samples with vLLM"
    if n_params >= VLLM_CPU_MIN_PARAMS:
        return "vllm", (f"rollout=auto: {n_params / 1e6:.1f}M parameters >= {VLLM_CPU_MIN_PARAMS / 1e6:.0f}M, where "
                        "vLLM measured faster than HF generate on the CPU (bench/RESULTS.md)")
    return "hf", (f"rollout=auto: {n_params / 1e6:.2f}M parameters < {VLLM_CPU_MIN_PARAMS / 1e6:.0f}M, where HF "
                  "generate measured faster than vLLM on the CPU (bench/RESULTS.md)")


def make_sampler(engine: str, rollout_cfg, model, model_dir=None):
    """The sampler of `engine` ("hf" or "vllm"). vLLM is imported only when asked for."""
    if engine == "hf":
        from rlhf_sweeps.rollout.hf import HFSampler

        return HFSampler(model, Sampling.of(rollout_cfg))
    if engine == "vllm":
        from rlhf_sweeps.rollout.vllm import VLLMSampler

        return VLLMSampler(model, Sampling.of(rollout_cfg), model_dir=model_dir, dtype=rollout_cfg.dtype,
                           enforce_eager=rollout_cfg.enforce_eager,
                           gpu_memory_utilization=rollout_cfg.gpu_memory_utilization,
                           kv_cache_gb=rollout_cfg.kv_cache_gb)
    raise ValueError(f"rollout engine {engine!r}: allowed values are hf, vllm")
