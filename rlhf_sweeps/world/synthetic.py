"""Assemble the embedded world: language + cached SFT / pairs / proxy stages."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from rlhf_sweeps import cache
from rlhf_sweeps.world import stages
from rlhf_sweeps.config import WorldConfig
from rlhf_sweeps.world.language import SPECIAL_IDS, HiddenLanguage
from rlhf_sweeps.world.tokenizer import build_tokenizer


@dataclass
class World:
    language: HiddenLanguage
    sft_dir: Path
    proxy_dir: Path
    pairs_path: Path
    normalization: dict  # {"proxy": {"mean","std"}, "gold": {...}}
    eval_prompts: list[list[int]]
    meta: dict  # what each stage measured (SFT loss, proxy accuracy, ...)

    def train_prompts(self, seed: int, step: int, n: int) -> list[list[int]]:
        """Prompts of optimizer step `step`: a pure function of (seed, step), so a
        resumed run sees exactly the prompts the uninterrupted run would have."""
        return self.language.sample_prompts(np.random.default_rng([seed, step]), n)


WORLD_MODEL_KEYS = ("hidden_size", "num_layers", "num_heads", "head_dim", "intermediate_size",
                    "max_position_embeddings")


def _plain(node):
    """A config section as plain nested dicts (a stage's spec is hashed as JSON)."""
    if is_dataclass(node):
        node = asdict(node)
    if hasattr(node, "items"):  # a dict, or a composed config section
        return {k: _plain(v) for k, v in node.items()}
    return node


def language_from_cfg(task_cfg) -> HiddenLanguage:
    return HiddenLanguage(WorldConfig(**_plain(task_cfg.world)))


def prepare_world(cfg) -> World:
    """Build (or reuse) every stage the embedded world needs."""
    from rlhf_sweeps.models import build_causal_lm, load_causal_lm, load_reward_model
    from rlhf_sweeps.rollout.base import Sampling
    from rlhf_sweeps.rollout.hf import HFSampler

    task = cfg.task
    language = language_from_cfg(task)
    tokenizer = build_tokenizer(language.params.n_words)
    # Only the sizes the Llama is built from determine the stage (the name is a label;
    # the real-checkpoint keys of ModelConfig do not apply here), so stages cached
    # before those keys existed keep their hash.
    sft_spec = {"world": _plain(task.world), "sft": _plain(task.sft),
                "model": {k: getattr(cfg.model, k) for k in WORLD_MODEL_KEYS}}

    def build_sft(out: Path) -> dict:
        model = build_causal_lm(cfg.model, language.vocab_size, task.sft.seed, **SPECIAL_IDS)
        return stages.train_sft(language, model, task.sft, out, tokenizer)

    sft_dir = cache.ensure_stage(cfg.cache_dir, "sft", sft_spec, build_sft)
    # Stage-building samples always use plain temperature-1 sampling from the SFT policy.
    stage_sampling = Sampling(task.pairs.sample_temperature, 1.0, task.world.max_response_words)
    # scoring 2: gold scores a response exactly as sampled (a sampled <pad> is junk, not
    # the end of the response) and the proxy pools by the attention mask; pairs labeled
    # and proxies normalized under the old rule are not reused.
    pairs_spec = {"sft": sft_spec, "pairs": _plain(task.pairs), "scoring": 2}

    def build_pairs(out: Path) -> dict:
        sampler = HFSampler(load_causal_lm(sft_dir), stage_sampling)
        return stages.sample_pairs(language, sampler, task.pairs, out)

    pairs_dir = cache.ensure_stage(cfg.cache_dir, "pairs", pairs_spec, build_pairs)
    proxy_spec = {"pairs": pairs_spec, "proxy": _plain(task.proxy)}

    def build_proxy(out: Path) -> dict:
        import torch
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(task.proxy.seed)
        rm = AutoModelForSequenceClassification.from_pretrained(str(sft_dir), num_labels=1)
        pairs = cache.read_jsonl(pairs_dir / "pairs.jsonl")
        sampler = HFSampler(load_causal_lm(sft_dir), stage_sampling)
        return stages.train_proxy(language, rm, pairs, task.proxy, sampler, out, tokenizer)

    proxy_dir = cache.ensure_stage(cfg.cache_dir, "proxy", proxy_spec, build_proxy)
    load_reward_model(proxy_dir)  # fail now, not mid-run, if the folder is broken
    eval_prompts = language.sample_prompts(np.random.default_rng(task.eval_seed), task.n_eval_prompts)
    meta = {name: cache.stage_meta(d) for name, d in (("sft", sft_dir), ("pairs", pairs_dir), ("proxy", proxy_dir))}
    return World(
        language=language,
        sft_dir=sft_dir,
        proxy_dir=proxy_dir,
        pairs_path=pairs_dir / "pairs.jsonl",
        normalization=json.loads((proxy_dir / "normalization.json").read_text()),
        eval_prompts=eval_prompts,
        meta={k: {kk: vv for kk, vv in v.items() if kk != "spec"} for k, v in meta.items()},
    )


__all__ = ["World", "prepare_world", "language_from_cfg"]
