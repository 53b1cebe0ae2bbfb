"""Claims C2-C7 of docs/science.md §7 (C2 split into C2a/C2b, §8), judged by noise-aware rules (§9).

Every rule states the statistic it tests and the error it accepts; every
threshold is a constant below and `RULES` is generated from them. A verdict is
`supported`, `contradicted`, `inconclusive` (data exist but do not decide under
the rule) or `no data` (no run of the kind the claim needs). The evidence
column states the numbers, with ± one standard error and the range over seeds.

Units: gold and proxy are re-centered on each run's step-0 eval, in units of
the initial policy's gold std (§4); KL is the exact sequence-summed KL to the
initial policy, in nats.

The noise model
---------------
Each eval logs the standard error of its gold and proxy means
(`eval/gold_reward_se`, `eval/proxy_reward_se`: analytic, clustered by
prompt). A *unit* is one run or one condition (its seeds averaged per eval).
Its level over a *window* of `WINDOW` consecutive evals is the mean of its
curve over them; a difference of two window levels (a *contrast*) has

- a noise SE from the logged SEs: sqrt(sum_t c_t^2 se_t^2), with per-eval
  SE of the seed mean sqrt(sum_i se_i^2) / n (evals treated as independent:
  conservative when consecutive evals share prompts and seeds, §4 "Noise");
- a seed SE: the std over seeds of each seed's own contrast, / sqrt(n) (n >= 2);

and the rule uses the larger of the two (`se`). z = contrast / se.

- **fall** (gold fell from its peak): the peak window is the window of
  maximal mean level, the final window the last `WINDOW` evals;
  fall = peak level - final level (>= 0). Taking the maximum over windows
  is still biased upward on a plateau, so the threshold `FALL_Z` is not a
  nominal 1.645 but calibrated on null curves (`python -m analysis.calibrate`:
  false-positive rate <= 0.05 at the study's design).
- **over-optimized**: fall z >= `FALL_Z` AND the proxy rose from the gold
  peak window to the final window with z >= `RISE_Z` (Gao et al.: gold peaks
  while the proxy keeps rising).
- **KL-bounded** (`kl_bound`): KL stays within `KL_BUDGET` nats now and
  over one more run length at its late slope. See its docstring for why.
- **gain** (C5, C6): final level minus the step-0 eval.

Seeds first pool into conditions (`analysis.conditions`: every param but the
seed equal); a claim is decided over conditions by `MAJORITY`, and only over
proxy-trained runs, except C2a/C2b which read the `reward=gold` controls.
Runs count whatever their MLflow status; the evidence says how many were not
FINISHED.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import conditions as C
from analysis.transforms import (
    CONDITION,
    CONTENT,
    D,
    FLUENCY,
    GOLD,
    GOLD_SE,
    KL,
    ONLINE_PREF_ALGOS,
    ONLINE_RL_ALGOS,
    PROXY,
    PROXY_SE,
    TWIN,
    WIN_RATE,
    method_labels,
)
from rlhf_sweeps import metrics as M
from rlhf_sweeps.config import ENTROPY_REG, KL_REG

# --- noise model ------------------------------------------------------------------------------
WINDOW = 3  # evals averaged into a level: a 3-eval mean has 1/sqrt(3) of one eval's noise
MIN_EVALS = 2 * WINDOW  # a unit needs a peak window and a final window that can differ
# Per-eval gold/proxy SE (gold-std units) assumed for a run that logged none (runs before the
# SE metrics): the typical logged value of the embedded study. If the run's own curve says its
# noise is larger (sqrt(mean(second differences^2) / 6), which curvature only inflates), that is
# used instead; the evidence names the source.
DEFAULT_SE = 0.09
# fall / SE at or above this: gold fell beyond noise. Not 1.645: the peak window is the best of
# ~9, and on a flat curve the 95th percentile of that z is ~2.3 (python -m analysis.calibrate).
FALL_Z = 2.5
RISE_Z = 1.645  # proxy rise / SE at or above this: the proxy rose (one-sided 5 %)
EXPLOIT_Z = 1.645  # (proxy-trained fall - oracle fall) / SE at or above this: exploitation (C2a)
GAIN_Z = 1.645  # |gain| / SE at or above this: gold above (below) the SFT policy beyond noise (C5, C6)
# --- KL boundedness (kl_bound) --------------------------------------------------------------------
KL_BUDGET = 20.0  # nats; beyond every KL at which gold still peaked in the first embedded sweep (7.5-14)
KL_LATE_EVALS = 4  # the late slope is a least-squares line through the last 4 evals' mean KL
KL_HORIZON = 1.0  # the late slope is projected this many run lengths past the last eval
# --- aggregation over conditions ----------------------------------------------------------------
MAJORITY = 0.6  # a fraction >= 0.6 of conditions is a majority "yes", <= 0.4 a majority "no"
MIN_CONDITIONS = 2  # a claim about a method needs >= 2 of its conditions (settings)
# --- C4: seed-aware trend ---------------------------------------------------------------------------
C4_MIN_COEFS = 3  # distinct entropy coefficients within a stratum
C4_MIN_SEEDS = 2  # runs per coefficient (seeds), so the test sees seed noise
C4_ALPHA = 0.05  # two-sided level of the stratified permutation test
C4_N_PERM = 2000  # permutations (fixed seed: the p-value is reproducible)
# --- C7: Gao et al.'s RL form -------------------------------------------------------------------
C7_MIN_R2 = 0.8  # necessary, never sufficient
C7_DSTAR_FACTOR = 1.5  # fitted peak d* within [d_min / 1.5, d_max * 1.5] of the run's observed sqrt(KL)

SIMPO, ONLINE_SIMPO = "simpo", "online_simpo"
SUPPORTED, CONTRADICTED, INCONCLUSIVE, NO_DATA = "supported", "contradicted", "inconclusive", "no data"
EXPLOIT, DRIFT, NEITHER = "exploitation", "drift", "neither"  # per-pair attribution calls

STATEMENTS = {
    "C2": "Maximum-entropy online RL over-optimizes the reward model; KL to the initial policy is unstable.",
    "C2a": "MaxEnt's gold decline is exploitation of the reward model (it exceeds the oracle-trained twin's).",
    "C2b": "The MaxEnt objective itself drifts off gold (oracle-trained entropy runs lose gold).",
    "C3": "KL-constrained online RL stays stable under the same conditions.",
    "C4": "A larger entropy coefficient goes with more over-optimization, not less.",
    "C5": "SimPO works offline without a reference model (beats the SFT policy on gold).",
    "C6": "It is the offline data that saves SimPO: online SimPO (on-policy pairs judged by the proxy) does worse.",
    "C7": "Gao et al.'s RL functional form R(d) = d(a - b ln d) fits the gold-vs-sqrt(KL) curves.",
}
CLAIMS = tuple(STATEMENTS)
COLUMNS = ("claim", "statement", "verdict", "evidence", "runs", "seeds", "rule")

_MAJ, _MIN = f">= {MAJORITY:.0%}", f"<= {1 - MAJORITY:.0%}"
_SE = (
    f"SE = max(noise SE from the logged per-eval SEs, seed SE = std over seeds / sqrt(n)); runs without "
    f"logged SEs use {DEFAULT_SE} or their curve's larger second-difference estimate"
)
_FALL = (
    f"fall = gold level in the peak window ({WINDOW} consecutive evals with the highest mean) minus the "
    f"level in the last {WINDOW} evals, seeds averaged per eval; gold fell iff fall/SE >= {FALL_Z} ({_SE})"
)
_OVER = (
    f"over-optimized = gold fell AND the proxy rose from the gold-peak window to the final window with "
    f"z >= {RISE_Z} (units with >= {MIN_EVALS} evals)"
)
_KL = (
    f"KL-bounded = KL at the last eval (line through the last {KL_LATE_EVALS} evals' mean KL) plus its late "
    f"slope (if > 0) projected {KL_HORIZON:g} run length(s) ahead stays <= {KL_BUDGET:g} nats"
)
_GAIN = f"gain = gold level in the last {WINDOW} evals minus the step-0 eval; beyond noise iff |gain|/SE >= {GAIN_Z}"
_PER_COND = f"decided per condition (seeds pooled); a majority is {_MAJ} of >= {MIN_CONDITIONS} conditions"
RULES = {
    "C2": f"{_FALL}. {_OVER}. {_KL}. Online entropy conditions trained on the proxy, {_PER_COND}. Supported if "
    f"{_MAJ} over-optimize AND {_MAJ} are not KL-bounded; contradicted if {_MIN} over-optimize or {_MIN} are not "
    "KL-bounded; else inconclusive.",
    "C2a": f"{_FALL}. Per proxy-trained entropy condition and its reward=gold twin (same params but reward and "
    f"seed): exploitation = fall(proxy-trained) - fall(oracle), SE = sqrt(SE_p^2 + SE_o^2); the pair is "
    f"'exploitation' if the proxy-trained gold fell and exploitation/SE >= {EXPLOIT_Z}, 'drift' if both fell "
    "and exploitation/SE is below that, else 'neither'. "
    f"Supported if {_MAJ} of >= {MIN_CONDITIONS} pairs are exploitation; contradicted if {_MAJ} are drift; else "
    "inconclusive; no data without reward=gold controls.",
    "C2b": f"{_FALL}. Online entropy conditions trained on gold (reward=gold), {_PER_COND}. Supported if {_MAJ} "
    f"lose gold (fall beyond noise); contradicted if {_MIN} do; else inconclusive; no data without the controls.",
    "C3": f"{_FALL}. {_OVER}. {_KL}. Online KL conditions trained on the proxy, {_PER_COND}. Stable = KL-bounded "
    f"AND not over-optimized. Supported if {_MAJ} are stable; contradicted if {_MIN} are; else inconclusive.",
    "C4": f"Per run (online entropy, proxy-trained): fall as above. Spearman rho(coef, fall) within each stratum "
    f"(runs equal in every param but coef and seed), averaged weighted by runs; p from {C4_N_PERM} permutations "
    f"of the coefficients within strata (two-sided). Needs >= {C4_MIN_COEFS} coefficients with >= {C4_MIN_SEEDS} "
    f"runs each. Supported if rho > 0 and p <= {C4_ALPHA}; contradicted if rho < 0 and p <= {C4_ALPHA}; else "
    "inconclusive.",
    "C5": f"{_GAIN}. Offline SimPO conditions, {_PER_COND}. Supported if {_MAJ} gain gold beyond noise; "
    f"contradicted if {_MAJ} lose gold beyond noise; else inconclusive.",
    "C6": f"{_GAIN}; {_OVER}. Difference of the mean gain over offline SimPO conditions and over online SimPO "
    f"conditions, SE from theirs; supported if difference/SE >= {GAIN_Z} AND {_MAJ} of online SimPO conditions "
    f"over-optimize; contradicted if difference/SE <= -{GAIN_Z}, or < {GAIN_Z} with {_MIN} over-optimizing; else "
    "inconclusive.",
    "C7": f"Per-run least-squares fit of R(d) = d(a - b ln d) to (sqrt(KL), gold) on the runs of over-optimized "
    f"online proxy-trained conditions. A fit confirms the form iff b > 0, its peak d* = exp(a/b - 1) lies within "
    f"[d_min / {C7_DSTAR_FACTOR:g}, d_max x {C7_DSTAR_FACTOR:g}] of the run's observed sqrt(KL) after step 0, "
    f"and R^2 >= {C7_MIN_R2} (R^2 alone never suffices). Supported if {_MAJ} of >= {MIN_CONDITIONS} fits "
    f"confirm; contradicted if {_MIN} do; else inconclusive.",
}


# --- the noise model on arrays (runs x evals); calibrate.py calls these same functions ---------------


@dataclass(frozen=True)
class Contrast:
    """A difference of window levels of one unit: value, its SEs, z and the range over seeds."""

    value: float
    se_noise: float
    se_seeds: float  # NaN with < 2 complete runs
    se: float  # the larger of the two: what rules divide by
    z: float
    n_runs: int
    lo: float  # min over seeds of each seed's own contrast
    hi: float


def mean_curve(y: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Seed mean per eval and its noise SE sqrt(sum_i se_i^2) / n (NaN where no run has the eval)."""
    have = np.isfinite(y)
    n = have.sum(0)
    denom = np.maximum(n, 1)
    m = np.where(n > 0, np.where(have, y, 0.0).sum(0) / denom, np.nan)
    s = np.where(n > 0, np.sqrt((np.where(have, se, 0.0) ** 2).sum(0)) / denom, np.nan)
    return m, s


def contrast(y: np.ndarray, se: np.ndarray, weights: np.ndarray) -> Contrast:
    """sum_t w_t * mean_t, with its noise SE, seed SE and seed range (`Contrast`)."""
    m, s = mean_curve(y, se)
    on = weights != 0
    value = float(np.sum(weights[on] * m[on]))
    se_noise = float(np.sqrt(np.sum((weights[on] * s[on]) ** 2)))
    complete = np.isfinite(y[:, on]).all(1)
    per_run = y[complete][:, on] @ weights[on]
    k = len(per_run)
    se_seeds = float(np.std(per_run, ddof=1) / np.sqrt(k)) if k >= 2 else np.nan
    se_all = float(np.nanmax([se_noise, se_seeds]))
    z = value / se_all if se_all > 0 else (0.0 if value == 0 else np.sign(value) * np.inf)
    lo, hi = (float(per_run.min()), float(per_run.max())) if k else (np.nan, np.nan)
    return Contrast(value, se_noise, se_seeds, se_all, float(z), int(y.shape[0]), lo, hi)


def windows(y: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(peak window, final window) as column indices; None with fewer than MIN_EVALS evals."""
    m, _ = mean_curve(y, se)
    cols = np.flatnonzero(np.isfinite(m))
    if len(cols) < MIN_EVALS:
        return None
    levels = np.convolve(m[cols], np.ones(WINDOW) / WINDOW, mode="valid")
    k = int(np.argmax(levels))  # first window of maximal level
    return cols[k : k + WINDOW], cols[-WINDOW:]


def _weights(n: int, plus, minus) -> np.ndarray:
    w = np.zeros(n)
    np.add.at(w, plus, 1.0 / len(plus))
    np.add.at(w, minus, -1.0 / len(minus))
    return w


def fall(y: np.ndarray, se: np.ndarray, win=None) -> Contrast | None:
    """Peak-window level minus final-window level (>= 0 for the unit's own windows)."""
    win = windows(y, se) if win is None else win
    return None if win is None else contrast(y, se, _weights(y.shape[1], win[0], win[1]))


def rise(y: np.ndarray, se: np.ndarray, win) -> Contrast | None:
    """Final-window level minus the level in the (gold) peak window."""
    return None if win is None else contrast(y, se, _weights(y.shape[1], win[1], win[0]))


def gain(y: np.ndarray, se: np.ndarray) -> Contrast | None:
    """Final-window level minus the first eval (step 0, the SFT policy)."""
    m, _ = mean_curve(y, se)
    cols = np.flatnonzero(np.isfinite(m))
    if len(cols) < WINDOW + 1:
        return None
    return contrast(y, se, _weights(y.shape[1], cols[-WINDOW:], cols[:1]))


def gold_fell(f: Contrast | None) -> bool | None:
    return None if f is None else bool(f.z >= FALL_Z)


def overoptimization(gold, gold_se, proxy, proxy_se) -> tuple[bool | None, Contrast | None, Contrast | None]:
    """(over-optimized?, gold fall, proxy rise over the same windows) of one unit."""
    win = windows(gold, gold_se)
    f = fall(gold, gold_se, win)
    r = rise(proxy, proxy_se, win) if proxy is not None else None
    if f is None or r is None or not np.isfinite(r.value):
        return None, f, r
    return bool(f.z >= FALL_Z and r.z >= RISE_Z), f, r


def exploitation(f_proxy: Contrast, f_oracle: Contrast) -> tuple[float, float, float]:
    """(fall under the proxy - fall under the oracle, its SE, z)."""
    value = f_proxy.value - f_oracle.value
    se = float(np.hypot(f_proxy.se, f_oracle.se))
    z = value / se if se > 0 else (0.0 if value == 0 else np.sign(value) * np.inf)
    return float(value), se, float(z)


def attribution_call(f_proxy: Contrast, f_oracle: Contrast) -> str:
    """'exploitation': the proxy-trained twin's gold fell (fall z >= FALL_Z) and by more than the oracle
    twin's (exploitation z >= EXPLOIT_Z); 'drift': both fell, by amounts within noise of each other;
    'neither': no decline under the proxy to attribute, or one the data cannot split.

    Requiring the proxy-trained fall first keeps the call calibrated when the oracle twin is still
    rising (its fall is then exactly 0 and cancels none of the max-over-windows bias)."""
    if not gold_fell(f_proxy):
        return NEITHER
    _, _, z = exploitation(f_proxy, f_oracle)
    if z >= EXPLOIT_Z:
        return EXPLOIT
    return DRIFT if gold_fell(f_oracle) else NEITHER


@dataclass(frozen=True)
class KLBound:
    kl_end: float  # KL at the last eval, from the late line
    slope: float  # nats per step, late line
    projected: float  # kl_end + max(slope, 0) * KL_HORIZON * run length
    bounded: bool | None


def kl_bound(steps: np.ndarray, kl: np.ndarray) -> KLBound:
    """Is KL bounded? KL at the end, and projected one more run length at its late slope, <= KL_BUDGET.

    Why this and not a growth ratio: a ratio KL(final)/KL(half-way) measures how fast KL is
    still converging, not where it is. It calls a run saturated near the uniform policy at
    ~98 nats "stable" (ratio ~1.2) and a KL-regularized run still approaching ~6 nats
    "unstable" (ratio ~1.6-2). What the claims are about is whether the regularizer keeps the
    policy near its reference. So: a budget in nats, `KL_BUDGET`, chosen beyond every KL at
    which gold still peaked in the first embedded sweep (7.5-14 nats, docs/embedded_sweep/
    peaks.csv) and far below the near-uniform plateau (~98 nats, ~4 nats per token); and a
    late-slope projection so a run that is still climbing fast toward the budget is not called
    bounded because the run stopped first. A slope fitted through the last `KL_LATE_EVALS`
    evals averages the eval noise of the exact KL. A slow linear growth that stays within the
    budget for another run length counts as bounded: the data cannot tell it from convergence.
    """
    steps, kl = np.asarray(steps, float), np.asarray(kl, float)
    ok = np.isfinite(kl) & np.isfinite(steps)
    steps, kl = steps[ok], kl[ok]
    if len(kl) < 2:
        return KLBound(np.nan, np.nan, np.nan, None)
    s, v = steps[-KL_LATE_EVALS:], kl[-KL_LATE_EVALS:]
    slope, intercept = np.polyfit(s, v, 1)
    end = float(intercept + slope * s[-1])
    projected = end + max(float(slope), 0.0) * KL_HORIZON * float(steps[-1] - steps[0])
    return KLBound(end, float(slope), float(projected), bool(max(end, projected) <= KL_BUDGET))


def trend(x, y, strata, n_perm: int = C4_N_PERM, seed: int = 0) -> tuple[float, float]:
    """Stratified Spearman trend test: (weighted mean within-stratum rho, two-sided permutation p).

    Seeds are replicates: each run is a point, and under the null (no trend) the coefficient
    labels are exchangeable among the runs of a stratum, so they are permuted within strata."""
    x, y, strata = np.asarray(x, float), np.asarray(y, float), np.asarray(strata)
    rng = np.random.default_rng(seed)
    parts = []
    for s in pd.unique(strata):
        idx = np.flatnonzero(strata == s)
        if len(idx) >= 3 and len(np.unique(x[idx])) >= 2 and len(np.unique(y[idx])) >= 2:
            rx = pd.Series(x[idx]).rank().to_numpy()
            ry = pd.Series(y[idx]).rank().to_numpy()
            parts.append((rx - rx.mean(), ry - ry.mean()))
    if not parts:
        return np.nan, np.nan
    total = sum(len(rx) for rx, _ in parts)

    def stat(perms: list[np.ndarray]) -> np.ndarray:
        out = 0.0
        for (rx, ry), p in zip(parts, perms, strict=True):
            ryp = ry[p]  # (n_perm, n) or (n,)
            num = (ryp * rx).sum(-1)
            out = out + len(rx) / total * num / np.sqrt((rx**2).sum() * (ry**2).sum())
        return out

    observed = float(stat([np.arange(len(rx)) for rx, _ in parts]))
    null = stat([np.argsort(rng.random((n_perm, len(rx))), axis=1) for rx, _ in parts])
    p = (1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (n_perm + 1)
    return observed, float(p)


def second_difference_se(y: np.ndarray) -> float:
    """Per-eval noise SD of one run's curve from its second differences: sqrt(mean(d2^2) / 6).

    For independent noise of SD s on a locally linear curve, each second difference has
    variance 6 s^2; curvature only adds, so this over- rather than under-states the noise."""
    y = y[np.isfinite(y)]
    if len(y) < 4:
        return np.nan
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    return float(np.sqrt(np.mean(d2**2) / 6.0))


# --- DataFrame -> arrays ------------------------------------------------------------------------------

LOGGED, DEFAULT, ESTIMATED = "logged", "default", "estimated from the curve"


def unit_arrays(part: pd.DataFrame, value: str, se_col: str | None):
    """(steps, values (runs x evals), SEs, SE sources) of one unit's eval rows."""
    steps = np.sort(part["step"].unique())
    wide = part.pivot_table(index="run_id", columns="step", values=value, aggfunc="last", dropna=False)
    wide = wide.reindex(columns=steps)
    y = wide.to_numpy(dtype=float, copy=True)
    if se_col is None or se_col not in part:
        return steps, y, np.zeros_like(y), set()
    se = part.pivot_table(index="run_id", columns="step", values=se_col, aggfunc="last", dropna=False)
    se = se.reindex(index=wide.index, columns=steps).to_numpy(dtype=float, copy=True)
    sources = set()
    for i in range(len(y)):
        logged = se[i][np.isfinite(se[i])]
        if len(logged):
            se[i] = np.where(np.isfinite(se[i]), se[i], np.median(logged))
            sources.add(LOGGED)
        else:
            est = second_difference_se(y[i])
            use_est = np.isfinite(est) and est > DEFAULT_SE
            se[i] = est if use_est else DEFAULT_SE
            sources.add(ESTIMATED if use_est else DEFAULT)
    return steps, y, se, sources


def _nan_stat(fn, x) -> float:
    x = np.asarray(x, float)
    return float(fn(x)) if np.isfinite(x).any() else np.nan


def _window_steps(steps, idx) -> str:
    return f"{steps[idx[0]]:g}-{steps[idx[-1]]:g}"


def unit_stats(part: pd.DataFrame) -> dict:
    """Everything the rules measure on one unit (a run, or the runs of one condition)."""
    steps, g, gse, sources = unit_arrays(part, GOLD, GOLD_SE)
    _, p, pse, psources = unit_arrays(part, PROXY, PROXY_SE)
    over, f, r = overoptimization(g, gse, p, pse)
    win = windows(g, gse)
    out = {
        "n_runs": int(len(g)),
        "n_evals": int(np.isfinite(mean_curve(g, gse)[0]).sum()),
        "se_source": ", ".join(sorted(sources | psources)) or "none",
        "gold_se": _nan_stat(np.nanmedian, mean_curve(g, gse)[1]),
        "overoptimized": over,
        "gold_fell": gold_fell(f),
    }
    for name, c in (("fall", f), ("rise", r), ("gain", gain(g, gse))):
        out.update(_contrast_cols(name, c))
    if win is not None:
        out["peak_window"], out["final_window"] = _window_steps(steps, win[0]), _window_steps(steps, win[1])
    for part_col in (CONTENT, FLUENCY):
        if part_col in part and part[part_col].notna().any():
            _, y, s, _ = unit_arrays(part, part_col, None)
            c = fall(y, s, win) if win is not None else None
            out[f"{part_col}_fall"] = c.value if c else np.nan
    if KL in part:
        _, k, ks, _ = unit_arrays(part, KL, None)
        km, _ = mean_curve(k, ks)
        b = kl_bound(steps, km)
        out.update(kl_end=b.kl_end, kl_slope=b.slope, kl_projected=b.projected, kl_bounded=b.bounded)
        per_run = [kl_bound(steps, row).projected for row in k]
        out["kl_projected_lo"], out["kl_projected_hi"] = _nan_stat(np.nanmin, per_run), _nan_stat(np.nanmax, per_run)
    if WIN_RATE in part:
        last = part.sort_values("step").dropna(subset=[WIN_RATE]).groupby("run_id")[WIN_RATE].last()
        out["final_win_rate"] = float(last.mean()) if len(last) else np.nan
    return out


def _contrast_cols(name: str, c: Contrast | None) -> dict:
    if c is None:
        return {name: np.nan, f"{name}_se": np.nan, f"{name}_z": np.nan, f"{name}_lo": np.nan, f"{name}_hi": np.nan}
    return {name: c.value, f"{name}_se": c.se, f"{name}_z": c.z, f"{name}_lo": c.lo, f"{name}_hi": c.hi}


STAT_COLUMNS = (
    "n_evals",
    "se_source",
    "gold_se",
    "peak_window",
    "final_window",
    "fall",
    "fall_se",
    "fall_z",
    "fall_lo",
    "fall_hi",
    "rise",
    "rise_se",
    "rise_z",
    "gain",
    "gain_se",
    "gain_z",
    "content_fall",
    "fluency_fall",
    "kl_end",
    "kl_slope",
    "kl_projected",
    "kl_projected_lo",
    "kl_projected_hi",
    "kl_bounded",
    "gold_fell",
    "overoptimized",
)
FLAG_COLUMNS = ("gold_fell", "overoptimized", "kl_bounded")


def _frame(rows: list[dict], lead: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(rows)
    for col in (*lead, "n_runs", *STAT_COLUMNS):
        if col not in out:
            out[col] = np.nan
    for col in FLAG_COLUMNS:
        out[col] = out[col].astype("boolean")
    return out


def flag_runs(summary: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The per-run summary + the rules' statistics and flags for each run alone (one seed)."""
    stats = {rid: unit_stats(one) for rid, one in table.groupby("run_id", sort=False)}
    rows = [stats.get(rid, {}) for rid in summary["run_id"]]
    flags = _frame(rows, []).drop(columns=["n_runs"]).set_axis(summary.index)
    return pd.concat([summary.drop(columns=[c for c in flags.columns if c in summary]), flags], axis=1)


CONDITION_KEYS = (M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_COEF, M.PARAM_LR, M.PARAM_REWARD, TWIN)


def condition_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per condition: its keys, runs, seeds, and the rules' statistics on the seed mean."""
    rows = []
    if CONDITION not in table:
        table = table.assign(**{CONDITION: table["run_id"], TWIN: table["run_id"]})
    for cond, part in table.groupby(CONDITION, sort=True, dropna=False):
        first = part.iloc[0]
        row = {CONDITION: cond, **{k: first.get(k, np.nan) for k in CONDITION_KEYS}}
        if pd.isna(row[M.PARAM_REWARD]):
            row[M.PARAM_REWARD] = C.DEFAULT_REWARD
        runs = part.drop_duplicates("run_id")
        seeds = sorted(runs[M.PARAM_SEED].dropna().astype(int).tolist()) if M.PARAM_SEED in runs else []
        row["seeds"] = ",".join(str(s) for s in seeds)
        row["unfinished"] = int((runs["status"] != "FINISHED").sum()) if "status" in runs else 0
        row.update(unit_stats(part))
        rows.append(row)
    out = _frame(rows, [CONDITION, *CONDITION_KEYS, "seeds", "unfinished"])
    out.insert(1, "method", method_labels(out) if not out.empty else pd.Series(dtype=str))
    return out


ATTRIBUTION_COLUMNS = (
    CONDITION,
    M.PARAM_REGULARIZER,
    M.PARAM_COEF,
    M.PARAM_LR,
    "proxy_runs",
    "proxy_fall",
    "proxy_fall_se",
    "proxy_fall_lo",
    "proxy_fall_hi",
    "proxy_content_fall",
    "proxy_fluency_fall",
    "oracle",
    "oracle_runs",
    "oracle_fall",
    "oracle_fall_se",
    "oracle_fall_z",
    "oracle_fall_lo",
    "oracle_fall_hi",
    "oracle_content_fall",
    "oracle_fluency_fall",
    "exploitation",
    "exploitation_se",
    "exploitation_z",
    "call",
    "zero",
    "zero_fall",
    "zero_fall_se",
)


def attribution(conds: pd.DataFrame) -> pd.DataFrame:
    """Each online proxy-trained condition with a reward=gold and/or reward=zero twin: falls and their split.

    exploitation = fall under the proxy - fall under the oracle (the part of the decline the
    reward model is to blame for); drift = fall under the oracle (the regularizer's and the
    optimizer's own)."""
    online = conds[conds[M.PARAM_ALGO].isin((*ONLINE_RL_ALGOS, *ONLINE_PREF_ALGOS))]
    rows = []
    for _, p in online[online[M.PARAM_REWARD] == C.PROXY].iterrows():
        twins = online[online[TWIN] == p[TWIN]]
        oracle = twins[twins[M.PARAM_REWARD] == C.GOLD_REWARD]
        zero = twins[twins[M.PARAM_REWARD] == C.ZERO_REWARD]
        if oracle.empty and zero.empty:
            continue
        row = {CONDITION: p[CONDITION], M.PARAM_REGULARIZER: p[M.PARAM_REGULARIZER]}
        row.update({M.PARAM_COEF: p[M.PARAM_COEF], M.PARAM_LR: p[M.PARAM_LR], "proxy_runs": p["n_runs"]})
        row.update({f"proxy_{k}": p[k] for k in ("fall", "fall_se", "fall_lo", "fall_hi", "content_fall")})
        row["proxy_fluency_fall"] = p["fluency_fall"]
        if not oracle.empty:
            o = oracle.iloc[0]
            row.update({"oracle": o[CONDITION], "oracle_runs": o["n_runs"]})
            for k in ("fall", "fall_se", "fall_z", "fall_lo", "fall_hi", "content_fall", "fluency_fall"):
                row[f"oracle_{k}"] = o[k]
            fp, fo = _as_contrast(p, "fall"), _as_contrast(o, "fall")
            if fp is not None and fo is not None:
                row["exploitation"], row["exploitation_se"], row["exploitation_z"] = exploitation(fp, fo)
                row["call"] = attribution_call(fp, fo)
        if not zero.empty:
            z = zero.iloc[0]
            row.update({"zero": z[CONDITION], "zero_fall": z["fall"], "zero_fall_se": z["fall_se"]})
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=list(ATTRIBUTION_COLUMNS))


def _as_contrast(row, name: str) -> Contrast | None:
    if pd.isna(row.get(name)):
        return None
    se, z, lo, hi = (row[f"{name}_{k}"] for k in ("se", "z", "lo", "hi"))
    return Contrast(row[name], np.nan, np.nan, se, z, 0, lo, hi)


# --- helpers -------------------------------------------------------------------------------------------


def _fmt(x) -> str:
    if x is None or x is pd.NA or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x + 0.0:.3g}"  # no "-0"


def fmt_pm(value, se) -> str:
    """'v ± se'; a fall of exactly 0 with SE 0 is gold's best window being its last, said so."""
    if value == 0 and se == 0:
        return "0 (best window = last window)"
    return f"{_fmt(value)} ± {_fmt(se)}"


def _pm(c: pd.Series | dict, name: str) -> str:
    """'v ± se (seeds lo to hi)' for one unit's contrast `name`."""
    out = fmt_pm(c[name], c[f"{name}_se"])
    lo, hi = c.get(f"{name}_lo"), c.get(f"{name}_hi")
    if c.get("n_runs", 1) > 1 and pd.notna(lo):
        out += f" (seeds {_fmt(lo)} to {_fmt(hi)})"
    return out


def _majority(flags: pd.Series) -> tuple[str | None, float, int]:
    """('yes'|'no'|None, fraction yes, n decided)."""
    flags = flags.dropna().astype(bool)
    n = len(flags)
    if n == 0:
        return None, np.nan, 0
    frac = float(flags.mean())
    if n < MIN_CONDITIONS:
        return None, frac, n
    if frac >= MAJORITY:
        return "yes", frac, n
    if frac <= 1 - MAJORITY:
        return "no", frac, n
    return None, frac, n


def _count(flags: pd.Series) -> str:
    flags = flags.dropna().astype(bool)
    return f"{int(flags.sum())}/{len(flags)}"


def _seeds(units: pd.DataFrame) -> str:
    n = units["n_runs"].dropna().astype(int) if "n_runs" in units and len(units) else pd.Series(dtype=int)
    if n.empty:
        return "n/a"
    lo, hi = int(n.min()), int(n.max())
    return f"{lo} per condition" if lo == hi else f"{lo}-{hi} per condition"


def _runs(units: pd.DataFrame) -> int:
    return int(units["n_runs"].fillna(0).sum()) if "n_runs" in units and len(units) else 0


def _scope(units: pd.DataFrame, what: str) -> str:
    k = len(units)
    unfinished = int(units["unfinished"].fillna(0).sum()) if "unfinished" in units else 0
    tail = f"; {unfinished} not FINISHED" if unfinished else ""
    return f"{k} {what} condition(s), {_runs(units)} runs, seeds {_seeds(units)}{tail}"


def _se_note(units: pd.DataFrame) -> str:
    src = sorted({s.strip() for v in units.get("se_source", pd.Series(dtype=str)).dropna() for s in str(v).split(",")})
    if not src or src == [LOGGED]:
        return ""
    return f"; SE source: {', '.join(src)} (default {DEFAULT_SE})"


def _online(conds: pd.DataFrame, regularizer: str, reward: str = C.PROXY) -> pd.DataFrame:
    return conds[
        conds[M.PARAM_ALGO].isin(ONLINE_RL_ALGOS)
        & (conds[M.PARAM_REGULARIZER] == regularizer)
        & (conds[M.PARAM_REWARD] == reward)
    ]


def _row(claim: str, verdict: str, evidence: str, units: pd.DataFrame | None = None, runs=None, seeds=None) -> dict:
    return {
        "claim": claim,
        "statement": STATEMENTS[claim],
        "verdict": verdict,
        "evidence": evidence,
        "runs": runs if runs is not None else (_runs(units) if units is not None else 0),
        "seeds": seeds if seeds is not None else (_seeds(units) if units is not None else "n/a"),
        "rule": RULES[claim],
    }


def _median_range(x: pd.Series) -> str:
    x = x.dropna()
    return "n/a" if x.empty else f"{_fmt(x.median())} (range {_fmt(x.min())} to {_fmt(x.max())})"


def _fall_text(units: pd.DataFrame) -> str:
    return f"fall from the gold peak window {_median_range(units['fall'])}, fall/SE {_median_range(units['fall_z'])}"


# --- claims ----------------------------------------------------------------------------------------------


def c2(conds: pd.DataFrame) -> dict:
    ent = _online(conds, ENTROPY_REG)
    if ent.empty:
        return _row("C2", NO_DATA, "no online entropy-regularized proxy-trained run with gold, proxy and KL evals")
    over, frac_over, n_over = _majority(ent["overoptimized"])
    unb, frac_unb, n_unb = _majority(~ent["kl_bounded"])
    ev = (
        f"{_scope(ent, 'entropy')}: {_count(ent['overoptimized'])} over-optimized; {_fall_text(ent)}; proxy rise "
        f"from that window {_median_range(ent['rise'])}; {_count(~ent['kl_bounded'])} not KL-bounded (projected "
        f"KL {_median_range(ent['kl_projected'])} nats; budget {KL_BUDGET:g}){_se_note(ent)}"
    )
    if n_over == 0:
        return _row("C2", INCONCLUSIVE, ev + f"; no condition with >= {MIN_EVALS} evals", ent)
    if over == "no" or unb == "no":
        return _row("C2", CONTRADICTED, ev, ent)
    if over == "yes" and unb == "yes":
        return _row("C2", SUPPORTED, ev, ent)
    return _row("C2", INCONCLUSIVE, ev, ent)


def c2a(att: pd.DataFrame) -> dict:
    pairs = att[(att[M.PARAM_REGULARIZER] == ENTROPY_REG) & att["call"].notna()] if not att.empty else att
    if pairs.empty:
        return _row("C2a", NO_DATA, "no proxy-trained entropy condition has a reward=gold twin (controls not run)")
    k = len(pairs)
    n_exp, n_drift = int((pairs["call"] == EXPLOIT).sum()), int((pairs["call"] == DRIFT).sum())
    runs = int(pairs["proxy_runs"].sum() + pairs["oracle_runs"].sum())
    lo_p, hi_p = int(pairs["proxy_runs"].min()), int(pairs["proxy_runs"].max())
    lo_o, hi_o = int(pairs["oracle_runs"].min()), int(pairs["oracle_runs"].max())
    seeds = f"proxy {lo_p}" + (f"-{hi_p}" if hi_p != lo_p else "") + f", oracle {lo_o}" + (
        f"-{hi_o}" if hi_o != lo_o else ""
    )
    items = "; ".join(
        f"{r[CONDITION]}: proxy fall {fmt_pm(r['proxy_fall'], r['proxy_fall_se'])} vs oracle "
        f"{fmt_pm(r['oracle_fall'], r['oracle_fall_se'])}, exploitation {_fmt(r['exploitation'])} ± "
        f"{_fmt(r['exploitation_se'])} (z {_fmt(r['exploitation_z'])}) -> {r['call']}"
        for _, r in pairs.iterrows()
    )
    ev = f"{k} entropy pair(s) ({runs} runs): {n_exp} exploitation, {n_drift} drift, {k - n_exp - n_drift} neither"
    ev += f". {items}"
    if k < MIN_CONDITIONS:
        verdict = INCONCLUSIVE
    elif n_exp / k >= MAJORITY:
        verdict = SUPPORTED
    elif n_drift / k >= MAJORITY:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return _row("C2a", verdict, ev, runs=runs, seeds=seeds + " per condition")


def c2b(conds: pd.DataFrame) -> dict:
    ora = _online(conds, ENTROPY_REG, C.GOLD_REWARD)
    if ora.empty:
        return _row("C2b", NO_DATA, "no online entropy run trained on gold (reward=gold controls not run)")
    maj, _, n = _majority(ora["gold_fell"])
    ev = (
        f"{_scope(ora, 'oracle-trained entropy')}: {_count(ora['gold_fell'])} lost gold beyond noise; "
        f"{_fall_text(ora)}; content part of the fall {_median_range(ora['content_fall'])}, fluency part "
        f"{_median_range(ora['fluency_fall'])}{_se_note(ora)}"
    )
    verdict = {"yes": SUPPORTED, "no": CONTRADICTED}.get(maj, INCONCLUSIVE) if n else INCONCLUSIVE
    return _row("C2b", verdict, ev, ora)


def c3(conds: pd.DataFrame) -> dict:
    kl = _online(conds, KL_REG)
    if kl.empty:
        return _row("C3", NO_DATA, "no online KL-regularized proxy-trained run with gold, proxy and KL evals")
    stable = kl["kl_bounded"] & ~kl["overoptimized"]
    maj, _, n = _majority(stable)
    ev = (
        f"{_scope(kl, 'KL')}: {_count(stable)} stable; {_count(kl['kl_bounded'])} KL-bounded (projected KL "
        f"{_median_range(kl['kl_projected'])} nats; budget {KL_BUDGET:g}); {_count(kl['overoptimized'])} "
        f"over-optimized; {_fall_text(kl)}{_se_note(kl)}"
    )
    verdict = {"yes": SUPPORTED, "no": CONTRADICTED}.get(maj, INCONCLUSIVE) if n else INCONCLUSIVE
    return _row("C3", verdict, ev, kl)


def c4(summary: pd.DataFrame, runs: pd.DataFrame | None) -> dict:
    ent = summary[
        summary[M.PARAM_ALGO].isin(ONLINE_RL_ALGOS)
        & (summary[M.PARAM_REGULARIZER] == ENTROPY_REG)
        & (summary[M.PARAM_REWARD] == C.PROXY)
    ]
    ent = ent[ent["fall"].notna() & ent[M.PARAM_COEF].notna()]
    if ent.empty:
        return _row("C4", NO_DATA, "no online entropy proxy-trained run with a coefficient and gold evals")
    if runs is not None and not runs.empty and {"run_id"} <= set(runs):
        strata = C.stratum(runs.set_index("run_id").loc[ent["run_id"]].reset_index(), M.PARAM_COEF).to_numpy()
    else:
        strata = np.zeros(len(ent))
    ent = ent.assign(_stratum=strata)
    per = ent.groupby(["_stratum", M.PARAM_COEF]).size()
    ok = per[per >= C4_MIN_SEEDS].reset_index().groupby("_stratum")[M.PARAM_COEF].nunique()
    usable = ok[ok >= C4_MIN_COEFS].index
    n_coef = ent[M.PARAM_COEF].nunique()
    med = ent.groupby(M.PARAM_COEF)["fall"].agg(["median", "min", "max", "size"])
    per_coef = ", ".join(
        f"{c:g}: {_fmt(r['median'])} [{_fmt(r['min'])} to {_fmt(r['max'])}] (n={int(r['size'])})"
        for c, r in med.iterrows()
    )
    base = (
        f"{len(ent)} entropy runs over {n_coef} coefficient(s), {ent['_stratum'].nunique()} stratum/strata; "
        f"fall per coef {{{per_coef}}}"
    )
    lo, hi = int(med["size"].min()), int(med["size"].max())
    seeds = f"{lo} per coefficient" if lo == hi else f"{lo}-{hi} per coefficient"
    if usable.empty:
        return _row(
            "C4",
            INCONCLUSIVE,
            base + f"; no stratum with >= {C4_MIN_COEFS} coefficients x >= {C4_MIN_SEEDS} runs",
            runs=len(ent),
            seeds=seeds,
        )
    use = ent[ent["_stratum"].isin(usable)]
    rho, p = trend(use[M.PARAM_COEF], use["fall"], use["_stratum"])
    ev = base + f"; stratified Spearman rho(coef, fall) = {_fmt(rho)}, permutation p = {_fmt(p)} ({len(use)} runs)"
    if p <= C4_ALPHA and rho > 0:
        verdict = SUPPORTED
    elif p <= C4_ALPHA and rho < 0:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return _row("C4", verdict, ev, runs=len(use), seeds=seeds)


def _gains(units: pd.DataFrame) -> str:
    return ", ".join(f"{r[CONDITION]}: {_pm(r, 'gain')}" for _, r in units.iterrows())


def c5(conds: pd.DataFrame) -> dict:
    sim = conds[(conds[M.PARAM_ALGO] == SIMPO) & conds["gain"].notna()]
    if sim.empty:
        return _row("C5", NO_DATA, "no offline SimPO run with gold evals")
    beats, worse = sim["gain_z"] >= GAIN_Z, sim["gain_z"] <= -GAIN_Z
    ev = (
        f"{_scope(sim, 'SimPO')}: {int(beats.sum())}/{len(sim)} gain gold beyond noise, {int(worse.sum())} lose it; "
        f"gain over the SFT policy {_gains(sim)}; final gold win rate {_median_range(sim['final_win_rate'])}"
        f"{_se_note(sim)}"
    )
    if len(sim) < MIN_CONDITIONS:
        return _row("C5", INCONCLUSIVE, ev, sim)
    if beats.mean() >= MAJORITY:
        return _row("C5", SUPPORTED, ev, sim)
    if worse.mean() >= MAJORITY:
        return _row("C5", CONTRADICTED, ev, sim)
    return _row("C5", INCONCLUSIVE, ev, sim)


def _pooled_gain(units: pd.DataFrame) -> tuple[float, float]:
    return float(units["gain"].mean()), float(np.sqrt((units["gain_se"] ** 2).sum()) / len(units))


def c6(conds: pd.DataFrame) -> dict:
    off = conds[(conds[M.PARAM_ALGO] == SIMPO) & conds["gain"].notna()]
    on = conds[(conds[M.PARAM_ALGO] == ONLINE_SIMPO) & (conds[M.PARAM_REWARD] == C.PROXY) & conds["gain"].notna()]
    if off.empty or on.empty:
        return _row("C6", NO_DATA, f"SimPO conditions with gold evals: {len(off)}; online SimPO: {len(on)}")
    g_off, se_off = _pooled_gain(off)
    g_on, se_on = _pooled_gain(on)
    diff, se = g_off - g_on, float(np.hypot(se_off, se_on))
    z = diff / se if se > 0 else np.nan
    maj, _, _ = _majority(on["overoptimized"])
    both = pd.concat([off, on])
    ev = (
        f"mean gain over the SFT policy: SimPO {_fmt(g_off)} ± {_fmt(se_off)} ({_scope(off, 'SimPO')}) vs online "
        f"SimPO {_fmt(g_on)} ± {_fmt(se_on)} ({_scope(on, 'online SimPO')}); difference {_fmt(diff)} ± {_fmt(se)} "
        f"(z {_fmt(z)}); {_count(on['overoptimized'])} online SimPO conditions over-optimized ({_fall_text(on)})"
        f"{_se_note(both)}"
    )
    if len(off) < MIN_CONDITIONS or len(on) < MIN_CONDITIONS:
        return _row("C6", INCONCLUSIVE, ev, both)
    if z >= GAIN_Z and maj == "yes":
        return _row("C6", SUPPORTED, ev, both)
    if z <= -GAIN_Z or (z < GAIN_Z and maj == "no"):
        return _row("C6", CONTRADICTED, ev, both)
    return _row("C6", INCONCLUSIVE, ev, both)


def confirms_form(fit_row, d_min: float, d_max: float) -> bool:
    """b > 0, peak d* inside the observed sqrt(KL) range widened by C7_DSTAR_FACTOR, R^2 >= C7_MIN_R2."""
    b, d_star, r2 = fit_row["b"], fit_row["d_star"], fit_row["r2"]
    if not (np.isfinite(b) and b > 0 and np.isfinite(d_star) and np.isfinite(r2)):
        return False
    return bool(d_min / C7_DSTAR_FACTOR <= d_star <= d_max * C7_DSTAR_FACTOR and r2 >= C7_MIN_R2)


def c7(conds: pd.DataFrame, summary: pd.DataFrame, run_fits: pd.DataFrame, d_range: pd.DataFrame | None) -> dict:
    online = conds[
        conds[M.PARAM_ALGO].isin((*ONLINE_RL_ALGOS, *ONLINE_PREF_ALGOS)) & (conds[M.PARAM_REWARD] == C.PROXY)
    ]
    over = online[online["overoptimized"].fillna(False).astype(bool)]
    if online.empty or run_fits is None or run_fits.empty:
        return _row("C7", NO_DATA, "no online proxy-trained run with a fit of the RL form")
    if over.empty:
        return _row(
            "C7",
            INCONCLUSIVE,
            f"none of {len(online)} online proxy-trained conditions over-optimized: no observed peak to test d* "
            "against",
            online,
        )
    run_ids = summary.loc[summary[CONDITION].isin(over[CONDITION]), "run_id"]
    fits = run_fits[run_fits["run_id"].isin(run_ids)].merge(d_range, on="run_id", how="left")
    if fits.empty:
        return _row("C7", NO_DATA, "no fit of the RL form on the over-optimized runs")
    ok = fits.apply(lambda r: confirms_form(r, r["d_min"], r["d_max"]), axis=1)
    n, k = len(fits), int(ok.sum())
    ev = (
        f"RL-form fits on the {n} runs of {len(over)} over-optimized condition(s): {k}/{n} confirm the form; "
        f"{int((fits['b'] > 0).sum())} with b > 0; d* {_median_range(fits['d_star'])} vs observed sqrt(KL) up to "
        f"{_median_range(fits['d_max'])}; R^2 {_median_range(fits['r2'])}"
    )
    if n < MIN_CONDITIONS:
        verdict = INCONCLUSIVE
    elif k / n >= MAJORITY:
        verdict = SUPPORTED
    elif k / n <= 1 - MAJORITY:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return _row("C7", verdict, ev, runs=n, seeds=_seeds(over))


def d_ranges(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: the smallest and largest observed sqrt(KL) after step 0 (C7's range for d*)."""
    part = table[(table["step"] > 0) & (table[D] > 0)]
    return part.groupby("run_id")[D].agg(d_min="min", d_max="max").reset_index()


def judge(
    conds: pd.DataFrame,
    att: pd.DataFrame,
    summary: pd.DataFrame,
    run_fits: pd.DataFrame | None = None,
    d_range: pd.DataFrame | None = None,
    runs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The verdict table: one row per claim (C2, C2a, C2b, C3, ..., C7)."""
    rows = [
        c2(conds),
        c2a(att),
        c2b(conds),
        c3(conds),
        c4(summary, runs),
        c5(conds),
        c6(conds),
        c7(conds, summary, run_fits, d_range),
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def to_markdown(verdicts: pd.DataFrame) -> str:
    """A GitHub markdown table (claim | verdict | runs | seeds | evidence | figure), to paste into the README."""

    def cell(x) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    fig = "figure" in verdicts
    head = "| claim | statement | verdict | runs | seeds | evidence |" + (" figure |" if fig else "")
    lines = [head, "|---" * (6 + fig) + "|"]
    for r in verdicts.to_dict("records"):
        line = f"| {r['claim']} | {cell(r['statement'])} | **{r['verdict']}** | {r['runs']} | {cell(r['seeds'])} | "
        line += f"{cell(r['evidence'])} |" + (f" {cell(r['figure'])} |" if fig else "")
        lines.append(line)
    lines += ["", "Rules:", ""] + [f"- **{r['claim']}**: {cell(r['rule'])}" for r in verdicts.to_dict("records")]
    return "\n".join(lines) + "\n"
