"""Building, loading and running the Hugging Face models.

The embedded world uses real HF classes (`LlamaForCausalLM`,
`LlamaForSequenceClassification`) built from config, so the same code
paths load a Pythia checkpoint by name or folder.

Special token ids travel with the model: `special_ids(model)` reads pad and
eos from `model.config` (the embedded world's Llama has pad=0, eos=2; a
prepared Pythia policy has eos=0 "<|endoftext|>" and pad="[PAD]"). Every
helper that pads or masks takes them as arguments, and a new model gets them
from its caller (the embedded world passes its own): nothing here knows a
particular tokenizer.
"""

from __future__ import annotations

import copy
import functools
import types
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


def llama_config(model_cfg, vocab_size: int, *, bos_id: int, eos_id: int, pad_id: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=model_cfg.hidden_size,
        intermediate_size=model_cfg.intermediate_size,
        num_hidden_layers=model_cfg.num_layers,
        num_attention_heads=model_cfg.num_heads,
        num_key_value_heads=model_cfg.num_heads,
        head_dim=model_cfg.head_dim,
        max_position_embeddings=model_cfg.max_position_embeddings,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,  # pad != eos, or classification heads pool the wrong token
        tie_word_embeddings=False,
    )


def build_causal_lm(model_cfg, vocab_size: int, seed: int, **special: int) -> LlamaForCausalLM:
    """A freshly initialized Llama; `special` is bos_id, eos_id and pad_id (see `llama_config`)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(model_cfg, vocab_size, **special)).float()


def _check_folder(path: str | Path, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"{what}: model folder {str(p)!r} does not exist. Point the config at a folder "
            "written by save_pretrained (or a hub id on a machine with hub access)."
        )


# Files a checkpoint needs: config, weights, tokenizer, remote code. Only one weight
# format is fetched (safetensors when the repo has it), not every format a repo holds.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py", "*.tiktoken"]


def resolve_checkpoint(spec: str, what: str) -> Path:
    """A local folder for `spec`: the folder itself, or the hub snapshot of 'org/name[@rev]'.

    Hub files land in the Hugging Face cache (HF_HOME), so sweep jobs share one
    download; with HF_HUB_OFFLINE=1 a cached snapshot is used without network.
    """
    from rlhf_sweeps.config import is_hub_id, split_revision

    local = Path(spec).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"{what}: {str(local)!r} has no config.json; point it at a folder "
                                    "written by save_pretrained")
        return local
    if not is_hub_id(spec):
        raise FileNotFoundError(f"{what}: model folder {spec!r} does not exist, and it is not a hub id "
                                "(org/name[@revision]). Point it at a folder written by save_pretrained.")
    from huggingface_hub import snapshot_download

    name, revision = split_revision(spec)
    try:
        folder = Path(snapshot_download(name, revision=revision, allow_patterns=_HUB_PATTERNS))
        if not any(folder.glob("*.safetensors")):  # an older repo with .bin weights only
            folder = Path(snapshot_download(name, revision=revision, allow_patterns=_HUB_PATTERNS + ["*.bin"]))
    except Exception as err:  # noqa: BLE001 - offline, gated, misspelled: one clear message
        raise FileNotFoundError(
            f"{what}: {spec!r} is not a local folder and could not be fetched from the hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Check the name and "
            "revision, log in for gated models, or download it on a machine with network "
            "(`hf download NAME`) and pass the folder."
        ) from err
    return folder


def load_causal_lm(path: str | Path, dtype: torch.dtype = torch.float32,
                   trust_remote_code: bool = False) -> PreTrainedModel:
    _check_folder(path, "policy")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code)


def load_reward_model(path: str | Path, dtype: torch.dtype = torch.float32,
                      trust_remote_code: bool = False) -> PreTrainedModel:
    """A sequence-classification model with a trained scalar head, or a clear error."""
    _check_folder(path, "reward model")
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(path), dtype=dtype, trust_remote_code=trust_remote_code, output_loading_info=True)
    if model.config.num_labels != 1:
        raise ValueError(
            f"reward model {str(path)!r} has num_labels={model.config.num_labels}; a reward model "
            "needs a scalar head (AutoModelForSequenceClassification with num_labels=1)."
        )
    # A causal-LM folder saved with num_labels=1 would load with a freshly initialized
    # head: random rewards. Refuse rather than optimize noise.
    head = [k for k in info.get("missing_keys", ()) if k.split(".")[0] in ("score", "classifier", "scalar_head")]
    if head:
        raise ValueError(
            f"reward model {str(path)!r} has no trained scalar head (missing weights: {sorted(head)}); "
            "it looks like a language model, not a reward model. Point the config at a checkpoint "
            "saved from AutoModelForSequenceClassification with num_labels=1."
        )
    return model


def resolve_device(spec: str = "auto") -> torch.device:
    """The config's `device`: auto = CUDA when this torch sees a GPU, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def autocast_forward(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """Run every forward of `model` (training passes, no-grad passes, `generate`) under autocast.

    The weights keep their dtype (the policy's stay fp32: one Adam step at lr 1e-7
    changes almost no bf16 weight, bench/gpu_check.py); matmuls run in `dtype`. As
    accelerate's mixed precision does, the instance's `forward` is replaced, here by a
    method bound to the model, so `copy.deepcopy(model)` gets one bound to the copy.
    """
    forward = type(model).forward

    @functools.wraps(forward)  # keeps the signature, which `generate` inspects
    def forward_in_autocast(self, *args, **kwargs):
        with torch.autocast(self.device.type, dtype=dtype):
            return forward(self, *args, **kwargs)

    model.forward = types.MethodType(forward_in_autocast, model)
    return model


def prepare_for_training(policy: PreTrainedModel, device: torch.device, dtype: str = "float32",
                         gradient_checkpointing: bool = False) -> tuple[PreTrainedModel, PreTrainedModel]:
    """(policy, reference) on `device`; the reference is a frozen copy of the policy as loaded.

    On CUDA only, so that the CPU path stays plain fp32, bit for bit: `dtype` bfloat16
    runs both models' forwards under bf16 autocast over fp32 weights (the reference stays
    fp32 too, so the two compute the same function and the KL starts at exactly 0), and
    `gradient_checkpointing` recomputes the policy's activations in the backward pass.
    """
    policy = policy.to(device)
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    if device.type == "cuda":
        if dtype != "float32":
            for model in (policy, ref):
                autocast_forward(model, getattr(torch, dtype))
        if gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # HF checkpoints only in training mode (from_pretrained returns eval mode). The
            # Llama / Pythia configs used here have dropout 0, so nothing else changes.
            policy.train()
    return policy, ref


def special_ids(model: PreTrainedModel) -> tuple[int, int]:
    """(pad_id, eos_id) from the model's config."""
    pad = getattr(model.config, "pad_token_id", None)
    eos = getattr(model.config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0]  # several stop ids: the first is the one responses end with
    if pad is None or eos is None:
        missing = " and ".join(k for k, v in (("pad_token_id", pad), ("eos_token_id", eos)) if v is None)
        raise ValueError(f"the policy's config has no {missing}: responses are padded and cut by them. "
                         "Save the checkpoint with both set (config.pad_token_id, config.eos_token_id), "
                         "pad distinct from eos.")
    return int(pad), int(eos)


def ensure_distinct_pad(tokenizer, vocab_size: int, what: str) -> int:
    """Give `tokenizer` a pad token distinct from eos; return its id.

    Pythia's tokenizer has no pad (or pad = eos). Sequence-classification heads
    pool at the last non-pad token and responses end in eos, so pad must differ
    from eos (docs/science.md §3, "Details that silently change the numbers"). As the TL;DR RLHF recipes do, "[PAD]" is
    added; it must land inside the model's embedding (Pythia's 50304 rows leave room
    above the tokenizer's 50277), so the model is never resized.
    """
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return int(tokenizer.pad_token_id)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    pad = int(tokenizer.pad_token_id)
    if pad >= vocab_size:
        raise ValueError(
            f"{what}: the tokenizer has no pad token distinct from eos, and adding '[PAD]' gives id {pad}, "
            f"outside the model's {vocab_size}-row embedding. Save the checkpoint with a pad token "
            "(tokenizer.pad_token = ...; model.config.pad_token_id = ...) that differs from eos."
        )
    return pad


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

    def select(self, rows: slice | torch.Tensor) -> "SequenceBatch":
        """The rows of a micro-batch (a slice or index tensor), cut to its own longest response.

        Columns past the longest response of these rows are padding for all of them, and the
        model is causal: dropping them changes no logit of a real token, only the work.
        """
        mask = self.response_mask[rows]
        width = self.prompt_len + int(mask.sum(1).max()) if len(mask) else self.input_ids.shape[1]
        return SequenceBatch(self.input_ids[rows, :width], self.attention_mask[rows, :width],
                             self.position_ids[rows, :width], self.prompt_len, mask[:, : width - self.prompt_len])

    def to(self, device: torch.device) -> "SequenceBatch":
        """The batch on `device` (it is built on the CPU; on the CPU this copies nothing)."""
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device),
                             self.position_ids.to(device), self.prompt_len, self.response_mask.to(device))


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def right_pad(seqs: list[list[int]], pad_id: int, width: int | None = None):
    width = width or max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:width]
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def make_sequence_batch(prompts: list[list[int]], responses: torch.Tensor, eos_id: int,
                        pad_id: int) -> SequenceBatch:
    from rlhf_sweeps.algos.ops import response_mask

    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
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


def chain_sequences(prompts: list[list[int]], responses: list[list[int]], pad_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each prompt followed by its response, right-padded, for LM/RM training and scoring."""
    return right_pad([p + r for p, r in zip(prompts, responses)], pad_id)


__all__ = [
    "SequenceBatch",
    "build_causal_lm",
    "chain_sequences",
    "count_params",
    "left_pad",
    "load_causal_lm",
    "load_reward_model",
    "make_sequence_batch",
    "ensure_distinct_pad",
    "autocast_forward",
    "prepare_for_training",
    "resolve_checkpoint",
    "resolve_device",
    "response_logits",
    "right_pad",
    "special_ids",
]
