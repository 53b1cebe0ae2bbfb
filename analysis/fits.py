"""Gao et al. (2022) functional forms, fitted by linear least squares.

With `d = sqrt(KL)` and gold(0) = 0 (docs/science.md §4):

    best-of-n   R(d) = d * (a - b*d)      = a*d - b*d^2        peak d* = a / (2b)
    RL          R(d) = d * (a - b*ln d)   = a*d - b*d*ln(d)    peak d* = exp(a/b - 1)

Both are linear in (a, b), so the fit is one `lstsq` on the design matrix
`[d, -d^2]` or `[d, -d ln d]` (with `d ln d -> 0` at d = 0), no intercept: the
constraint gold(0) = 0 is built in (gold is re-centered on step 0 upstream).
A form has a peak only when b > 0; otherwise d* is NaN (reward still rising
at every d the form allows).

R^2 = 1 - SS_res / SS_tot with SS_tot about the mean of the fitted points, so
it can be negative when a zero-intercept curve does worse than a constant.

Group fits pool the points of all seeds of a group; their intervals come from
a bootstrap over seeds (resample whole runs with replacement, refit the pooled
points), percentile 2.5-97.5 %, only where a group has >= 2 seeds. The d*
interval is taken over the draws with b > 0; `boot_peak_frac` says how many.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from analysis.transforms import GOLD, D

RL, BON = "rl", "bon"
MIN_POINTS = 3  # two parameters need one more point to leave a residual
N_BOOT = 1000
CI = (2.5, 97.5)


@dataclass
class Fit:
    form: str
    a: float
    b: float
    r2: float
    d_star: float
    n_points: int


def design(d, form: str) -> np.ndarray:
    d = np.asarray(d, dtype=float)
    if form == RL:
        with np.errstate(divide="ignore", invalid="ignore"):
            dlnd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.column_stack([d, -dlnd])
    if form == BON:
        return np.column_stack([d, -(d**2)])
    raise ValueError(f"unknown form {form!r}; use {RL!r} or {BON!r}")


def predict(d, a: float, b: float, form: str) -> np.ndarray:
    return design(d, form) @ np.array([a, b])


def peak_d(a: float, b: float, form: str) -> float:
    """Where the fitted curve peaks; NaN when b <= 0 (no interior maximum)."""
    if not np.isfinite(a) or not np.isfinite(b) or b <= 0:
        return np.nan
    if form == BON:
        return a / (2 * b)
    with np.errstate(over="ignore"):
        return float(np.exp(a / b - 1.0))


def _solve(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(xtx, xty)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(xtx, xty, rcond=None)[0]


def fit(d, r, form: str = RL) -> Fit:
    """Least-squares (a, b) for one set of (d, gold) points; NaN where too few points."""
    d, r = np.asarray(d, float), np.asarray(r, float)
    ok = np.isfinite(d) & np.isfinite(r)
    d, r = d[ok], r[ok]
    if len(d) < MIN_POINTS or np.count_nonzero(d > 0) < 2:
        return Fit(form, np.nan, np.nan, np.nan, np.nan, int(len(d)))
    X = design(d, form)
    (a, b), *_ = np.linalg.lstsq(X, r, rcond=None)
    resid = r - X @ np.array([a, b])
    ss_tot = float(np.sum((r - r.mean()) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else np.nan
    return Fit(form, float(a), float(b), r2, peak_d(a, b, form), int(len(d)))


def fit_runs(table: pd.DataFrame, form: str = RL, x: str = D, y: str = GOLD, keys=()) -> pd.DataFrame:
    """One fit per run of `table` (eval or best-of-n table), with the run's keys carried along."""
    rows = []
    for run_id, one in table.groupby("run_id", sort=False):
        row = {"run_id": run_id, **{k: one[k].iloc[0] for k in keys if k in one}}
        row.update(asdict(fit(one[x], one[y], form)))
        rows.append(row)
    cols = ["run_id", *[k for k in keys if k in table], "form", "a", "b", "r2", "d_star", "n_points"]
    return pd.DataFrame(rows, columns=cols)


def fit_groups(
    table: pd.DataFrame,
    keys,
    form: str = RL,
    x: str = D,
    y: str = GOLD,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Pooled fit per group (seeds together) + bootstrap-over-seeds intervals for a, b, d*."""
    keys = [k for k in keys if k in table]
    if table.empty or not keys:
        return pd.DataFrame(columns=[*keys, "form", "n_runs", "a", "b", "r2", "d_star", "n_points"])
    rng = np.random.default_rng(seed)
    rows = []
    for group, part in table.groupby(keys, dropna=False, sort=True):
        group = group if isinstance(group, tuple) else (group,)
        row = dict(zip(keys, group, strict=True))
        f = fit(part[x], part[y], form)
        row.update(
            form=form, n_runs=part["run_id"].nunique(), a=f.a, b=f.b, r2=f.r2, d_star=f.d_star, n_points=f.n_points
        )
        row.update(_bootstrap(part, form, x, y, n_boot, rng))
        rows.append(row)
    return pd.DataFrame(rows)


def _bootstrap(part: pd.DataFrame, form: str, x: str, y: str, n_boot: int, rng) -> dict:
    nan = {f"{p}_{s}": np.nan for p in ("a", "b", "d_star") for s in ("lo", "hi")} | {"boot_peak_frac": np.nan}
    # Per-run normal equations: a pooled fit of a resample is a sum of them and one 2x2 solve.
    stats = []
    for _, one in part.groupby("run_id", sort=False):
        ok = np.isfinite(one[x].to_numpy(float)) & np.isfinite(one[y].to_numpy(float))
        X = design(one[x].to_numpy(float)[ok], form)
        stats.append((X.T @ X, X.T @ one[y].to_numpy(float)[ok]))
    if len(stats) < 2:
        return nan
    xtx = np.stack([s[0] for s in stats])  # (R, 2, 2)
    xty = np.stack([s[1] for s in stats])  # (R, 2)
    draws = rng.integers(0, len(stats), size=(n_boot, len(stats)))
    params = np.array([_solve(xtx[i].sum(0), xty[i].sum(0)) for i in draws])  # (n_boot, 2)
    dstar = np.array([peak_d(a, b, form) for a, b in params])
    # d* interval is over the draws that have a peak (b > 0); how many did is reported beside it.
    out = {"boot_peak_frac": float(np.isfinite(dstar).mean())}
    for name, vals in (("a", params[:, 0]), ("b", params[:, 1]), ("d_star", dstar)):
        vals = vals[np.isfinite(vals)]
        lo, hi = np.percentile(vals, CI) if len(vals) else (np.nan, np.nan)
        out[f"{name}_lo"], out[f"{name}_hi"] = float(lo), float(hi)
    return out
