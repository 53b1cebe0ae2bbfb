"""vLLM through launch.py: in a one-process sweep of three smoke runs, each run's
engine log-probs match the trainer's and no run leaks its engine; a stale
engine is synced before each eval. The sampler itself is tested in
tests/unit/test_vllm.py.
"""

from __future__ import annotations

import os

import pytest

from rlhf_sweeps import metrics as M
from tests.conftest import HAVE_VLLM, run_launch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


# ------------------------------------------------------------------ end to end through launch.py
def _runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rlhf-sweeps").experiment_id],
                              order_by=["attributes.start_time ASC"])
    return client, [r for r in runs if M.PERF_RSS_GB in r.data.metrics]  # training runs, not sweep parents


def _history(client, run, key) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


@pytest.fixture(scope="module")
def vllm_sweep(smoke_cache, tmp_path_factory):
    """Three smoke runs with vLLM, one after another in one process (the basic launcher)."""
    tmp = tmp_path_factory.mktemp("vllm_sweep")
    uri = f"sqlite:///{tmp}/mlflow.db"
    run_launch(["-m", "experiment=smoke", "rollout=vllm", "seed=0,1,2", f"cache_dir={smoke_cache}",
                f"tracking.uri={uri}", f"hydra.sweep.dir={tmp}/sweep"])
    return _runs(uri)


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
def test_smoke_runs_with_vllm_match_trainer_logprobs(vllm_sweep):
    client, runs = vllm_sweep
    for run in runs:
        assert run.info.status == "FINISHED"
        gap_mean = _history(client, run, M.ROLLOUT_LOGPROB_GAP_MEAN)
        gap_max = _history(client, run, M.ROLLOUT_LOGPROB_GAP_MAX)
        print(f"seed {run.data.params['seed']}: rollout/logprob_gap_mean by step:", gap_mean,
              "max:", max(gap_max.values()))
        assert sorted(gap_mean) == list(range(6))
        assert max(gap_mean.values()) < 1e-3 and max(gap_max.values()) < 1e-3, (gap_mean, gap_max)
        for key in (M.PERF_ROLLOUT_S, M.PERF_SCORE_S, M.PERF_UPDATE_S, M.PERF_SYNC_S, M.PERF_RSS_GB):
            assert len(_history(client, run, key)) == 6, key


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
def test_stale_engine_is_synced_before_eval(smoke_cache, tracking_uri):
    """sync_every=2, eval_every=3: the engine lags on odd updates, but never at an eval.

    Fresh engine at the start of step s (gap ~0) for s = 0, 2, 3 (synced for the
    eval at 3), 5; stale (gap = one Adam step) at 1 and 4. Without the sync
    before eval, step 3 would be stale and the eval would score a lagging policy.
    """
    run_launch(["experiment=smoke", "rollout=vllm", "rollout.sync_every=2", "rollout.is_correction=token",
                f"cache_dir={smoke_cache}", f"tracking.uri={tracking_uri}"])
    client, (run,) = _runs(tracking_uri)
    gap = _history(client, run, M.ROLLOUT_LOGPROB_GAP_MEAN)
    print("sync_every=2: rollout/logprob_gap_mean by step:", gap)
    assert all(gap[s] < 1e-3 for s in (0, 2, 3, 5)), gap
    assert all(gap[s] > 1e-3 for s in (1, 4)), gap
    assert _history(client, run, M.ROLLOUT_STALENESS) == {0: 1, 1: 0, 2: 1, 3: 1, 4: 0, 5: 1}
    clipped = _history(client, run, M.ROLLOUT_IS_CLIPPED_FRAC)
    assert sorted(clipped) == list(range(6)) and all(0 <= v <= 1 for v in clipped.values())


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
def test_basic_launcher_sweep_in_one_process_does_not_leak(vllm_sweep):
    client, runs = vllm_sweep
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    peak = [max(_history(client, r, M.PERF_RSS_GB).values()) for r in runs]
    print("peak perf/rss_gb per run (GiB):", [round(p, 3) for p in peak])
    # run 0 pays the one-off imports; each later run starts and frees its own engine
    assert max(peak[1:]) - peak[1] < 0.1, peak
