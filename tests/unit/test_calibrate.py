"""analysis.calibrate: the verdict rules' false-positive rate and power at the study's design.

Deterministic (fixed seeds, enough simulations that a rate near 0.05 is known
to about +-0.005), and fast: one full calibration takes a few seconds.
"""

from __future__ import annotations

import re

import pytest

from analysis import calibrate as CAL
from analysis import verdicts as V

LINE = re.compile(r"^(?P<rule>\S.*?): false_positive_rate=(?P<fpr>[0-9.]+) power=(?P<power>[0-9.]+)\s")


@pytest.fixture(scope="module")
def results() -> dict[str, CAL.Result]:
    return {r.rule: r for r in CAL.calibrate()}


def test_study_design_is_the_default():
    assert len(CAL.steps()) == 11 and CAL.steps()[-1] == 200  # 200 steps, eval every 20, incl. step 0
    assert (CAL.SEEDS, CAL.ORACLE_SEEDS, CAL.SE) == (3, 2, 0.09)


def test_overoptimization_rule_fpr_and_power_at_the_study_design(results):
    cond = results["overoptimized[condition, 3 seed(s)]"]
    assert cond.false_positive_rate <= 0.05
    assert cond.power >= 0.80
    # the worst case for the max-over-windows bias (no rise, all 9 windows on the plateau) too
    assert results["overoptimized[condition, 3 seed(s), flat null]"].false_positive_rate <= 0.05


def test_every_rule_keeps_its_false_positive_rate(results):
    for r in results.values():
        assert r.false_positive_rate <= 0.05, r.line()
    # the condition-level tests the verdicts rest on have the power to see a 3-SE drop
    for name in ("gold_fell[C2b drift, 2 seeds]", "exploitation[C2a, 3 proxy vs 2 oracle seeds]"):
        assert results[name].power >= 0.80, results[name].line()
    assert results["c4_trend[3 coefs x 3 seeds x 2 lr]"].power >= 0.80
    assert results["kl_bounded"].power >= 0.99


def test_one_code_path(monkeypatch):
    """The calibration reads the verdicts' own rule: raise its threshold and the power goes."""
    before = CAL.overoptimized(n_sims=300)
    monkeypatch.setattr(V, "FALL_Z", 1e9)
    after = CAL.overoptimized(n_sims=300)
    assert before.power > 0.8 and after.power == 0.0 and after.false_positive_rate == 0.0


def test_naive_peak_would_fail_calibration():
    """What the rules correct: the best single eval minus the last one, tested at a nominal z of 1.645,
    fires on plateaus far more often than 5 %."""
    import numpy as np

    rng = np.random.default_rng(0)
    mean = CAL.gold_curve("null", CAL.SE)
    hits = 0
    for _ in range(2000):
        g = mean + rng.normal(0, CAL.SE, len(mean))
        hits += (g.max() - g[-1]) / (CAL.SE * np.sqrt(2)) >= 1.645
    assert hits / 2000 > 0.15
