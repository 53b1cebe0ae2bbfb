"""A response is scored exactly as sampled (docs/science.md §5).

It ends only at its first <eos> or at the length limit; a special token the
policy samples inside it (<pad>, <bos>, <sep>) is junk for gold and is seen
by the proxy. Before this rule, a response whose first sampled token was
<pad> was cut to nothing and scored ~+0.9 raw gold, above the SFT policy's
mean. `tests/unit/test_vllm.py` runs the same check through vLLM.

"The SFT policy's mean" is taken on the hidden chain's own responses: the
chain is the policy SFT imitates (the default world's SFT gets within ~0.02
nats/token of it), so gold normalized there has the SFT policy's mean 0
without training one here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForSequenceClassification

from rlhf_sweeps.config import WorldConfig
from rlhf_sweeps.models import llama_config
from rlhf_sweeps.rewards import RewardModelScorer
from rlhf_sweeps.rollout.base import Sampling
from rlhf_sweeps.rollout.hf import HFSampler
from rlhf_sweeps.world.language import EOS_ID, PAD_ID, SPECIAL_IDS, HiddenLanguage
from tests.junk_policy import (
    JUNK,
    MAX_NEW,
    ROOT,
    check_special_tokens_score_below_sft_mean,
    eval_prompts,
    save_junk_policy,
    sft_normalized_gold,
)


@pytest.fixture(scope="module")
def language():
    return HiddenLanguage(WorldConfig())


def test_an_empty_looking_response_is_not_a_good_one(language):
    """The exploit itself: a response that is one sampled <pad> (then anything) is junk."""
    gold = sft_normalized_gold(language)
    prompt = eval_prompts(language)[0]
    chain = language.sample_response(np.random.default_rng(2), prompt)
    for tok in JUNK:
        assert float(gold([prompt], [[tok] + chain])[0]) < float(gold([prompt], [chain])[0])
        assert float(gold([prompt], [[tok]])[0]) < -1.0


def test_gold_split_adds_up(language):
    gold = sft_normalized_gold(language)
    prompts = eval_prompts(language)
    rng = np.random.default_rng(3)
    responses = [language.sample_response(rng, p) for p in prompts]
    responses[0] = [PAD_ID] + responses[0]  # junk counts in both parts
    content, fluency = gold.parts(prompts, responses)
    assert torch.allclose(content + fluency, gold(prompts, responses), atol=1e-5)
    assert not torch.allclose(content, torch.zeros_like(content))


def test_sampled_special_tokens_are_junk_through_hf(language, tmp_path):
    vocab = language.vocab_size
    policy = save_junk_policy(tmp_path, language.params.n_words, vocab, list(JUNK))
    rollout = HFSampler(policy, Sampling(1.0, 1.0, MAX_NEW)).generate(eval_prompts(language), n=4, seed=0)
    check_special_tokens_score_below_sft_mean(rollout, sft_normalized_gold(language))


def test_proxy_sees_a_sampled_pad(language):
    """The proxy pools at the last sampled token, so a trailing sampled <pad> changes its
    score (Hugging Face's own pooling skips pad ids and would read the token before)."""
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    rm = LlamaForSequenceClassification(llama_config(OmegaConf.load(ROOT / "conf/model/tiny.yaml"),
                                                     language.vocab_size, **SPECIAL_IDS)).eval()
    rm.config.num_labels = 1
    proxy = RewardModelScorer(rm)
    prompt = eval_prompts(language)[0]
    words = [t for t in language.sample_response(np.random.default_rng(0), prompt)[:5] if t != EOS_ID]
    a, b = proxy.raw([prompt, prompt], [words, words + [PAD_ID]])
    assert abs(float(a - b)) > 1e-4
