"""Tiny stand-ins for the hub checkpoints and datasets of the real-scale presets.

Everything is built locally and saved like a hub download, so the real
loading code (paths, tokenizers, `from_pretrained`, `load_dataset`) runs with
no network:

* policy: GPTNeoXForCausalLM with a byte-level BPE tokenizer whose eos is
  "<|endoftext|>" (id 0) and which has no pad token, like Pythia's;
* proxy RM: GPTNeoXForSequenceClassification (num_labels=1) with the policy's
  tokenizer;
* gold RM: the same class with a *different* tokenizer (other merges, other
  ids, eos "</s>", pad "<pad>"), so scoring must decode and re-tokenize;
* datasets in the TL;DR schema (subreddit / title / post / summary) as JSONL
  files, and in the preference schema (prompt / chosen / rejected) as a
  `DatasetDict.save_to_disk` folder.

    python -m tests.tiny_hub /tmp/tiny_hub    # build them by hand
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    GPTNeoXForSequenceClassification,
    PreTrainedTokenizerFast,
)

SUBREDDITS = ["relationships", "AskReddit", "personalfinance", "tifu", "legaladvice"]
WORDS = ("my friend and i went to the store after work because we needed food for the week but the "
         "car broke down so we walked home in the rain and now i do not know what to do about it "
         "should i ask my landlord for help or call my parents tonight").split()

TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
VOCAB = 320  # model embedding rows; the tokenizers stay below it, leaving room for "[PAD]"


def _text(rng: torch.Generator, lo: int, hi: int) -> str:
    n = int(torch.randint(lo, hi + 1, (1,), generator=rng))
    idx = torch.randint(0, len(WORDS), (n,), generator=rng).tolist()
    return " ".join(WORDS[i] for i in idx)


def tldr_rows(n: int, seed: int) -> list[dict]:
    rng = torch.Generator().manual_seed(seed)
    return [{"subreddit": SUBREDDITS[i % len(SUBREDDITS)], "title": _text(rng, 3, 8),
             "post": _text(rng, 8, 30), "summary": " " + _text(rng, 3, 10)} for i in range(n)]


def preference_rows(n: int, seed: int) -> list[dict]:
    rows = []
    for r in tldr_rows(n, seed):
        rows.append({"prompt": TLDR_TEMPLATE.format(**r), "chosen": r["summary"],
                     "rejected": " " + r["title"]})
    return rows


def bpe_tokenizer(corpus: list[str], vocab_size: int, specials: list[str], **roles) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, **roles)


def neox_config(**kw) -> GPTNeoXConfig:
    base = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=128, max_position_embeddings=256, rotary_pct=0.25,
                bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    return GPTNeoXConfig(**{**base, **kw})


def build(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write every stand-in under `root`; return their paths."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train, val = tldr_rows(48, seed), tldr_rows(16, seed + 1)
    corpus = [TLDR_TEMPLATE.format(**r) + r["summary"] for r in train]

    # policy tokenizer: like Pythia's, eos = "<|endoftext|>" = 0 and no pad token
    policy_tok = bpe_tokenizer(corpus, 300, ["<|endoftext|>"], eos_token="<|endoftext|>",
                               bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    paths = {k: root / k for k in ("policy", "proxy_rm", "gold_rm", "lm_as_rm", "tldr", "preference")}
    policy = GPTNeoXForCausalLM(neox_config())
    policy.save_pretrained(paths["policy"])
    policy_tok.save_pretrained(paths["policy"])

    proxy = GPTNeoXForSequenceClassification(neox_config(num_labels=1))
    proxy.save_pretrained(paths["proxy_rm"])
    policy_tok.save_pretrained(paths["proxy_rm"])

    # gold RM: its own tokenizer (other merges and ids), pad "<pad>" != eos "</s>"
    gold_tok = bpe_tokenizer([c.upper() + " " + c for c in corpus[::-1]], 280, ["<pad>", "</s>"],
                             eos_token="</s>", pad_token="<pad>")
    gold = GPTNeoXForSequenceClassification(neox_config(num_labels=1, pad_token_id=0, eos_token_id=1,
                                                        bos_token_id=1, hidden_size=32))
    gold.save_pretrained(paths["gold_rm"])
    gold_tok.save_pretrained(paths["gold_rm"])

    # a language model where a reward model belongs: must be refused
    GPTNeoXForCausalLM(neox_config()).save_pretrained(paths["lm_as_rm"])
    policy_tok.save_pretrained(paths["lm_as_rm"])

    paths["tldr"].mkdir(exist_ok=True)
    for name, rows in (("train", train), ("validation", val)):
        with open(paths["tldr"] / f"{name}.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)

    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(preference_rows(48, seed + 2)),
                 "validation": Dataset.from_list(preference_rows(16, seed + 3))}).save_to_disk(str(paths["preference"]))
    return paths


if __name__ == "__main__":
    for k, v in build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_hub")).items():
        print(f"{k}: {v}")


def task_args(hub: dict[str, Path], dataset: str, **extra) -> list[str]:
    """launch.py overrides that point a real task at this hub's dataset and models."""
    out = [f"task.dataset={hub[dataset]}", f"model.policy_path={hub['policy']}",
           f"model.proxy_rm_path={hub['proxy_rm']}", f"model.gold_rm_path={hub['gold_rm']}"]
    return out + [f"{k}={v}" for k, v in extra.items()]
