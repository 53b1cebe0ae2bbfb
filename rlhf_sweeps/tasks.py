"""Tasks: what a job trains on, behind one small interface.

A `TaskBundle` is everything the loops need from a task: the initial policy's
folder, proxy and gold scorers, a fixed held-out prompt set, a train-prompt
stream that is a pure function of (seed, step) (so resume is exact), a
decoder for sample tables, and preference pairs for offline algorithms.
`build_task` picks the task by `task.name`:

* `synthetic`: the embedded world (rlhf_sweeps/world/);
* `tldr`: prompts from a summarization dataset, real SFT policy and proxy / gold
  reward models by hub id or folder (`model.policy_path`, `model.proxy_rm_path`,
  `model.gold_rm_path`);
* `preference`: the same, plus prompt / chosen / rejected pairs for the offline
  algorithms (SimPO, DPO).

A real task is assembled in the order that fails cheapest first: sources
resolved (a missing folder fails), the policy's tokenizer prepared, the dataset
read and checked (missing column, bad row), then the reward models loaded
(a model without a scalar head fails), and last the normalization stage,
which samples from the initial policy once per content and is cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from rlhf_sweeps.config import ConfigError


@dataclass
class TaskBundle:
    policy_dir: Path  # the initial (SFT) policy; also the reference
    proxy: Callable  # (prompts, responses (N, T)) -> (N,) normalized proxy reward
    gold: Callable  # same signature; never part of the training signal
    eval_prompts: list[list[int]]
    train_prompts: Callable[[int, int, int], list[list[int]]]  # (seed, step, n) -> prompts
    decode: Callable[[list[int]], str]
    pairs: Callable[[], list[dict]]  # rows with prompt_ids, chosen_ids, rejected_ids
    meta: dict = field(default_factory=dict)  # what the task's stages measured
    proxy_model: Optional[object] = None  # the proxy RM module, for online SimPO's ranking


def build_task(cfg) -> TaskBundle:
    if cfg.task.name == "synthetic":
        return _synthetic(cfg)
    if cfg.task.name in ("tldr", "preference"):
        return _real(cfg)
    raise ValueError(f"task.name={cfg.task.name!r}: allowed values are synthetic, tldr, preference")


def _synthetic(cfg) -> TaskBundle:
    from rlhf_sweeps import cache
    from rlhf_sweeps.models import load_reward_model
    from rlhf_sweeps.rewards import Normalization, RewardModelScorer
    from rlhf_sweeps.world.gold import GoldScorer
    from rlhf_sweeps.world.synthetic import prepare_world
    from rlhf_sweeps.world.tokenizer import build_tokenizer

    world = prepare_world(cfg)
    tokenizer = build_tokenizer(world.language.params.n_words)
    norm = world.normalization
    device, dtype = _device_and_dtype(cfg)
    rm = load_reward_model(world.proxy_dir, dtype).to(device)
    return TaskBundle(
        policy_dir=world.sft_dir,
        proxy=RewardModelScorer(rm, Normalization(**norm["proxy"])),
        gold=GoldScorer(world.language, Normalization(**norm["gold"]), norm["gold_content_mean"]),
        eval_prompts=world.eval_prompts,
        train_prompts=world.train_prompts,
        decode=lambda ids: tokenizer.decode(ids),
        pairs=lambda: cache.read_jsonl(world.pairs_path, ("prompt_ids", "chosen_ids", "rejected_ids")),
        meta=world.meta,
        proxy_model=rm,
    )


# ------------------------------------------------------------------ real tasks
# Files linked (never copied) from a checkpoint into its prepared folder.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_fingerprint(folder: Path) -> str:
    """Cheap content key of a checkpoint folder: each file's name, size and mtime.

    Hub snapshots live under .../snapshots/<commit>/, so their key also changes
    with the commit; hashing gigabytes of weights per job would not pay.
    """
    import hashlib

    items = sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                   for f in folder.rglob("*") if f.is_file())
    return hashlib.sha256(repr((str(folder.resolve()), items)).encode()).hexdigest()[:16]


def _device_and_dtype(cfg):
    """Where the reward models run (`device`), and their weights' dtype: `model.dtype` on CUDA."""
    import torch

    from rlhf_sweeps.models import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        return device, getattr(torch, cfg.model.dtype)
    return device, torch.float32


def prepare_policy(cfg, source: Path) -> Path:
    """A folder that loads like `source`, with pad != eos written into its config.

    Weights are symlinked; config, generation config and tokenizer are rewritten
    with the pad token (`models.ensure_distinct_pad`) and eos ids, so every
    consumer (the loops via `special_ids`, vLLM, the offline loops) reads the
    same ids from the folder. Cached as a stage keyed by the source's fingerprint.
    """
    import shutil

    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    from rlhf_sweeps import cache
    from rlhf_sweeps.models import ensure_distinct_pad

    trust = cfg.model.trust_remote_code
    spec = {"source": folder_fingerprint(source), "trust_remote_code": trust}

    def build(out: Path) -> dict:
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=trust)
        try:
            tok = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust)
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"model.policy_path: no usable tokenizer in {str(source)!r} ({err}); "
                                    "save the tokenizer next to the model (tokenizer.save_pretrained)") from err
        if tok.eos_token_id is None:
            raise ConfigError(f"model.policy_path: the tokenizer of {str(source)!r} has no eos token; responses "
                             "could never end. Set tokenizer.eos_token and save it again.")
        if len(tok) > config.vocab_size:
            raise ConfigError(f"model.policy_path: tokenizer has {len(tok)} tokens but the model only "
                             f"{config.vocab_size} embedding rows; they do not belong together")
        try:
            pad = ensure_distinct_pad(tok, config.vocab_size, "model.policy_path")
        except ValueError as err:
            raise ConfigError(str(err)) from err
        config.pad_token_id, config.eos_token_id = pad, tok.eos_token_id
        for f in source.iterdir():
            if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name.endswith(".index.json")):
                (out / f.name).symlink_to(f.resolve())
            elif f.suffix == ".py":  # remote code (trust_remote_code)
                shutil.copy(f, out / f.name)
        config.save_pretrained(out)
        tok.save_pretrained(out)
        try:
            gen = GenerationConfig.from_pretrained(str(source))
        except OSError:
            gen = GenerationConfig()
        gen.pad_token_id, gen.eos_token_id = pad, tok.eos_token_id
        gen.save_pretrained(out)
        return {"source": str(source), "pad_token_id": pad, "eos_token_id": tok.eos_token_id,
                "vocab_size": config.vocab_size, "tokenizer_size": len(tok)}

    return cache.ensure_stage(cfg.cache_dir, "policy", spec, build)


def resolve_checkpoint(spec: str, what: str) -> Path:
    """`models.resolve_checkpoint`, a failure reported as a ConfigError naming the key."""
    from rlhf_sweeps.models import resolve_checkpoint as resolve

    try:
        return resolve(spec, what)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from err


def load_scorer(spec_path: str, what: str, cfg, policy_tok, device, dtype):
    """(TextRewardScorer without normalization, fingerprint) for a reward model by id or folder."""
    from transformers import AutoTokenizer

    from rlhf_sweeps.models import load_reward_model
    from rlhf_sweeps.rewards import TextRewardScorer

    folder = resolve_checkpoint(spec_path, what)
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=cfg.model.trust_remote_code)
    except Exception as err:  # noqa: BLE001
        raise ConfigError(f"{what}: no usable tokenizer in {str(folder)!r} ({err}); a reward model may "
                          "use its own tokenizer, but it must be saved next to it") from err
    try:  # no scalar head, no room for a pad token: the config points at the wrong model
        rm = load_reward_model(folder, dtype, trust_remote_code=cfg.model.trust_remote_code)
        scorer = TextRewardScorer(rm.to(device), tok, policy_tok)
    except ValueError as err:
        raise ConfigError(f"{what}={spec_path!r}: {err}") from err
    return scorer, folder_fingerprint(folder)


def _real(cfg) -> TaskBundle:
    import json

    import torch
    from transformers import AutoTokenizer

    from rlhf_sweeps import cache, data
    from rlhf_sweeps.models import load_causal_lm
    from rlhf_sweeps.rewards import Normalization, fit_normalization, pearson
    from rlhf_sweeps.rollout.base import Sampling
    from rlhf_sweeps.rollout.hf import HFSampler

    task, m = cfg.task, cfg.model
    # 1. sources and the policy's tokenizer (cheap: no weights are read)
    policy_src = resolve_checkpoint(m.policy_path, "model.policy_path")
    policy_dir = prepare_policy(cfg, policy_src)
    tok = AutoTokenizer.from_pretrained(str(policy_dir), trust_remote_code=m.trust_remote_code)
    eos_id = tok.eos_token_id
    max_pos = json.loads((policy_dir / "config.json").read_text()).get("max_position_embeddings")
    if max_pos and task.max_prompt_tokens + cfg.rollout.max_new_tokens > max_pos:
        raise ConfigError(f"task.max_prompt_tokens={task.max_prompt_tokens} + rollout.max_new_tokens="
                         f"{cfg.rollout.max_new_tokens} exceeds the policy's {max_pos} positions; lower one")

    # 2. data, checked before any weights load
    pairs = None
    if task.name == "preference":
        pairs = data.load_pairs(task, task.train_split, tok, eos_id, task.max_train_rows)
        unique = {tuple(r["prompt_ids"]): None for r in pairs.rows}
        train = data.PromptSet([list(p) for p in unique], pairs.n_rows, pairs.n_dropped)
    else:
        train = data.load_prompts(task, task.train_split, tok, task.max_train_rows)
    evals = data.load_prompts(task, task.eval_split, tok)
    eval_prompts = [evals.ids[i] for i in data.fixed_subset(len(evals.ids), task.n_eval_prompts, task.eval_seed)]

    # 3. reward models (each with its own tokenizer; a non-scalar head fails here)
    device, dtype = _device_and_dtype(cfg)
    proxy, proxy_key = load_scorer(m.proxy_rm_path, "model.proxy_rm_path", cfg, tok, device, dtype)
    gold, gold_key = load_scorer(m.gold_rm_path, "model.gold_rm_path", cfg, tok, device, dtype)

    # 4. normalization on the initial policy's own samples, once per content
    n_norm = min(task.proxy.n_norm_prompts, len(train.ids))
    norm_prompts = [train.ids[i] for i in data.fixed_subset(len(train.ids), n_norm, task.proxy.seed)]
    ro = cfg.rollout
    norm_spec = {"policy": folder_fingerprint(policy_src), "proxy": proxy_key, "gold": gold_key,
                 "prompts": data.ids_digest(norm_prompts), "temperature": ro.temperature, "top_p": ro.top_p,
                 "max_new_tokens": ro.max_new_tokens, "seed": task.proxy.seed}

    def build_norm(out: Path) -> dict:
        policy = load_causal_lm(policy_dir, dtype, trust_remote_code=m.trust_remote_code).to(device)
        sampler = HFSampler(policy, Sampling.of(ro), batch_size=64)
        rollout = sampler.generate(norm_prompts, n=1, seed=task.proxy.seed + 1)
        responses = rollout.response_lists()
        proxy_raw = proxy.raw(rollout.prompts, responses)
        gold_raw = gold.raw(rollout.prompts, responses)
        # proxy: centered only (its scale is the recipes' unit); gold: mean 0, variance 1
        norm = {"proxy": {"mean": float(proxy_raw.mean()), "std": 1.0},
                "gold": fit_normalization(gold_raw).__dict__}
        (out / "normalization.json").write_text(json.dumps(norm, indent=2))
        ended = [bool(r) and r[-1] == eos_id for r in responses]
        return {"normalization": norm, "n_samples": len(responses),
                "proxy_raw_std": float(proxy_raw.std()),
                "pearson_proxy_gold_on_sft_samples": pearson(proxy_raw, gold_raw),
                "sft_eos_rate": float(np.mean(ended)),
                "sft_mean_response_tokens": float(np.mean([len(r) for r in responses]))}

    with torch.no_grad():
        norm_dir = cache.ensure_stage(cfg.cache_dir, "norm", norm_spec, build_norm)
    norm = json.loads((norm_dir / "normalization.json").read_text())
    proxy.norm, gold.norm = Normalization(**norm["proxy"]), Normalization(**norm["gold"])

    def train_prompts(seed: int, step: int, n: int) -> list[list[int]]:
        return [train.ids[i] for i in data.epoch_stream(len(train.ids), seed, step, n)]

    def get_pairs() -> list[dict]:
        if pairs is None:
            raise ConfigError(f"task={task.name} has no preference pairs; algo={cfg.algo.name} needs "
                             "task=preference (prompt / chosen / rejected columns)")
        return pairs.rows

    meta = {
        "sources": {"policy": str(policy_src), "proxy_rm": m.proxy_rm_path, "gold_rm": m.gold_rm_path,
                    "dataset": task.dataset},
        "data": {"train_rows": train.n_rows, "train_prompts": len(train.ids), "train_too_long": train.n_too_long,
                 "eval_rows": evals.n_rows, "eval_too_long": evals.n_too_long, "eval_prompts": len(eval_prompts),
                 **({"pairs": len(pairs.rows), "pairs_dropped": pairs.n_dropped} if pairs else {})},
        "policy": cache.stage_meta(policy_dir),
        "norm": {k: v for k, v in cache.stage_meta(norm_dir).items() if k != "spec"},
    }
    return TaskBundle(
        policy_dir=policy_dir,
        proxy=proxy,
        gold=gold,
        eval_prompts=eval_prompts,
        train_prompts=train_prompts,
        decode=lambda ids: tok.decode(ids, skip_special_tokens=False),
        pairs=get_pairs,
        meta=meta,
        proxy_model=proxy.model,
    )
