"""SimPO, DPO, online SimPO and best-of-n through `launch.py` (one multirun): every
eval and preference key is logged, and best-of-n logs its curve. The losses
and loops are in tests/unit/test_preference_loops.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from rlhf_sweeps import metrics as M
from tests.conftest import ROOT

STEPS, EVAL_EVERY = 6, 3  # conf/experiment/smoke.yaml
VOCAB = 24  # ids 0-3 special (pad, bos, eos, sep), as in the embedded world


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """One multirun over the four algorithms on the smoke world; returns (client, {algo: run})."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("pref_smoke")
    uri = f"sqlite:///{tmp}/mlflow.db"
    args = ["-m", "experiment=smoke", "rollout=hf", "algo=simpo,dpo,online_simpo,bon", "algo.bon_n=8",
            "threads=1", f"cache_dir={tmp}/cache", f"tracking.uri={uri}", f"hydra.sweep.dir={tmp}/sweep"]
    proc = subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("rlhf-sweeps").experiment_id])
    by_algo = {r.data.tags[M.TAG_ALGO]: r for r in runs if M.TAG_ALGO in r.data.tags}
    assert set(by_algo) == {"simpo", "dpo", "online_simpo", "bon"}, proc.stderr[-5000:]
    for algo, run in by_algo.items():
        assert run.info.status == "FINISHED", (algo, run.data.tags.get(M.TAG_FAILURE))
    return client, by_algo


def history(client, run, key) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


@pytest.mark.parametrize("algo", ["simpo", "dpo", "online_simpo"])
def test_smoke_preference_run_logs_eval_and_pref_keys(smoke_runs, algo):
    client, runs = smoke_runs
    run = runs[algo]
    for key in M.EVAL_KEYS:  # exactly the online runs' evaluation schedule and keys
        h = history(client, run, key)
        assert sorted(h) == list(range(0, STEPS + 1, EVAL_EVERY)), key
        assert all(math.isfinite(v) for v in h.values()), key
    assert history(client, run, M.EVAL_KL)[0] == pytest.approx(0.0, abs=1e-5)  # step 0 = the SFT policy
    assert history(client, run, M.EVAL_GOLD_WIN_RATE)[0] == 0.5
    assert history(client, run, M.EVAL_KL)[STEPS] > 1e-4  # training moved the policy
    for key in M.PREF_KEYS:
        h = history(client, run, key)
        assert sorted(h) == list(range(STEPS)), key
        assert all(math.isfinite(v) for v in h.values()), key
    acc = history(client, run, M.PREF_ACCURACY)
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    if algo == "dpo":
        assert history(client, run, M.PREF_MARGIN)[0] == pytest.approx(0.0, abs=1e-5)  # policy == reference
    if algo == "online_simpo":
        chosen, rejected = history(client, run, M.TRAIN_PROXY_CHOSEN), history(client, run, M.TRAIN_PROXY_REJECTED)
        assert all(chosen[s] >= rejected[s] for s in range(STEPS))  # the proxy's best vs worst
        assert sorted(history(client, run, M.TRAIN_KL)) == list(range(STEPS))
    samples = client.list_artifacts(run.info.run_id, M.ARTIFACT_SAMPLES_DIR)
    assert len(samples) == len(range(0, STEPS + 1, EVAL_EVERY))


def test_smoke_bon_run_logs_bon_curve(smoke_runs):
    client, runs = smoke_runs
    run = runs["bon"]
    for key in M.EVAL_KEYS:
        assert sorted(history(client, run, key)) == [0], key
    ns = [1, 2, 4, 8]  # algo.bon_n=8
    gold, proxy, kl = (history(client, run, k) for k in (M.BON_GOLD_REWARD, M.BON_PROXY_REWARD, M.BON_KL))
    assert sorted(gold) == sorted(proxy) == sorted(kl) == ns
    assert all(kl[n] == pytest.approx(math.log(n) - (n - 1) / n) for n in ns)
    assert all(proxy[a] <= proxy[b] + 1e-9 for a, b in zip(ns, ns[1:]))  # selecting on proxy raises proxy
    assert all(math.isfinite(v) for v in gold.values())
