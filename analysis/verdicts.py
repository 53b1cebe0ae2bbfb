"""Claims C2-C7 of SCIENCE.md sec. 7, judged by explicit rules on the measured numbers.

Every threshold is a constant below and every rule is written out in `RULES`,
so a reader can disagree with a rule without reading code. A verdict is one of
`supported`, `contradicted`, `inconclusive` (the data exist but do not decide
under the rule: too few runs, mixed results within the margin) and `no data`
(no run of the kind the claim needs carries the metrics it needs). The
evidence column states the numbers the verdict came from.

Units: gold and proxy are re-centered on each run's step-0 eval and are in
units of the initial policy's gold std (SCIENCE.md sec. 4); KL is the exact
sequence-summed KL to the initial policy, in nats.

Per-run definitions:

- **over-optimized**: gold fell by at least `OVEROPT_MIN_DROP` from its peak to
  the final eval, AND the proxy at the final eval is above the proxy at the
  gold peak by more than `PROXY_RISE_MIN` (Gao et al.: gold peaks while the
  proxy keeps rising). Needs >= `MIN_EVALS` evals, else undecided.
- **KL-stable**: KL growth over the last half of the run is bounded,
  KL(final) <= `KL_GROWTH_MAX_RATIO` * KL(final_step / 2) (linear growth from
  0 gives 2, a plateau gives 1) OR it grew by at most `KL_GROWTH_ABS_TOL`
  nats; AND the run is not over-optimized.

Majority rule (used by C2, C3, C6): among decided runs, a fraction
>= 0.5 + `MAJORITY_MARGIN` is a majority "yes", <= 0.5 - `MAJORITY_MARGIN` a
majority "no"; in between, or with fewer than `MIN_RUNS` runs, inconclusive.

Runs count whatever their MLflow status (a diverged, FAILED run is evidence
too); the evidence says how many were not FINISHED.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.transforms import ONLINE_PREF_ALGOS, ONLINE_RL_ALGOS
from rlhf_sweeps import metrics as M

OVEROPT_MIN_DROP = 0.1  # gold std units, peak - final
PROXY_RISE_MIN = 0.0  # proxy(final) - proxy(at gold peak) must exceed this
MIN_EVALS = 3  # evals (incl. step 0) a run needs for a peak/drop to mean anything
MIN_RUNS = 2  # runs a claim needs before it can be more than inconclusive
MAJORITY_MARGIN = 0.1  # majority = fraction >= 0.6; minority = fraction <= 0.4
KL_GROWTH_MAX_RATIO = 1.5  # KL(final) / KL(half-way) above this = unbounded growth
KL_GROWTH_ABS_TOL = 0.1  # nats; growth this small counts as bounded whatever the ratio
C4_MIN_COEFS = 3  # distinct entropy coefficients for a rank correlation
C4_MIN_RHO = 0.5  # |Spearman rho| that counts as a relationship
WIN_MARGIN = 0.05  # gold win rate vs the initial policy above 0.5 + this = "works"
C7_MIN_R2 = 0.8  # median R^2 of the RL form at or above this: the form fits
C7_MAX_R2_CONTRA = 0.5  # median R^2 below this: the form does not fit
C7_MIN_GOLD_RANGE = 0.1  # gold std; runs whose gold moved less are noise to a fit, left out

ENTROPY_REG, KL_REG = "entropy", "kl"
SIMPO, ONLINE_SIMPO = "simpo", "online_simpo"
SUPPORTED, CONTRADICTED, INCONCLUSIVE, NO_DATA = "supported", "contradicted", "inconclusive", "no data"

STATEMENTS = {
    "C2": "Maximum-entropy online RL over-optimizes the reward model; KL to the initial policy is unstable.",
    "C3": "KL-constrained online RL stays stable under the same conditions.",
    "C4": "A larger entropy coefficient goes with more over-optimization, not less.",
    "C5": "SimPO works offline without a reference model (beats the SFT policy on gold).",
    "C6": "It is the offline data that saves SimPO: online SimPO (on-policy pairs judged by the proxy) does worse.",
    "C7": "Gao et al.'s RL functional form R(d) = d(a - b ln d) fits the gold-vs-sqrt(KL) curves.",
}
_MAJ = f">= {0.5 + MAJORITY_MARGIN:.0%}"
_MIN = f"<= {0.5 - MAJORITY_MARGIN:.0%}"
_OVEROPT = (
    f"over-optimized = gold fell >= {OVEROPT_MIN_DROP} gold-std from its peak to the final eval "
    f"and proxy rose (> {PROXY_RISE_MIN}) after the gold peak (runs with >= {MIN_EVALS} evals)"
)
_STABLE = (
    f"KL-stable = KL(final) <= {KL_GROWTH_MAX_RATIO} x KL(half-way) or grew <= {KL_GROWTH_ABS_TOL} nats "
    "over the last half, and not over-optimized"
)
RULES = {
    "C2": f"{_OVEROPT}. Supported if {_MAJ} of online entropy-regularized runs over-optimize AND their median final KL "
    f"exceeds the KL-regularized runs'; contradicted if {_MIN} over-optimize, or a majority does but their final KL "
    f"does not exceed the KL runs'; else inconclusive (also with < {MIN_RUNS} runs or no KL runs to compare).",
    "C3": f"{_STABLE}. Supported if {_MAJ} of online KL-regularized runs are KL-stable; contradicted if {_MIN}; "
    f"else inconclusive (also with < {MIN_RUNS} runs).",
    "C4": f"Online entropy runs, per distinct coefficient: median fall from gold peak (peak - final) and median final "
    f"proxy-gold gap; Spearman rho of each against the coefficient over >= {C4_MIN_COEFS} coefficients. Supported if "
    f"both rho >= {C4_MIN_RHO}; contradicted if both rho <= -{C4_MIN_RHO}; else inconclusive.",
    "C5": f"SimPO runs' final eval gold win rate vs the initial policy: supported if the median >= {0.5 + WIN_MARGIN}; "
    f"contradicted if the median <= 0.5; else inconclusive (also with < {MIN_RUNS} runs).",
    "C6": f"Supported if median final gold win rate of SimPO minus online SimPO >= {WIN_MARGIN} AND {_MAJ} of online "
    f"SimPO runs over-optimize; contradicted if the difference < {WIN_MARGIN} AND {_MIN} of online SimPO runs "
    f"over-optimize; else inconclusive (also with < {MIN_RUNS} runs of either).",
    "C7": f"Per-run least-squares fit of R(d) = d(a - b ln d) to (sqrt(KL), gold) on online runs whose gold moved "
    f">= {C7_MIN_GOLD_RANGE}: supported if the median R^2 >= {C7_MIN_R2}; contradicted if < {C7_MAX_R2_CONTRA}; "
    f"else inconclusive (also with < {MIN_RUNS} fitted runs).",
}
COLUMNS = ("claim", "statement", "verdict", "evidence", "rule")


# --- per-run flags ----------------------------------------------------------------


def overoptimized(summary: pd.DataFrame) -> pd.Series:
    """True/False per run, <NA> where the run has too few evals to tell."""
    flag = (-summary["drop"] >= OVEROPT_MIN_DROP) & (summary["proxy_rise"] > PROXY_RISE_MIN)
    decided = (summary["n_evals"] >= MIN_EVALS) & summary["drop"].notna() & summary["proxy_rise"].notna()
    return flag.astype("boolean").where(decided, pd.NA)


def kl_stable(summary: pd.DataFrame) -> pd.Series:
    """True/False per run, <NA> where KL or the over-optimization flag is undecided."""
    growth = summary["final_kl"] - summary["mid_kl"]
    bounded = (summary["kl_growth_ratio"] <= KL_GROWTH_MAX_RATIO) | (growth <= KL_GROWTH_ABS_TOL)
    over = overoptimized(summary)
    decided = over.notna() & summary["final_kl"].notna() & summary["mid_kl"].notna()
    return (bounded & ~over.fillna(False)).astype("boolean").where(decided, pd.NA)


def flag_runs(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.assign(overoptimized=overoptimized(summary), kl_stable=kl_stable(summary))


# --- helpers -------------------------------------------------------------------------


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x + 0.0:.3g}"  # no "-0"


def _majority(flags: pd.Series) -> tuple[str | None, float, int]:
    """('yes'|'no'|None, fraction yes, n decided)."""
    flags = flags.dropna().astype(bool)
    n = len(flags)
    if n == 0:
        return None, np.nan, 0
    frac = float(flags.mean())
    if n < MIN_RUNS:
        return None, frac, n
    if frac >= 0.5 + MAJORITY_MARGIN:
        return "yes", frac, n
    if frac <= 0.5 - MAJORITY_MARGIN:
        return "no", frac, n
    return None, frac, n


def _unfinished(part: pd.DataFrame) -> str:
    k = int((part["status"] != "FINISHED").sum()) if "status" in part else 0
    return f"; {k} not FINISHED" if k else ""


def _online(summary: pd.DataFrame, regularizer: str) -> pd.DataFrame:
    return summary[summary[M.PARAM_ALGO].isin(ONLINE_RL_ALGOS) & (summary[M.PARAM_REGULARIZER] == regularizer)]


def _row(claim: str, verdict: str, evidence: str) -> dict:
    return {
        "claim": claim,
        "statement": STATEMENTS[claim],
        "verdict": verdict,
        "evidence": evidence,
        "rule": RULES[claim],
    }


def _spearman(x: pd.Series, y: pd.Series) -> float:
    ok = x.notna() & y.notna()
    if ok.sum() < 2 or x[ok].nunique() < 2 or y[ok].nunique() < 2:
        return np.nan
    return float(x[ok].rank().corr(y[ok].rank()))


# --- claims ----------------------------------------------------------------------------


def c2(s: pd.DataFrame) -> dict:
    ent, kl = _online(s, ENTROPY_REG), _online(s, KL_REG)
    if ent.empty:
        return _row("C2", NO_DATA, "no online entropy-regularized run with gold, proxy and KL evals")
    if ent["overoptimized"].isna().all():
        return _row("C2", INCONCLUSIVE, f"{len(ent)} entropy runs, none with >= {MIN_EVALS} gold/proxy evals")
    ent = ent[ent["overoptimized"].notna()]
    maj, frac, n = _majority(ent["overoptimized"])
    ev = (
        f"entropy runs (n={n}{_unfinished(ent)}): {int(round(frac * n))}/{n} over-optimized; gold peaked at step "
        f"{_fmt(ent['peak_step'].median())} (median, KL {_fmt(ent['peak_kl'].median())}) then fell by "
        f"{_fmt(-ent['drop'].median())} while proxy rose by {_fmt(ent['proxy_rise'].median())}; "
        f"median final KL {_fmt(ent['final_kl'].median())}"
    )
    kl_final = kl["final_kl"].dropna()
    ev += (
        f" vs {_fmt(kl_final.median())} for KL runs (n={len(kl_final)})" if len(kl_final) else "; no KL runs to compare"
    )
    if maj == "no":
        return _row("C2", CONTRADICTED, ev)
    if maj is None or kl_final.empty:
        return _row("C2", INCONCLUSIVE, ev)
    higher = ent["final_kl"].median() > kl_final.median()
    return _row("C2", SUPPORTED if higher else CONTRADICTED, ev)


def c3(s: pd.DataFrame) -> dict:
    kl = _online(s, KL_REG)
    if kl.empty:
        return _row("C3", NO_DATA, "no online KL-regularized run with gold, proxy and KL evals")
    if kl["kl_stable"].isna().all():
        return _row("C3", INCONCLUSIVE, f"{len(kl)} KL runs, none with >= {MIN_EVALS} gold/proxy/KL evals")
    kl = kl[kl["kl_stable"].notna()]
    maj, frac, n = _majority(kl["kl_stable"])
    ev = (
        f"KL runs (n={n}{_unfinished(kl)}): {int(round(frac * n))}/{n} KL-stable; "
        f"{int(kl['overoptimized'].astype(bool).sum())} over-optimized; median KL(final)/KL(half-way) "
        f"{_fmt(kl['kl_growth_ratio'].median())}, median final KL {_fmt(kl['final_kl'].median())}, "
        f"median fall from gold peak {_fmt(-kl['drop'].median())}"
    )
    verdict = {"yes": SUPPORTED, "no": CONTRADICTED}.get(maj, INCONCLUSIVE)
    return _row("C3", verdict, ev)


def c4(s: pd.DataFrame) -> dict:
    ent = _online(s, ENTROPY_REG)
    ent = ent[ent["drop"].notna() & ent[M.PARAM_COEF].notna()]
    if ent.empty:
        return _row("C4", NO_DATA, "no online entropy-regularized run with a coefficient and gold evals")
    per = ent.assign(fall=-ent["drop"]).groupby(M.PARAM_COEF)[["fall", "final_gap"]].median()
    n_coef = len(per)
    if n_coef < C4_MIN_COEFS:
        return _row(
            "C4", INCONCLUSIVE, f"{n_coef} distinct entropy coefficient(s) ({len(ent)} runs); need >= {C4_MIN_COEFS}"
        )
    coefs = per.index.to_series()
    rho_fall, rho_gap = _spearman(coefs, per["fall"]), _spearman(coefs, per["final_gap"])
    pairs = ", ".join(f"{c:g}: {_fmt(f)}" for c, f in per["fall"].items())
    ev = (
        f"{len(ent)} entropy runs over {n_coef} coefficients: Spearman rho(coef, fall from peak) = {_fmt(rho_fall)}, "
        f"rho(coef, final gap) = {_fmt(rho_gap)}; median fall per coef {{{pairs}}}"
    )
    if rho_fall >= C4_MIN_RHO and rho_gap >= C4_MIN_RHO:
        return _row("C4", SUPPORTED, ev)
    if rho_fall <= -C4_MIN_RHO and rho_gap <= -C4_MIN_RHO:
        return _row("C4", CONTRADICTED, ev)
    return _row("C4", INCONCLUSIVE, ev)


def _win(s: pd.DataFrame, algo: str) -> pd.DataFrame:
    part = s[s[M.PARAM_ALGO] == algo]
    return part[part["final_win_rate"].notna()]


def c5(s: pd.DataFrame) -> dict:
    sim = _win(s, SIMPO)
    if sim.empty:
        return _row("C5", NO_DATA, "no SimPO run with eval gold win rate")
    med = sim["final_win_rate"].median()
    ev = (
        f"SimPO runs (n={len(sim)}{_unfinished(sim)}): median final gold win rate {_fmt(med)} "
        f"(range {_fmt(sim['final_win_rate'].min())}-{_fmt(sim['final_win_rate'].max())}), "
        f"median final gold {_fmt(sim['final_gold'].median())}, final KL {_fmt(sim['final_kl'].median())}"
    )
    if len(sim) < MIN_RUNS:
        return _row("C5", INCONCLUSIVE, ev)
    if med >= 0.5 + WIN_MARGIN:
        return _row("C5", SUPPORTED, ev)
    if med <= 0.5:
        return _row("C5", CONTRADICTED, ev)
    return _row("C5", INCONCLUSIVE, ev)


def c6(s: pd.DataFrame) -> dict:
    off, on = _win(s, SIMPO), _win(s, ONLINE_SIMPO)
    on = on[on["overoptimized"].notna()]
    if off.empty or on.empty:
        return _row(
            "C6", NO_DATA, f"SimPO runs with win rate: {len(off)}; online SimPO runs with win rate and evals: {len(on)}"
        )
    diff = off["final_win_rate"].median() - on["final_win_rate"].median()
    maj, frac, n = _majority(on["overoptimized"])
    ev = (
        f"median final gold win rate SimPO {_fmt(off['final_win_rate'].median())} (n={len(off)}) vs online SimPO "
        f"{_fmt(on['final_win_rate'].median())} (n={len(on)}{_unfinished(on)}), difference {_fmt(diff)}; "
        f"{int(round(frac * n))}/{n} online SimPO runs over-optimized (median fall from peak "
        f"{_fmt(-on['drop'].median())} vs {_fmt(-off['drop'].median())} offline)"
    )
    if len(off) < MIN_RUNS or len(on) < MIN_RUNS:
        return _row("C6", INCONCLUSIVE, ev)
    if diff >= WIN_MARGIN and maj == "yes":
        return _row("C6", SUPPORTED, ev)
    if diff < WIN_MARGIN and maj == "no":
        return _row("C6", CONTRADICTED, ev)
    return _row("C6", INCONCLUSIVE, ev)


def c7(s: pd.DataFrame, run_fits: pd.DataFrame, bon_fits: pd.DataFrame | None = None) -> dict:
    online = s[s[M.PARAM_ALGO].isin((*ONLINE_RL_ALGOS, *ONLINE_PREF_ALGOS))]
    moved = online[online["gold_range"] >= C7_MIN_GOLD_RANGE]["run_id"]
    fits = run_fits[run_fits["run_id"].isin(moved) & run_fits["r2"].notna()] if not run_fits.empty else run_fits
    if fits.empty:
        n_still = len(online) - len(moved)
        return _row(
            "C7", NO_DATA, f"no online run with a fit whose gold moved >= {C7_MIN_GOLD_RANGE} ({n_still} did not move)"
        )
    med = fits["r2"].median()
    ev = (
        f"RL-form fits on {len(fits)} online runs: median R^2 {_fmt(med)} (range {_fmt(fits['r2'].min())}-"
        f"{_fmt(fits['r2'].max())}); {int((fits['b'] > 0).sum())} with a peak, "
        f"median d* {_fmt(fits['d_star'].median())}"
    )
    if len(online) > len(moved):
        ev += f"; {len(online) - len(moved)} runs left out (gold moved < {C7_MIN_GOLD_RANGE})"
    if bon_fits is not None and not bon_fits.empty and bon_fits["r2"].notna().any():
        ev += f"; best-of-n form R^2 {_fmt(bon_fits['r2'].median())}"
    if len(fits) < MIN_RUNS:
        return _row("C7", INCONCLUSIVE, ev)
    if med >= C7_MIN_R2:
        return _row("C7", SUPPORTED, ev)
    if med < C7_MAX_R2_CONTRA:
        return _row("C7", CONTRADICTED, ev)
    return _row("C7", INCONCLUSIVE, ev)


def judge(summary: pd.DataFrame, run_fits: pd.DataFrame, bon_fits: pd.DataFrame | None = None) -> pd.DataFrame:
    """The verdict table: one row per claim C2..C7."""
    s = flag_runs(summary) if "overoptimized" not in summary else summary
    rows = [c2(s), c3(s), c4(s), c5(s), c6(s), c7(s, run_fits, bon_fits)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_markdown(verdicts: pd.DataFrame) -> str:
    """A GitHub markdown table (claim | verdict | evidence), to paste into the README."""

    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| claim | statement | verdict | evidence |", "|---|---|---|---|"]
    for r in verdicts.itertuples(index=False):
        lines.append(f"| {r.claim} | {cell(r.statement)} | **{r.verdict}** | {cell(r.evidence)} |")
    lines += ["", "Rules:", ""] + [f"- **{r.claim}**: {cell(r.rule)}" for r in verdicts.itertuples(index=False)]
    return "\n".join(lines) + "\n"
