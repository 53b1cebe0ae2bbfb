"""A tiny Llama policy that samples chosen special tokens often, for scoring tests.

A random-init tiny model samples `<pad>` only ~1/|V| of the time, too rarely to
test how a sampled special token is scored. This one is a real
LlamaForCausalLM (so HF `generate` and vLLM load and sample it alike) whose
weights make the listed tokens likely at every position: coordinate 0 of the
residual stream is a large constant (the embedding sets it; no attention or
MLP output writes it), so after the final RMSNorm it is ~sqrt(hidden_size)
everywhere, and the unembedding rows of the listed tokens read it with weight
`boost / sqrt(hidden_size)`: their logits are ~`boost`, every other ~0.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from rlhf_sweeps.models import build_causal_lm
from rlhf_sweeps.rewards import fit_normalization
from rlhf_sweeps.world.gold import GoldScorer
from rlhf_sweeps.world.language import BOS_ID, EOS_ID, PAD_ID, SEP_ID, SPECIAL_IDS
from rlhf_sweeps.world.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parent.parent


def save_junk_policy(folder: Path, n_words: int, vocab: int, tokens: list[int], boost: float = 4.0,
                     seed: int = 0) -> torch.nn.Module:
    model = build_causal_lm(OmegaConf.load(ROOT / "conf/model/tiny.yaml"), vocab, seed, **SPECIAL_IDS)
    hidden = model.config.hidden_size
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 50.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0].zero_()
            layer.mlp.down_proj.weight[0].zero_()
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tokens, 0] = boost / math.sqrt(hidden)
    model.save_pretrained(folder)
    build_tokenizer(n_words).save_pretrained(folder)
    return model


# ------------------------------------------------------------------ the check both samplers pass
JUNK = (PAD_ID, BOS_ID, SEP_ID)
MAX_NEW = 12
N_PROMPTS = 48


def sft_normalized_gold(language) -> GoldScorer:
    """Gold normalized to mean 0, std 1 on the chain's own responses (an ideal SFT policy)."""
    rng = np.random.default_rng(0)
    prompts = language.sample_prompts(rng, 2000)
    responses = [language.sample_response(rng, p) for p in prompts]
    content, fluency = language.gold_parts(prompts, responses)
    return GoldScorer(language, fit_normalization(torch.from_numpy(content + fluency)), float(content.mean()))


def eval_prompts(language) -> list[list[int]]:
    return language.sample_prompts(np.random.default_rng(1), N_PROMPTS)


def check_special_tokens_score_below_sft_mean(rollout, gold) -> None:
    """Every response that begins with a sampled <pad>/<bos>/<sep> scores below the SFT
    mean (0), and so do, on average, those that contain one; a response ends at its
    first <eos> or at the length limit, never at a sampled special token."""
    rows = rollout.response_lists()
    g = gold(rollout.prompts, rows)
    for tok in JUNK:
        first = [i for i, r in enumerate(rows) if r and r[0] == tok]
        inside = [i for i, r in enumerate(rows) if tok in r[1:]]
        assert len(first) >= 3 and len(inside) >= 3, f"token {tok} too rare to test: enlarge the batch"
        assert float(g[first].max()) < 0, f"a response starting with sampled token {tok} scored above the SFT mean"
        assert float(g[inside].mean()) < 0
    for row, m in zip(rollout.responses.tolist(), rollout.mask):
        assert int(m.sum()) == (row.index(EOS_ID) + 1 if EOS_ID in row else MAX_NEW)
