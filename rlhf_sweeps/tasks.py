"""Tasks: what a job trains on, behind one small interface.

A `TaskBundle` is everything the loops need from a task: the initial policy's
folder, proxy and gold scorers, a fixed held-out prompt set, a train-prompt
stream that is a pure function of (seed, step) (so resume is exact), a
decoder for sample tables, and preference pairs for offline algorithms.
`build_task` picks the task by `task.name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


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
    raise ValueError(f"task.name={cfg.task.name!r} is not available yet; use task=synthetic")


def _synthetic(cfg) -> TaskBundle:
    from rlhf_sweeps import stages
    from rlhf_sweeps.models import load_reward_model
    from rlhf_sweeps.rewards import GoldScorer, Normalization, RewardModelScorer
    from rlhf_sweeps.world.synthetic import prepare_world
    from rlhf_sweeps.world.tokenizer import build_tokenizer

    world = prepare_world(cfg)
    tokenizer = build_tokenizer(world.language.params.n_words)
    norm = world.normalization
    rm = load_reward_model(world.proxy_dir)
    return TaskBundle(
        policy_dir=world.sft_dir,
        proxy=RewardModelScorer(rm, Normalization(**norm["proxy"])),
        gold=GoldScorer(world.language, Normalization(**norm["gold"])),
        eval_prompts=world.eval_prompts,
        train_prompts=world.train_prompts,
        decode=lambda ids: tokenizer.decode(ids),
        pairs=lambda: stages.read_jsonl(world.pairs_path, ("prompt_ids", "chosen_ids", "rejected_ids")),
        meta=world.meta,
        proxy_model=rm,
    )
