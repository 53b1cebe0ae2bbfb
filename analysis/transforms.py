"""Pure pandas/numpy transforms of the tidy metric frame (no I/O, no mlflow, no torch).

Conventions, following Gao et al. 2022 (docs/science.md §4):

- `d = sqrt(KL)` with KL the exact sequence-summed `eval/kl` to the initial
  policy. Exact KL cannot be negative; small negatives from float error are
  clipped to 0 before the square root.
- Gold and proxy are logged normalized so that the initial policy scores mean
  0, but that normalization is estimated on other samples, so each run is
  re-centered on its own step-0 eval: `gold(t) - gold(0)`, `proxy(t) - proxy(0)`.
  The gold scale (one gold std of the initial policy) is kept. A run with no
  step-0 eval keeps its logged values and `recentered=False` (the report lists it).
- The proxy-gold gap is `proxy - gold` after re-centering (0 at step 0).
- Gold's content and fluency parts (the embedded world's split; content +
  fluency = gold at every eval) are re-centered the same way, so the identity
  survives re-centering. The logged standard errors are not re-centered.
- Peak = the first eval step of maximal gold; final = the last eval step.
  These are descriptions; whether gold fell beyond noise is decided in
  `analysis.verdicts` from window means and the logged standard errors.
- Best-of-n runs log `bon/*` with step = n; their gold and proxy are
  re-centered on n = 1 (one sample from the initial policy).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlhf_sweeps.config import ONLINE_ALGOS
from rlhf_sweeps import metrics as M

# Params that become typed columns of the runs and metrics frames (analysis.load); every other
# param is kept as the string MLflow stored, under `param:<name>`.
GROUP_PARAMS = (
    M.PARAM_ALGO,
    M.PARAM_REGULARIZER,
    M.PARAM_LR,
    M.PARAM_COEF,
    M.PARAM_SEED,
    M.PARAM_MODEL,
    M.PARAM_TASK,
    M.PARAM_REWARD,
)
PARAM_PREFIX = "param:"

# Column names of the derived, per-eval table (analysis-internal, not MLflow names).
GOLD, PROXY, KL, D, GAP, ENTROPY, WIN_RATE, LENGTH = "gold", "proxy", "kl", "d", "gap", "entropy", "win_rate", "length"
CONTENT, FLUENCY, GOLD_SE, PROXY_SE = "content", "fluency", "gold_se", "proxy_se"
EVAL_COLUMNS = {
    M.EVAL_GOLD_REWARD: GOLD,
    M.EVAL_PROXY_REWARD: PROXY,
    M.EVAL_KL: KL,
    M.EVAL_ENTROPY: ENTROPY,
    M.EVAL_GOLD_WIN_RATE: WIN_RATE,
    M.EVAL_RESPONSE_LENGTH: LENGTH,
    M.EVAL_GOLD_CONTENT: CONTENT,
    M.EVAL_GOLD_FLUENCY: FLUENCY,
    M.EVAL_GOLD_SE: GOLD_SE,
    M.EVAL_PROXY_SE: PROXY_SE,
}
# Re-centered on step 0 (levels); the SE columns are errors of the logged means and stay as logged.
RECENTERED = (GOLD, PROXY, CONTENT, FLUENCY)
BON_COLUMNS = {M.BON_GOLD_REWARD: GOLD, M.BON_PROXY_REWARD: PROXY, M.BON_KL: KL}

# Algorithm families (config values of `algo.name`).
# algorithm names are defined once, in rlhf_sweeps/config.py (torch-free)
ONLINE_RL_ALGOS = tuple(a for a in ONLINE_ALGOS if a != "online_simpo")  # rloo, reinforce, ppo, grpo
OFFLINE_PREF_ALGOS = ("simpo", "dpo")
ONLINE_PREF_ALGOS = ("online_simpo",)
BON_ALGO = "bon"

# Keys a run must have for the analysis to use it, by algorithm family.
REQUIRED_EVAL = (M.EVAL_GOLD_REWARD, M.EVAL_PROXY_REWARD, M.EVAL_KL)
REQUIRED_BON = (M.BON_GOLD_REWARD, M.BON_KL)

# Run-level columns carried into every derived table. Seeds pool by `condition`
# (analysis.conditions: every param but the seed equal), never by a subset of these.
# condition: the label of the run's exact condition; twin: its key without the reward params;
# grid_row: the label of its condition without the learning rate (a row of the grid heat map).
CONDITION, TWIN, GRID_ROW = "condition", "twin", "grid_row"
RUN_KEYS = (
    "run_id",
    "run_name",
    "status",
    *GROUP_PARAMS,
    CONDITION,
    TWIN,
    GRID_ROW,
)
TRAINED_ON_PROXY = "proxy"  # the `reward` value of ordinary (proxy-trained) runs


def method_label(algo, regularizer, reward=None) -> str:
    """Short human label: the regularizer for online RL, the algorithm otherwise; controls say what they trained on."""
    algo = "unknown" if pd.isna(algo) else str(algo)
    if algo == BON_ALGO:
        base = "best-of-n"
    elif algo in ONLINE_RL_ALGOS:
        reg = "unknown" if pd.isna(regularizer) else str(regularizer)
        base = f"{reg} ({algo})"
    else:
        base = algo
    if reward is None or pd.isna(reward) or str(reward) == TRAINED_ON_PROXY:
        return base
    return f"{base}, reward={reward}"


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
    wide = _recenter(wide, RECENTERED, origin_step=0)
    wide[D] = sqrt_kl(wide[KL])
    wide[GAP] = wide[PROXY] - wide[GOLD]
    return wide.merge(_run_level(metrics), on="run_id", how="left")


def bon_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (best-of-n run, n): gold and proxy re-centered on n=1, KL, d."""
    wide = _recenter(_wide(metrics, BON_COLUMNS), (GOLD, PROXY), origin_step=1)
    wide[D] = sqrt_kl(wide[KL])
    return wide.merge(_run_level(metrics), on="run_id", how="left").rename(columns={"step": "n"})


def summarize_run(one: pd.DataFrame) -> dict:
    """Descriptive peak and final values of one run's eval table (sorted by step inside).

    The peak here is the single eval of maximal gold, a description (where the curve topped
    out, at what KL) that is biased upward by noise; whether gold *fell* is decided by the
    noise-aware rules of `analysis.verdicts`, never from these columns."""
    one = one.sort_values("step")
    steps = one["step"].to_numpy(dtype=float)
    gold = one[GOLD].to_numpy(dtype=float)
    out = {"n_evals": int((~np.isnan(gold)).sum()), "recentered": bool(one["recentered"].all())}
    last = one.iloc[-1]
    out.update(
        final_step=float(steps[-1]),
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
    # Last non-missing gold is "final", so a trailing NaN does not hide a fall.
    out["final_gold"] = gold[int(np.flatnonzero(~np.isnan(gold))[-1])]
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
    out.insert(1, "method", method_labels(out) if not out.empty else pd.Series(dtype=str))
    return out


def method_labels(frame: pd.DataFrame) -> list[str]:
    reward = frame[M.PARAM_REWARD] if M.PARAM_REWARD in frame else [None] * len(frame)
    return [
        method_label(a, r, w) for a, r, w in zip(frame[M.PARAM_ALGO], frame[M.PARAM_REGULARIZER], reward, strict=True)
    ]


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
