"""Building, loading and running the Hugging Face models.

The embedded world uses real HF classes (`LlamaForCausalLM`,
`LlamaForSequenceClassification`) built from config, so the same code
paths load a Pythia checkpoint by name or folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from rlhf_sweeps.world.language import BOS_ID, EOS_ID, PAD_ID


def llama_config(model_cfg, vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        head_dim=model_cfg.head_dim,
        max_position_embeddings=model_cfg.max_position_embeddings,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,  # pad != eos, or classification heads pool the wrong token
        tie_word_embeddings=False,
    )


def build_causal_lm(model_cfg, vocab_size: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(model_cfg, vocab_size)).float()


def _check_folder(path: str | Path, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"{what}: model folder {str(p)!r} does not exist. Point the config at a folder "
            "written by save_pretrained (or a hub id on a machine with hub access)."
        )


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    _check_folder(path, "policy")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    _check_folder(path, "reward model")
    model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
    if model.config.num_labels != 1:
        raise ValueError(
            f"reward model {str(path)!r} has num_labels={model.config.num_labels}; a reward model "
            "needs a scalar head (AutoModelForSequenceClassification with num_labels=1)."
        )
    return model


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class SequenceBatch:
    """Prompt (left-padded) + response (right-padded) as one model input."""

    input_ids: torch.Tensor  # (B, P+T)
    attention_mask: torch.Tensor  # (B, P+T)
    position_ids: torch.Tensor  # (B, P+T)
    prompt_len: int  # P
    response_mask: torch.Tensor  # (B, T) bool, True up to and including the first <eos>


def left_pad(seqs: list[list[int]], pad_id: int = PAD_ID) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int = PAD_ID, width: int | None = None):
    width = width or max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:width]
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def make_sequence_batch(prompts: list[list[int]], responses: torch.Tensor, eos_id: int = EOS_ID) -> SequenceBatch:
    from rlhf_sweeps.algos.ops import response_mask

    prompt_ids, prompt_mask = left_pad(prompts)
    resp_mask = response_mask(responses, eos_id)  # (B, T)
    input_ids = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, resp_mask.long()], dim=1)
    # With left padding, positions must count real tokens only.
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return SequenceBatch(input_ids, attention_mask, position_ids, prompt_ids.shape[1], resp_mask)


def response_logits(model: PreTrainedModel, batch: SequenceBatch) -> torch.Tensor:
    """Logits that predict each response token: (B, T, V), in float32."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    P = batch.prompt_len
    return out.logits[:, P - 1 : -1].float()


def trim_response(row: list[int], eos_id: int = EOS_ID) -> list[int]:
    """Response token ids up to and including the first <eos>, padding dropped."""
    out = []
    for tok in row:
        if tok == PAD_ID and eos_id != PAD_ID:
            break
        out.append(tok)
        if tok == eos_id:
            break
    return out


def chain_sequences(prompts: list[list[int]], responses: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `<bos> prompt <sep> response [<eos>]` for LM/RM training and scoring."""
    return right_pad([p + r for p, r in zip(prompts, responses)])


__all__ = [
    "BOS_ID",
    "SequenceBatch",
    "build_causal_lm",
    "chain_sequences",
    "count_params",
    "left_pad",
    "load_causal_lm",
    "load_reward_model",
    "make_sequence_batch",
    "response_logits",
    "right_pad",
    "trim_response",
]
