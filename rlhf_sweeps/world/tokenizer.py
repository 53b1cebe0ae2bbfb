"""A word-level Hugging Face tokenizer for the hidden language, built locally.

Saved next to every model of the embedded world so the folders load like any
hub checkpoint (`AutoTokenizer.from_pretrained`, vLLM). Training code works on
token ids directly; the tokenizer is for decoding samples and for reward
models that bring their own tokenizer (they re-tokenize decoded text).
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlhf_sweeps.world.language import SPECIAL_TOKENS, word_token


def build_tokenizer(n_words: int) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({word_token(i): len(SPECIAL_TOKENS) + i for i in range(n_words)})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No post-processor on purpose: prompts carry <bos> ... <sep> explicitly.
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        sep_token="<sep>",
        unk_token="<pad>",
    )
