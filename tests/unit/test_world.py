"""The embedded world: the gold reward has the structure the study relies on."""

from __future__ import annotations

import numpy as np

from rlhf_sweeps.config import WorldConfig
from rlhf_sweeps.world.language import EOS_ID, N_SPECIAL, PAD_ID, SEP_ID, HiddenLanguage
from rlhf_sweeps.world.tokenizer import build_tokenizer


def _lang(**kw):
    return HiddenLanguage(WorldConfig(**kw))


def test_same_seed_same_world_different_seed_different_world():
    a, b, c = _lang(seed=0), _lang(seed=0), _lang(seed=1)
    assert np.array_equal(a.transitions, b.transitions) and np.array_equal(a.values, b.values)
    assert not np.array_equal(a.transitions, c.transitions)


def test_chain_samples_score_near_zero_fluency_and_word_salad_scores_far_lower():
    lang = _lang()
    rng = np.random.default_rng(3)
    prompts = lang.sample_prompts(rng, 500)
    chain = [lang.sample_response(rng, p) for p in prompts]
    top = np.argsort(lang.values)[-10:]  # the most valuable words, strung together off-chain
    salad = [[N_SPECIAL + int(w) for w in rng.choice(top, 12)] + [EOS_ID] for _ in prompts]
    g_chain, g_salad = lang.gold_reward(prompts, chain), lang.gold_reward(prompts, salad)
    content_salad = np.mean([lang.values[np.array(s[:-1]) - N_SPECIAL].mean() for s in salad])
    assert content_salad > 1.0  # the salad's content term is high...
    assert g_salad.mean() < g_chain.mean() - 2.0  # ...but fluency under the true chain sinks it


def test_gold_matches_hand_computation():
    lang = _lang()
    prompt = lang.sample_prompt(np.random.default_rng(0))
    prev = prompt[-2] - N_SPECIAL
    w1, w2 = int(np.argmax(lang.transitions[prev])), None
    w2 = int(np.argmax(lang.transitions[w1]))
    response = [N_SPECIAL + w1, N_SPECIAL + w2, EOS_ID, PAD_ID, PAD_ID]
    p = lang.params
    content = (lang.values[w1] + lang.values[w2]) / p.min_content_len
    logp = lang.log_next[prev, w1] + lang.log_next[w1, w2] + lang.log_stop[w2]
    expected = content + p.fluency_weight * (logp / 3 - lang.fluency_baseline)
    assert np.isclose(lang.gold_reward([prompt], [response])[0], expected)


def test_special_token_inside_a_response_is_junk():
    lang = _lang()
    prompt = lang.sample_prompt(np.random.default_rng(0))
    good = lang.sample_response(np.random.default_rng(1), prompt)
    bad = [SEP_ID] + good
    assert lang.gold_reward([prompt], [bad])[0] < lang.gold_reward([prompt], [good])[0]


def test_tokenizer_round_trip():
    lang = _lang()
    tok = build_tokenizer(lang.params.n_words)
    prompt = lang.sample_prompt(np.random.default_rng(0))
    text = tok.decode(prompt)
    assert tok(text, add_special_tokens=False)["input_ids"] == prompt
    assert tok.pad_token_id == PAD_ID and tok.eos_token_id == EOS_ID and tok.pad_token_id != tok.eos_token_id
