"""Real-scale tasks (task=tldr / task=preference) through the real loading code, no downloads.

tests/tiny_hub.py writes GPT-NeoX stand-ins for the Pythia SFT policy and the
proxy / gold reward models (the gold with its own tokenizer) and datasets in the
TL;DR and preference schemas; everything below loads them by path exactly as a
hub checkpoint would be loaded after download.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import data
from rlhf_sweeps.config import ConfigError, validate
from tests import tiny_hub
from tests.conftest import ROOT


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


# --------------------------------------------------------------------------- normalization stage
def test_normalization_is_computed_once_on_initial_policy_samples(hub, real_cache):
    from rlhf_sweeps.models import load_causal_lm
    from rlhf_sweeps.rollout.base import Sampling
    from rlhf_sweeps.rollout.hf import HFSampler
    from rlhf_sweeps.tasks import build_task

    cfg = _compose(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"cache_dir={real_cache}"])
    validate(cfg)
    task = build_task(cfg)
    builds = (real_cache / "builds.log").read_text().count(" norm-")
    # redo the stage's sampling: the same prompts and seed give the same samples
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(task.policy_dir))
    train = data.load_prompts(cfg.task, cfg.task.train_split, tok)
    idx = data.fixed_subset(len(train.ids), cfg.task.proxy.n_norm_prompts, cfg.task.proxy.seed)
    policy = load_causal_lm(task.policy_dir)
    roll = HFSampler(policy, Sampling.of(cfg.rollout), batch_size=64).generate([train.ids[i] for i in idx], n=1,
                                                                  seed=cfg.task.proxy.seed + 1)
    gold = task.gold(roll.prompts, roll.response_lists())
    proxy = task.proxy(roll.prompts, roll.response_lists())
    raw_proxy = task.proxy.raw(roll.prompts, roll.response_lists())
    assert abs(float(gold.mean())) < 1e-4 and abs(float(gold.std()) - 1) < 1e-4  # gold: mean 0, var 1
    assert abs(float(proxy.mean())) < 1e-4  # proxy: centered ...
    assert torch.allclose(proxy.std(), raw_proxy.std())  # ... in its own units
    build_task(cfg)  # same content: the stage is reused
    assert (real_cache / "builds.log").read_text().count(" norm-") == builds
    build_task(_compose(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"cache_dir={real_cache}",
                         "rollout.max_new_tokens=10"]))  # other samples: a new stage
    assert (real_cache / "builds.log").read_text().count(" norm-") == builds + 1


# --------------------------------------------------------------------------- reward models
def test_reward_model_with_its_own_tokenizer_scores_the_decoded_text(hub):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_sweeps.models import ensure_distinct_pad, load_reward_model
    from rlhf_sweeps.rewards import TextRewardScorer

    policy_tok = AutoTokenizer.from_pretrained(str(hub["policy"]))
    ensure_distinct_pad(policy_tok, tiny_hub.VOCAB, "policy")
    eos = policy_tok.eos_token_id
    prompts = [policy_tok("SUBREDDIT: r/tifu\n\nTITLE: my car\n\nPOST: it broke\n\nTL;DR:")["input_ids"]] * 2
    responses = [policy_tok(" the car broke down")["input_ids"] + [eos], policy_tok(" we walked home")["input_ids"]]

    gold_tok = AutoTokenizer.from_pretrained(str(hub["gold_rm"]))
    gold = TextRewardScorer(load_reward_model(hub["gold_rm"]), gold_tok, policy_tok)
    assert not gold.same_vocab
    got = gold.raw(prompts, responses)
    rm = AutoModelForSequenceClassification.from_pretrained(str(hub["gold_rm"]))
    with torch.no_grad():
        want = []
        for text, ended in (("SUBREDDIT: r/tifu\n\nTITLE: my car\n\nPOST: it broke\n\nTL;DR: the car broke down", True),
                            ("SUBREDDIT: r/tifu\n\nTITLE: my car\n\nPOST: it broke\n\nTL;DR: we walked home", False)):
            ids = gold_tok(text)["input_ids"] + ([gold_tok.eos_token_id] if ended else [])
            want.append(float(rm(input_ids=torch.tensor([ids])).logits[0, 0]))
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)  # padding in the batch changed nothing

    proxy = TextRewardScorer(load_reward_model(hub["proxy_rm"]), AutoTokenizer.from_pretrained(str(hub["proxy_rm"])),
                             policy_tok)
    assert proxy.same_vocab  # the policy's own ids go straight in
    rm = AutoModelForSequenceClassification.from_pretrained(str(hub["proxy_rm"]))
    with torch.no_grad():
        want = [float(rm(input_ids=torch.tensor([p + r])).logits[0, 0]) for p, r in zip(prompts, responses)]
    assert torch.allclose(proxy.raw(prompts, responses), torch.tensor(want), atol=1e-5)


def test_model_errors_name_the_key_and_the_fix(hub, real_cache, tmp_path):
    from rlhf_sweeps.tasks import build_task

    cfg = _compose(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), "model.policy_path=/nonexistent/sft"])
    with pytest.raises(ConfigError, match=r"model.policy_path='/nonexistent/sft': no such folder"):
        validate(cfg)
    # a language model where a reward model belongs
    cfg = _compose(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"model.proxy_rm_path={hub['lm_as_rm']}",
                    f"cache_dir={real_cache}"])
    with pytest.raises(ConfigError, match=r"model.proxy_rm_path=.*scalar head"):
        build_task(cfg)
    # the same model saved with num_labels=1 still has no trained head: refused, not random rewards
    from transformers import AutoModelForSequenceClassification

    headless = tmp_path / "headless"
    shutil.copytree(hub["lm_as_rm"], headless)
    conf = json.loads((headless / "config.json").read_text())
    conf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    (headless / "config.json").write_text(json.dumps(conf))
    assert AutoModelForSequenceClassification.from_pretrained(str(headless)).config.num_labels == 1
    cfg = _compose(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"model.gold_rm_path={headless}",
                    f"cache_dir={real_cache}"])
    with pytest.raises(ConfigError, match=r"model.gold_rm_path=.*no trained scalar head.*score"):
        build_task(cfg)


# --------------------------------------------------------------------------- data errors and options
def _task(dataset: Path, **kw):
    cfg = _compose(["task=tldr", f"task.dataset={dataset}"] + [f"task.{k}={v}" for k, v in kw.items()])
    return cfg.task


def test_missing_column_is_named_with_the_fix(hub, tmp_path):
    from transformers import AutoTokenizer

    rows = [json.loads(line) for line in (hub["tldr"] / "train.jsonl").read_text().splitlines()]
    for r in rows:
        del r["title"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = AutoTokenizer.from_pretrained(str(hub["policy"]))
    with pytest.raises(data.DataError, match=r"\[train\] has no column 'title' \(needed by task.prompt_template\)"):
        data.load_prompts(_task(tmp_path / "train.jsonl"), "train", tok)


def test_malformed_row_names_the_row(hub, tmp_path):
    from transformers import AutoTokenizer

    lines = (hub["tldr"] / "train.jsonl").read_text().splitlines()
    lines[7] = lines[7][:-5]  # truncated line: not valid JSON
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    tok = AutoTokenizer.from_pretrained(str(hub["policy"]))
    with pytest.raises(data.DataError, match=r"row 7 \(line 8\) is not valid JSON.*fix or delete that line"):
        data.load_prompts(_task(tmp_path / "train.jsonl"), "train", tok)
    # a row whose value is empty: named, with the column
    rows = [json.loads(line) for line in (hub["tldr"] / "train.jsonl").read_text().splitlines()]
    rows[3]["post"] = None
    (tmp_path / "null.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(data.DataError, match=r"row 3: column 'post' is None"):
        data.load_prompts(_task(tmp_path / "null.jsonl"), "train", tok)


def test_sources_slices_templates_and_length_filter(hub, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hub["policy"]))
    rows = [json.loads(line) for line in (hub["tldr"] / "train.jsonl").read_text().splitlines()]
    # one saved Dataset (no splits): held-out rows by slicing; parquet reads the same
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))
    for source in (tmp_path / "saved", tmp_path / "rows.parquet", hub["tldr"] / "train.jsonl"):
        head = data.load_prompts(_task(source), "train[:75%]", tok)
        tail = data.load_prompts(_task(source), "anything[75%:]", tok)
        assert (head.n_rows, tail.n_rows) == (36, 12)
        assert head.ids[0] == tok(tiny_hub.TLDR_TEMPLATE.format(**rows[0]))["input_ids"]
    # a nested column through the template
    nested = [{"info": {"post": r["post"], "title": r["title"]}} for r in rows]
    Dataset.from_list(nested).save_to_disk(str(tmp_path / "nested"))
    got = data.load_prompts(_task(tmp_path / "nested", prompt_template="'{info[title]}: {info[post]}'"), "x", tok)
    assert tok.decode(got.ids[0]) == f"{rows[0]['title']}: {rows[0]['post']}"
    # prompts longer than max_prompt_tokens are dropped and counted, never truncated
    lengths = [len(p) for p in data.load_prompts(_task(hub["tldr"]), "train", tok).ids]
    cut = sorted(lengths)[len(lengths) // 2]
    kept = data.load_prompts(_task(hub["tldr"], max_prompt_tokens=cut), "train", tok)
    assert kept.n_too_long == sum(n > cut for n in lengths) and all(len(p) <= cut for p in kept.ids)
    with pytest.raises(data.DataError, match="has no split 'test'"):
        data.load_prompts(_task(hub["tldr"]), "test", tok)


def test_chat_template_wraps_the_prompt_as_a_user_turn(hub):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hub["policy"]))
    with pytest.raises(data.DataError, match="has no chat template"):
        data.load_prompts(_task(hub["tldr"], chat_template=True), "validation", tok)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    got = data.load_prompts(_task(hub["tldr"], chat_template=True), "validation", tok)
    text = tok.decode(got.ids[0])
    assert text.startswith("<user>SUBREDDIT: r/") and text.endswith("TL;DR:<assistant>")


def test_train_prompt_stream_is_a_pure_function_of_seed_and_step():
    n, per_step = 10, 4
    stream = [data.epoch_stream(n, 0, step, per_step) for step in range(5)]  # 20 draws = 2 epochs
    flat = sum(stream, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))  # each once per epoch
    assert data.epoch_stream(n, 0, 3, per_step) == stream[3]  # resume sees the same prompts
    assert data.epoch_stream(n, 1, 0, per_step) != stream[0]


def test_hub_id_that_cannot_be_fetched_names_the_key():
    from rlhf_sweeps.tasks import resolve_checkpoint

    with pytest.raises(ConfigError, match=r"model.gold_rm_path: 'rlhf-sweeps-test/no-such-rm@v1' is not a local "
                                          r"folder and could not be fetched from the hub"):
        resolve_checkpoint("rlhf-sweeps-test/no-such-rm@v1", "model.gold_rm_path")
