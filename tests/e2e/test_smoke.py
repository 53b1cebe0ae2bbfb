"""CPU end-to-end: `experiment=smoke` writes every promised metric, finite, at the right steps."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from rlhf_sweeps import metrics as M
from tests.conftest import run_launch

STEPS, EVAL_EVERY = 6, 3  # conf/experiment/smoke.yaml


@pytest.mark.parametrize("regularizer", ["kl", "entropy", "none"])
def test_smoke_run_logs_every_key(regularizer, smoke_cache, tracking_uri):
    run_launch(["experiment=smoke", "rollout=hf", f"regularizer={regularizer}", f"cache_dir={smoke_cache}",
                f"tracking.uri={tracking_uri}"])
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rlhf-sweeps").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"experiment=smoke,rollout=hf,regularizer={regularizer}"
    assert run.data.tags[M.TAG_REGULARIZER] == regularizer and M.TAG_GIT_COMMIT in run.data.tags
    assert run.data.params["regularizer.name"] == regularizer
    for key in M.TRAIN_KEYS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(STEPS)), key
    for key in M.EVAL_KEYS:
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(0, STEPS + 1, EVAL_EVERY)), key
        assert all(math.isfinite(m.value) for m in history), key
    kl0 = [m.value for m in client.get_metric_history(run.info.run_id, M.EVAL_KL) if m.step == 0]
    assert kl0 == [pytest.approx(0.0, abs=1e-5)]  # the initial policy is the reference
    win0 = [m.value for m in client.get_metric_history(run.info.run_id, M.EVAL_GOLD_WIN_RATE) if m.step == 0]
    assert win0 == [0.5]  # against its own samples every pair ties
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {M.ARTIFACT_CONFIG, M.ARTIFACT_SAMPLES_DIR} <= artifacts
    samples = {a.path for a in client.list_artifacts(run.info.run_id, M.ARTIFACT_SAMPLES_DIR)}
    assert len(samples) == len(range(0, STEPS + 1, EVAL_EVERY))
