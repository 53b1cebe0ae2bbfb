"""`python -m analysis.calibrate`: false-positive rate and power of the verdict rules on simulated curves.

Simulates eval curves at the study's design (11 evals at steps 0, 20, ..., 200;
3 seeds per proxy-trained condition, 2 per oracle control) with independent
Gaussian eval noise of the logged size (per-eval SE, default 0.09 gold std),
and applies the very functions `analysis.verdicts` applies to real runs
(`overoptimization`, `fall`, `gold_fell`, `attribution_call`, `trend`,
`kl_bound`): one code path. The simulated SE is also what the rules are told
(the logged SE), as in a real run.

Curve families (gold in gold-std units; the proxy always climbs, as under RL):

- **null** ("rise then plateau"): gold rises by `RISE` over the first
  `RISE_EVALS` evals, then stays flat. No true drop.
- **drop**: the same rise, flat to step `PEAK_STEP`, then a linear true
  decline of `DROP_SE` x SE to the last eval.

A rule's false-positive rate is the fraction of null units it flags; its power
the fraction of drop units it flags. `--se` sets the noise; every rule is
scale-free in it (thresholds are in SE units), which the output shows.

Lines printed, one per rule: `<rule>: false_positive_rate=<x> power=<y>  (<design>)`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from analysis import verdicts as V

N_EVALS = 11  # steps 0..200 every 20 (the study: steps 200, eval_every 20)
STEP = 20
SEEDS = 3  # proxy-trained conditions
ORACLE_SEEDS = 2  # reward=gold controls
SE = 0.09  # per-eval gold/proxy SE, gold-std units (the typical logged eval/gold_reward_se)
N_SIMS = 2000  # units per family: a rate near 0.05 is then known to about +-0.005
N_SIMS_TREND = 300  # C4 runs a permutation test per simulation
RISE = 1.0  # gold std gained before the plateau (the first embedded sweep's peaks: 0.6-1.8)
RISE_EVALS = 3  # evals the rise takes
PEAK_STEP = 100  # drop curves peak here, then decline linearly to the last eval
DROP_SE = 3.0  # the true decline after the peak, in per-eval SEs
PROXY_GAIN = 1.0  # proxy std gained linearly over the run
C4_COEFS = 3  # coefficients x SEEDS runs x C4_LRS strata, as in the study
C4_LRS = 2


NULL_NAMES = {"null": "rise then plateau", "flat": "flat from step 0 (the worst case for the max-window bias)"}


@dataclass(frozen=True)
class Result:
    rule: str
    false_positive_rate: float
    power: float
    design: str

    def line(self) -> str:
        return (
            f"{self.rule}: false_positive_rate={self.false_positive_rate:.3f} power={self.power:.3f}  ({self.design})"
        )


def steps(n_evals: int = N_EVALS) -> np.ndarray:
    return np.arange(n_evals, dtype=float) * STEP


def gold_curve(kind: str, se: float, n_evals: int = N_EVALS, drop_se: float = DROP_SE) -> np.ndarray:
    """True mean gold of a family: 'null' (rise, plateau), 'flat' (no rise at all) or 'drop'."""
    t = steps(n_evals)
    rise = RISE * np.minimum(t / (RISE_EVALS * STEP), 1.0)
    if kind == "flat":
        return np.zeros_like(t)
    if kind == "rising":  # still climbing at the end: its own fall is exactly 0 most of the time
        return RISE * t / t[-1]
    if kind == "null":
        return rise
    if kind == "drop":
        after = np.clip((t - PEAK_STEP) / (t[-1] - PEAK_STEP), 0.0, 1.0)
        return rise - drop_se * se * after
    raise ValueError(kind)


def proxy_curve(n_evals: int = N_EVALS) -> np.ndarray:
    t = steps(n_evals)
    return PROXY_GAIN * t / t[-1]


def _noisy(rng, mean: np.ndarray, n_runs: int, se: float) -> tuple[np.ndarray, np.ndarray]:
    y = mean[None, :] + rng.normal(0.0, se, (n_runs, len(mean)))
    return y, np.full_like(y, se)


def _overopt_rate(rng, kind: str, n_runs: int, se: float, n_sims: int, n_evals: int) -> float:
    g_mean, p_mean = gold_curve(kind, se, n_evals), proxy_curve(n_evals)
    hits = 0
    for _ in range(n_sims):
        g, gs = _noisy(rng, g_mean, n_runs, se)
        p, ps = _noisy(rng, p_mean, n_runs, se)
        flag, _, _ = V.overoptimization(g, gs, p, ps)
        hits += bool(flag)
    return hits / n_sims


def overoptimized(se=SE, n_runs=SEEDS, n_sims=N_SIMS, seed=0, n_evals=N_EVALS, null="null") -> Result:
    """The over-optimization rule on one unit of `n_runs` seeds: null = rise then plateau, drop = 3 SE."""
    rng = np.random.default_rng([seed, 1, n_runs])
    fpr = _overopt_rate(rng, null, n_runs, se, n_sims, n_evals)
    power = _overopt_rate(rng, "drop", n_runs, se, n_sims, n_evals)
    unit = "condition" if n_runs > 1 else "run"
    return Result(
        f"overoptimized[{unit}, {n_runs} seed(s){'' if null == 'null' else ', ' + null + ' null'}]",
        fpr,
        power,
        f"{n_evals} evals, SE {se:g}, null: {NULL_NAMES[null]}, drop: {DROP_SE:g} SE after step {PEAK_STEP}, "
        f"{n_sims} sims each",
    )


def drift(se=SE, n_runs=ORACLE_SEEDS, n_sims=N_SIMS, seed=0, n_evals=N_EVALS) -> Result:
    """C2b's per-condition test (gold fell beyond noise) on an oracle control of `n_runs` seeds."""
    rng = np.random.default_rng([seed, 2, n_runs])
    rates = []
    for kind in ("null", "drop"):
        mean, hits = gold_curve(kind, se, n_evals), 0
        for _ in range(n_sims):
            g, gs = _noisy(rng, mean, n_runs, se)
            hits += bool(V.gold_fell(V.fall(g, gs)))
        rates.append(hits / n_sims)
    return Result(
        f"gold_fell[C2b drift, {n_runs} seeds]",
        *rates,
        f"{n_evals} evals, SE {se:g}, null: rise then plateau, drop: {DROP_SE:g} SE, {n_sims} sims each",
    )


def exploitation(se=SE, n_proxy=SEEDS, n_oracle=ORACLE_SEEDS, n_sims=N_SIMS, seed=0, n_evals=N_EVALS) -> Result:
    """C2a's per-pair call. Nulls: both twins plateau; both drop alike (drift only); the proxy-trained
    twin plateaus while the oracle twin still rises. The rate shown is the largest. Power: the
    proxy-trained twin drops 3 SE, the oracle twin plateaus."""
    rng = np.random.default_rng([seed, 3, n_proxy, n_oracle])

    def rate(kind_p: str, kind_o: str) -> float:
        mp, mo, hits = gold_curve(kind_p, se, n_evals), gold_curve(kind_o, se, n_evals), 0
        for _ in range(n_sims):
            fp = V.fall(*_noisy(rng, mp, n_proxy, se))
            fo = V.fall(*_noisy(rng, mo, n_oracle, se))
            hits += V.attribution_call(fp, fo) == V.EXPLOIT
        return hits / n_sims

    fpr = max(rate("null", "null"), rate("drop", "drop"), rate("null", "rising"))
    return Result(
        f"exploitation[C2a, {n_proxy} proxy vs {n_oracle} oracle seeds]",
        fpr,
        rate("drop", "null"),
        f"{n_evals} evals, SE {se:g}, nulls: both plateau / both drop {DROP_SE:g} SE / proxy-trained plateaus while "
        f"the oracle rises (max shown), {n_sims} sims each",
    )


def c4_trend(se=SE, n_sims=N_SIMS_TREND, seed=0, n_evals=N_EVALS, n_perm=V.C4_N_PERM) -> Result:
    """C4's stratified permutation trend test over per-run falls. Null: every coefficient's runs
    plateau; power: true drops of 0, 1.5 and 3 SE at the three coefficients."""
    rng = np.random.default_rng([seed, 4])
    coefs = np.array([0.01, 0.05, 0.2])[:C4_COEFS]
    x = np.repeat(np.tile(coefs, C4_LRS), SEEDS)
    strata = np.repeat(np.arange(C4_LRS), C4_COEFS * SEEDS)

    def rate(drops_se) -> float:
        hits = 0
        means = [gold_curve("drop", se, n_evals, d) if d > 0 else gold_curve("null", se, n_evals) for d in drops_se]
        for _ in range(n_sims):
            falls = []
            for c in range(len(x)):
                g, gs = _noisy(rng, means[list(coefs).index(x[c])], 1, se)
                falls.append(V.fall(g, gs).value)
            rho, p = V.trend(x, falls, strata, n_perm=n_perm, seed=int(rng.integers(1 << 31)))
            hits += bool(p <= V.C4_ALPHA and rho > 0)
        return hits / n_sims

    step_se = DROP_SE / (C4_COEFS - 1)
    return Result(
        f"c4_trend[{C4_COEFS} coefs x {SEEDS} seeds x {C4_LRS} lr]",
        rate([0.0] * C4_COEFS),
        rate([i * step_se for i in range(C4_COEFS)]),
        f"per-run falls, null: all plateau, power: drops 0..{DROP_SE:g} SE rising with coef, {n_sims} sims each",
    )


def kl_bounded(n_sims=N_SIMS, seed=0, n_evals=N_EVALS, noise=0.03) -> Result:
    """The KL-bounded rule on KL curves with `noise` relative eval noise. 'False positive' = a
    converging run below the budget called unbounded (saturating to 2-12 nats, time constant
    30-120 steps, so some still climb at the end). Power = runaway runs called unbounded: half
    plateau far above the budget (40-120 nats, the near-uniform entropy runs), half grow
    linearly to 15-60 nats at the last eval."""
    rng = np.random.default_rng([seed, 5])
    t = steps(n_evals)

    def called_unbounded(kl) -> bool:
        kl = kl * (1 + noise * rng.normal(size=kl.shape))
        return V.kl_bound(t, kl).bounded is False

    fp = sum(
        called_unbounded(rng.uniform(2, 12) * (1 - np.exp(-t / rng.uniform(30, 120)))) for _ in range(n_sims)
    )
    runaway = 0
    for i in range(n_sims):
        if i % 2:
            kl = rng.uniform(40, 120) * (1 - np.exp(-t / rng.uniform(20, 60)))
        else:
            kl = rng.uniform(15, 60) * t / t[-1]
        runaway += called_unbounded(kl)
    return Result(
        "kl_bounded",
        fp / n_sims,
        runaway / n_sims,
        f"budget {V.KL_BUDGET:g} nats, null: converging to 2-12 nats, runaway: plateau 40-120 or linear to 15-60 "
        f"nats, {noise:.0%} eval noise, {n_sims} sims each",
    )


def calibrate(se=SE, n_sims=N_SIMS, seed=0, n_evals=N_EVALS, seeds=SEEDS, oracle_seeds=ORACLE_SEEDS) -> list[Result]:
    """Every rule at the study's design; the first line is the rule the tests hold to FPR <= 0.05, power >= 0.8."""
    return [
        overoptimized(se, seeds, n_sims, seed, n_evals),
        overoptimized(se, seeds, n_sims, seed, n_evals, null="flat"),
        overoptimized(se, 1, n_sims, seed, n_evals),
        drift(se, oracle_seeds, n_sims, seed, n_evals),
        exploitation(se, seeds, oracle_seeds, n_sims, seed, n_evals),
        c4_trend(se, max(n_sims // 7, 50), seed, n_evals),
        kl_bounded(n_sims, seed, n_evals),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--se", type=float, default=SE, help="per-eval gold/proxy SE, gold std (default: %(default)s)")
    ap.add_argument("--n-sims", type=int, default=N_SIMS, help="simulated units per family (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    ap.add_argument("--evals", type=int, default=N_EVALS, help="evals per run incl. step 0 (default: %(default)s)")
    ap.add_argument("--seeds", type=int, default=SEEDS, help="seeds per proxy-trained condition (default: %(default)s)")
    ap.add_argument(
        "--oracle-seeds", type=int, default=ORACLE_SEEDS, help="seeds per oracle control (default: %(default)s)"
    )
    args = ap.parse_args(argv)
    print(
        f"# rules of analysis/verdicts.py: window {V.WINDOW} evals, FALL_Z {V.FALL_Z}, RISE_Z {V.RISE_Z}, "
        f"EXPLOIT_Z {V.EXPLOIT_Z}, C4 alpha {V.C4_ALPHA}, KL budget {V.KL_BUDGET:g} nats"
    )
    for r in calibrate(args.se, args.n_sims, args.seed, args.evals, args.seeds, args.oracle_seeds):
        print(r.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
