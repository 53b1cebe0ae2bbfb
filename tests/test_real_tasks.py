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
from rlhf_sweeps.tracking import table_rows
from tests import tiny_hub
from tests.conftest import ROOT, run_launch


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict[str, Path]:
    return tiny_hub.build(tmp_path_factory.mktemp("tiny_hub"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


def _args(hub, dataset: str, **extra) -> list[str]:
    out = [f"task.dataset={hub[dataset]}", f"model.policy_path={hub['policy']}",
           f"model.proxy_rm_path={hub['proxy_rm']}", f"model.gold_rm_path={hub['gold_rm']}"]
    return out + [f"{k}={v}" for k, v in extra.items()]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


def _runs(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["rlhf-sweeps"], output_format="list")


def _artifact(uri: str, run, path: str, tmp: Path):
    import mlflow

    return json.loads(Path(mlflow.MlflowClient(uri).download_artifacts(run.info.run_id, path, str(tmp))).read_text())


# --------------------------------------------------------------------------- end to end
def test_tldr_online_run_through_real_loading(hub, cache, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_launch(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"cache_dir={cache}", f"tracking.uri={uri}"])
    [run] = _runs(uri)
    assert run.info.status == "FINISHED"
    history = {m.step for m in __import__("mlflow").MlflowClient(uri).get_metric_history(run.info.run_id,
                                                                                         "eval/gold_reward")}
    assert history == {0, 2, 4}
    assert run.data.metrics["eval/response_length"] <= 12  # rollout.max_new_tokens of the tiny preset
    meta = _artifact(uri, run, "task_stages.json", tmp_path)
    assert meta["data"]["train_prompts"] == 48 and meta["data"]["eval_prompts"] == 4
    # the policy folder was prepared with a pad distinct from Pythia-style eos=0
    assert meta["policy"]["eos_token_id"] == 0 and meta["policy"]["pad_token_id"] == 300
    rows = table_rows(_artifact(uri, run, "samples/step_000000.json", tmp_path))
    assert rows[0]["prompt"].startswith("SUBREDDIT: r/") and rows[0]["prompt"].endswith("TL;DR:")


def test_simpo_on_preference_pairs(hub, cache, tmp_path):
    if not (ROOT / "conf" / "algo" / "simpo.yaml").exists():
        pytest.skip("algo=simpo (conf/algo/simpo.yaml) is not written yet")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_launch(["experiment=paper_simpo_tiny", *_args(hub, "preference"), f"cache_dir={cache}",
                f"tracking.uri={uri}"])
    [run] = _runs(uri)
    assert run.info.status == "FINISHED"
    meta = _artifact(uri, run, "task_stages.json", tmp_path)
    # 48 pairs, all within max_prompt_tokens=200 / max_response_tokens=40
    assert meta["data"]["pairs"] + meta["data"]["pairs_dropped"] == 48 and meta["data"]["pairs"] > 40
    assert "eval/gold_reward" in run.data.metrics


# --------------------------------------------------------------------------- normalization stage
def test_normalization_is_computed_once_on_initial_policy_samples(hub, cache):
    from rlhf_sweeps.models import load_causal_lm
    from rlhf_sweeps.rollout.base import Sampling
    from rlhf_sweeps.rollout.hf import HFSampler
    from rlhf_sweeps.tasks import build_task

    cfg = _compose(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"cache_dir={cache}"])
    validate(cfg)
    task = build_task(cfg)
    builds = (cache / "builds.log").read_text().count(" norm-")
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
    assert (cache / "builds.log").read_text().count(" norm-") == builds
    build_task(_compose(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"cache_dir={cache}",
                         "rollout.max_new_tokens=10"]))  # other samples: a new stage
    assert (cache / "builds.log").read_text().count(" norm-") == builds + 1


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


def test_model_errors_name_the_key_and_the_fix(hub, cache, tmp_path):
    from rlhf_sweeps.tasks import build_task

    cfg = _compose(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), "model.policy_path=/nonexistent/sft"])
    with pytest.raises(ConfigError, match=r"model.policy_path='/nonexistent/sft': no such folder"):
        validate(cfg)
    # a language model where a reward model belongs
    cfg = _compose(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"model.proxy_rm_path={hub['lm_as_rm']}",
                    f"cache_dir={cache}"])
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
    cfg = _compose(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"model.gold_rm_path={headless}",
                    f"cache_dir={cache}"])
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


def test_cli_reports_a_data_error_without_traceback(hub, cache, tmp_path):
    (tmp_path / "d").mkdir()
    for split in ("train", "validation"):
        rows = [{"prompt": "x"}]
        (tmp_path / "d" / f"{split}.jsonl").write_text(json.dumps(rows[0]) + "\n")
    proc = run_launch(["experiment=paper_tldr_tiny", *_args(hub, "tldr"), f"task.dataset={tmp_path / 'd'}",
                       f"cache_dir={cache}", f"tracking.uri=sqlite:///{tmp_path}/m.db"], check=False)
    assert proc.returncode == 2
    assert "has no column 'subreddit'" in proc.stderr and "Traceback" not in proc.stderr


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
