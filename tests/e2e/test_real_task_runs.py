"""Real tasks through `launch.py` on the tiny hub (tests/tiny_hub.py): a TL;DR
online run, SimPO on preference pairs, and a data error reported without a
traceback. Loading, data and errors in-process are in tests/unit/test_real_tasks.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps.tracking import table_rows
from tests import tiny_hub
from tests.conftest import ROOT, run_launch


def _runs(uri: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["rlhf-sweeps"], output_format="list")


def _artifact(uri: str, run, path: str, tmp: Path):
    import mlflow

    return json.loads(Path(mlflow.MlflowClient(uri).download_artifacts(run.info.run_id, path, str(tmp))).read_text())


# --------------------------------------------------------------------------- end to end
def test_tldr_online_run_through_real_loading(hub, real_cache, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_launch(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"cache_dir={real_cache}", f"tracking.uri={uri}"])
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


def test_simpo_on_preference_pairs(hub, real_cache, tmp_path):
    if not (ROOT / "conf" / "algo" / "simpo.yaml").exists():
        pytest.skip("algo=simpo (conf/algo/simpo.yaml) is not written yet")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_launch(["experiment=paper_simpo_tiny", *tiny_hub.task_args(hub, "preference"), f"cache_dir={real_cache}",
                f"tracking.uri={uri}"])
    [run] = _runs(uri)
    assert run.info.status == "FINISHED"
    meta = _artifact(uri, run, "task_stages.json", tmp_path)
    # 48 pairs, all within max_prompt_tokens=200 / max_response_tokens=40
    assert meta["data"]["pairs"] + meta["data"]["pairs_dropped"] == 48 and meta["data"]["pairs"] > 40
    assert "eval/gold_reward" in run.data.metrics


def test_cli_reports_a_data_error_without_traceback(hub, real_cache, tmp_path):
    (tmp_path / "d").mkdir()
    for split in ("train", "validation"):
        rows = [{"prompt": "x"}]
        (tmp_path / "d" / f"{split}.jsonl").write_text(json.dumps(rows[0]) + "\n")
    proc = run_launch(["experiment=paper_tldr_tiny", *tiny_hub.task_args(hub, "tldr"), f"task.dataset={tmp_path / 'd'}",
                       f"cache_dir={real_cache}", f"tracking.uri=sqlite:///{tmp_path}/m.db"], check=False)
    assert proc.returncode == 2
    assert "has no column 'subreddit'" in proc.stderr and "Traceback" not in proc.stderr
