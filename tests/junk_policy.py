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

import torch
from omegaconf import OmegaConf

from rlhf_sweeps.models import build_causal_lm
from rlhf_sweeps.world.tokenizer import build_tokenizer
from rlhf_sweeps.world.language import SPECIAL_IDS

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
