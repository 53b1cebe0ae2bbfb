"""What a run prints: eval lines, the end-of-run block, the learning-range warning."""

from __future__ import annotations

import numpy as np
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import metrics as M
from rlhf_sweeps.loops.runner import learning_range_warning
from rlhf_sweeps.terminal import eval_line, mlflow_run_url, run_end_block
from tests.conftest import ROOT


def _cfg(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


def _eval(gold, proxy, kl, se=0.09):
    return {M.EVAL_GOLD_REWARD: gold, M.EVAL_GOLD_SE: se, M.EVAL_PROXY_REWARD: proxy, M.EVAL_PROXY_SE: se,
            M.EVAL_KL: kl, M.EVAL_ENTROPY: 48.2, M.EVAL_GOLD_WIN_RATE: 0.31}


def test_eval_line_shows_gold_with_its_error_proxy_and_kl():
    assert eval_line(80, _eval(-1.75, 1.12, 36.1)) == "step 80 | gold -1.75 ± 0.09 | proxy +1.12 | KL 36.1 | H 48.2 | win 0.31"


def test_run_end_block_flags_a_fall_beyond_noise_and_not_a_plateau():
    steps = range(0, 220, 20)
    rises = np.array([0, .4, .8, 1.0, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1, 1.1])
    falls = np.array([0, .4, .8, 1.0, 1.1, .9, .5, 0, -.5, -1., -1.5])
    proxy = np.linspace(0, 3, 11)
    over = run_end_block("r", {s: _eval(g, p, s / 10) for s, g, p in zip(steps, falls, proxy)}, None)
    flat = run_end_block("r", {s: _eval(g, p, s / 10) for s, g, p in zip(steps, rises, proxy)}, None)
    assert "peak +1.10 at step 80, final -1.50" in over and "over-optimized: YES" in over
    assert "gold fell +2.00 from its best 3-eval window to its last" in over  # (1.0+1.1+.9)/3 - (-1.0)
    assert "over-optimized: no" in flat


def test_mlflow_link_opens_the_runs_view():
    url = mlflow_run_url("sqlite:////x/mlflow.db", "3", "abc")
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_a_learning_rate_below_the_measured_range_warns_with_the_range():
    warning = learning_range_warning(_cfg(["lr=1e-7"]))
    assert "lr=1e-07" in warning and "0.0001 to 0.001" in warning
    assert learning_range_warning(_cfg(["lr=3e-4"])) is None
    assert learning_range_warning(_cfg(["lr=1e-7", "model=tiny"])) is None  # not measured: no claim
