"""Pure pandas/numpy transforms of the tidy metric frame (no I/O, no mlflow, no torch).

Conventions, following Gao et al. 2022 (SCIENCE.md sec. 4):

- `d = sqrt(KL)` with KL the exact sequence-summed `eval/kl` to the initial
  policy. Exact KL cannot be negative; small negatives from float error are
  clipped to 0 before the square root.
- Gold and proxy are logged normalized so that the initial policy scores mean
  0, but that normalization is estimated on other samples, so each run is
  re-centered on its own step-0 eval: `gold(t) - gold(0)`, `proxy(t) - proxy(0)`.
  The gold scale (one gold std of the initial policy) is kept. A run with no
  step-0 eval keeps its logged values and `recentered=False` (the report lists it).
- The proxy-gold gap is `proxy - gold` after re-centering (0 at step 0).
- Peak = the first eval step of maximal gold; final = the last eval step.
  `drop = final_gold - peak_gold` (<= 0); `proxy_rise = final_proxy - proxy at
  the gold peak`. Over-optimization shows as drop < 0 with proxy_rise > 0.
- Best-of-n runs log `bon/*` with step = n; their gold and proxy are
  re-centered on n = 1 (one sample from the initial policy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf_sweeps import metrics as M

# Column names of the derived, per-eval table (analysis-internal, not MLflow names).
GOLD, PROXY, KL, D, GAP, ENTROPY, WIN_RATE, LENGTH = "gold", "proxy", "kl", "d", "gap", "entropy", "win_rate", "length"
EVAL_COLUMNS = {
    M.EVAL_GOLD_REWARD: GOLD,
    M.EVAL_PROXY_REWARD: PROXY,
    M.EVAL_KL: KL,
    M.EVAL_ENTROPY: ENTROPY,
    M.EVAL_GOLD_WIN_RATE: WIN_RATE,
    M.EVAL_RESPONSE_LENGTH: LENGTH,
}
BON_COLUMNS = {M.BON_GOLD_REWARD: GOLD, M.BON_PROXY_REWARD: PROXY, M.BON_KL: KL}

# Algorithm families (config values of `algo.name`).
ONLINE_RL_ALGOS = ("rloo", "reinforce", "ppo")
OFFLINE_PREF_ALGOS = ("simpo", "dpo")
ONLINE_PREF_ALGOS = ("online_simpo",)
BON_ALGO = "bon"

# Keys a run must have for the analysis to use it, by algorithm family.
REQUIRED_EVAL = (M.EVAL_GOLD_REWARD, M.EVAL_PROXY_REWARD, M.EVAL_KL)
REQUIRED_BON = (M.BON_GOLD_REWARD, M.BON_KL)

# Grouping: seeds are aggregated; model and task join the key only when they vary.
BASE_GROUP_KEYS = (M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_LR, M.PARAM_COEF)
OPTIONAL_GROUP_KEYS = (M.PARAM_MODEL, M.PARAM_TASK)
RUN_KEYS = ("run_id", "run_name", "status", *BASE_GROUP_KEYS, M.PARAM_SEED, *OPTIONAL_GROUP_KEYS)


def method_label(algo, regularizer) -> str:
    """Short human label: the regularizer for online RL, the algorithm otherwise."""
    algo = "unknown" if pd.isna(algo) else str(algo)
    if algo == BON_ALGO:
        return "best-of-n"
    if algo in ONLINE_RL_ALGOS:
        reg = "unknown" if pd.isna(regularizer) else str(regularizer)
        return f"{reg} ({algo})"
    return algo


def group_keys(runs: pd.DataFrame) -> list[str]:
    """The base keys, plus model/task where more than one value occurs."""
    keys = [k for k in BASE_GROUP_KEYS if k in runs]
    keys += [k for k in OPTIONAL_GROUP_KEYS if k in runs and runs[k].nunique(dropna=True) > 1]
    return keys


def varying_keys(runs: pd.DataFrame, keys) -> list[str]:
    return [k for k in keys if k in runs and runs[k].nunique(dropna=False) > 1]


def _run_level(metrics: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in RUN_KEYS if c in metrics]
    return metrics[cols].drop_duplicates("run_id")


def _wide(metrics: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    part = metrics[metrics["key"].isin(list(names))]
    if part.empty:
        return pd.DataFrame(columns=["run_id", "step", *names.values()])
    wide = part.pivot_table(index=["run_id", "step"], columns="key", values="value", aggfunc="last")
    wide = wide.rename(columns=names).reset_index()
    wide.columns.name = None
    for col in names.values():
        if col not in wide:
            wide[col] = np.nan
    return wide


def _recenter(wide: pd.DataFrame, cols, origin_step: int) -> pd.DataFrame:
    wide = wide.sort_values(["run_id", "step"]).reset_index(drop=True)
    origin = wide[wide["step"] == origin_step].set_index("run_id")
    wide["recentered"] = wide["run_id"].isin(origin.index)
    for col in cols:
        base = wide["run_id"].map(origin[col]) if col in origin else pd.Series(np.nan, index=wide.index)
        wide[col] = wide[col] - base.fillna(0.0)
    return wide


def sqrt_kl(kl) -> np.ndarray:
    """d = sqrt(KL), negatives (float error on an exact KL) clipped at 0."""
    return np.sqrt(np.clip(np.asarray(kl, dtype=float), 0.0, None))


def eval_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, eval step): re-centered gold/proxy, KL, d, gap, entropy, win rate + run keys."""
    wide = _wide(metrics[~metrics["key"].str.startswith("bon/")], EVAL_COLUMNS)
    wide = _recenter(wide, (GOLD, PROXY), origin_step=0)
    wide[D] = sqrt_kl(wide[KL])
    wide[GAP] = wide[PROXY] - wide[GOLD]
    return wide.merge(_run_level(metrics), on="run_id", how="left")


def bon_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (best-of-n run, n): gold and proxy re-centered on n=1, KL, d."""
    wide = _recenter(_wide(metrics, BON_COLUMNS), (GOLD, PROXY), origin_step=1)
    wide[D] = sqrt_kl(wide[KL])
    return wide.merge(_run_level(metrics), on="run_id", how="left").rename(columns={"step": "n"})


def _value_at(steps: np.ndarray, values: np.ndarray, step: float) -> float:
    ok = ~np.isnan(values)
    if not ok.any():
        return np.nan
    return float(np.interp(step, steps[ok], values[ok]))


def summarize_run(one: pd.DataFrame) -> dict:
    """Peak, final, drop and KL growth of one run's eval table (sorted by step inside)."""
    one = one.sort_values("step")
    steps = one["step"].to_numpy(dtype=float)
    gold = one[GOLD].to_numpy(dtype=float)
    out = {"n_evals": int((~np.isnan(gold)).sum()), "recentered": bool(one["recentered"].all())}
    last = one.iloc[-1]
    final_step = float(steps[-1])
    out.update(
        final_step=final_step,
        final_gold=last[GOLD],
        final_proxy=last[PROXY],
        final_kl=last[KL],
        final_d=last[D],
        final_gap=last[GAP],
        final_entropy=last.get(ENTROPY, np.nan),
        final_win_rate=last.get(WIN_RATE, np.nan),
    )
    if out["n_evals"] == 0:
        return out
    out["gold_range"] = float(np.nanmax(gold) - np.nanmin(gold))
    i = int(np.nanargmax(gold))  # first step of maximal gold
    peak = one.iloc[i]
    out.update(
        peak_step=float(steps[i]),
        peak_gold=peak[GOLD],
        peak_kl=peak[KL],
        peak_d=peak[D],
        peak_proxy=peak[PROXY],
        peak_gap=peak[GAP],
    )
    # Last non-missing gold is "final" for the drop, so a trailing NaN does not hide a fall.
    j = int(np.flatnonzero(~np.isnan(gold))[-1])
    out["final_gold"] = gold[j]
    out["drop"] = gold[j] - peak[GOLD]
    out["proxy_rise"] = out["final_proxy"] - peak[PROXY]
    out["gap_rise"] = out["final_gap"] - peak[GAP]
    # KL growth over the last half of the run: KL(final) against KL(final_step / 2), interpolated.
    kl = one[KL].to_numpy(dtype=float)
    out["mid_kl"] = _value_at(steps, kl, final_step / 2.0)
    out["kl_growth_ratio"] = out["final_kl"] / out["mid_kl"] if out["mid_kl"] > 0 else np.nan
    return out


SUMMARY_COLUMNS = (
    "n_evals",
    "recentered",
    "gold_range",
    "peak_step",
    "peak_gold",
    "peak_kl",
    "peak_d",
    "peak_proxy",
    "peak_gap",
    "final_step",
    "final_gold",
    "final_proxy",
    "final_kl",
    "final_d",
    "final_gap",
    "final_entropy",
    "final_win_rate",
    "drop",
    "proxy_rise",
    "gap_rise",
    "mid_kl",
    "kl_growth_ratio",
)


def run_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run: the run keys + SUMMARY_COLUMNS (see `summarize_run`)."""
    rows = []
    for _, one in table.groupby("run_id", sort=False):
        row = {c: one[c].iloc[0] for c in RUN_KEYS if c in one}
        row.update(summarize_run(one))
        rows.append(row)
    out = pd.DataFrame(rows)
    for col in (*[c for c in RUN_KEYS if c in table], *SUMMARY_COLUMNS):
        if col not in out:
            out[col] = np.nan
    if not out.empty:
        out.insert(
            1, "method", [method_label(a, r) for a, r in zip(out[M.PARAM_ALGO], out[M.PARAM_REGULARIZER], strict=True)]
        )
    else:
        out.insert(1, "method", pd.Series(dtype=str))
    return out


def aggregate(summary: pd.DataFrame, keys, values) -> pd.DataFrame:
    """Seeds aggregated per group: `<v>_mean`, `<v>_std`, `<v>_min`, `<v>_max`, and `n_runs`."""
    keys = [k for k in keys if k in summary]
    grouped = summary.groupby(keys, dropna=False, sort=True)
    out = grouped[list(values)].agg(["mean", "std", "min", "max"])
    out.columns = [f"{v}_{stat}" for v, stat in out.columns]
    out.insert(0, "n_runs", grouped.size())
    return out.reset_index()


def curve_band(table: pd.DataFrame, keys, value: str, x: str = "step") -> pd.DataFrame:
    """Per group and x: mean, min and max over runs (the band) and the run count."""
    keys = [k for k in keys if k in table]
    grouped = table.dropna(subset=[value]).groupby([*keys, x], dropna=False, sort=True)[value]
    out = grouped.agg(mean="mean", lo="min", hi="max", n="count").reset_index()
    return out


def missing_metrics(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Runs that lack a key the analysis needs, or a step-0 eval to re-center on; never dropped silently."""
    have = metrics.groupby("run_id")["key"].agg(set) if not metrics.empty else pd.Series(dtype=object)
    step0 = set(metrics.loc[(metrics["step"] == 0) & (metrics["key"] == M.EVAL_GOLD_REWARD), "run_id"])
    rows = []
    for run in runs.to_dict("records"):
        keys = have.get(run["run_id"], set())
        if not isinstance(keys, set):
            keys = set()
        is_bon = run.get(M.PARAM_ALGO) == BON_ALGO
        required = REQUIRED_BON if is_bon else REQUIRED_EVAL
        missing = [k for k in required if k not in keys]
        if not is_bon and M.EVAL_GOLD_REWARD in keys and run["run_id"] not in step0:
            missing.append(f"{M.EVAL_GOLD_REWARD}@step0 (not re-centered)")
        if missing:
            rows.append(
                {
                    "run_id": run["run_id"],
                    "run_name": run["run_name"],
                    "status": run["status"],
                    "algo": run.get(M.PARAM_ALGO),
                    "regularizer": run.get(M.PARAM_REGULARIZER),
                    "missing": ", ".join(missing),
                    "failure_reason": run.get(M.TAG_FAILURE),
                }
            )
    cols = ["run_id", "run_name", "status", "algo", "regularizer", "missing", "failure_reason"]
    return pd.DataFrame(rows, columns=cols)


def pearson(x, y) -> tuple[float, int]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return np.nan, int(ok.sum())
    return float(np.corrcoef(x[ok], y[ok])[0, 1]), int(ok.sum())
