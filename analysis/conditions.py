"""Exact conditions: runs pool as seeds of one condition only when every config param but the seed is equal.

A run's *condition* is the tuple of all its result-relevant params: every
MLflow param (the flattened config, plus `coef` and `reward`) except the seed
and the bookkeeping params of `BOOKKEEPING_PARAMS`, which cannot change what a
run computes. A param missing from a run counts as a value of its own, so runs
logged before a config key existed never pool with runs logged after.

Labels are generated, not looked up: a condition is labelled by the params
that tell it apart from the other selected conditions, e.g.
`rloo kl k3/loss coef=0.05 lr=3e-4 reward=proxy`. A param is shown for a
condition only when it varies among the conditions that agree with it on every
param ordered before it (`label_order`), so a label is unique and as short as
the selection allows: `regularizer.estimator` appears only when two runs of
the same regularizer differ in it.

Runs logged before `coef` and `reward` existed get them from the legacy keys
(`legacy_defaults`): `coef` = param `temperature` for online RL,
`algo.beta` for simpo/dpo/online_simpo, none for best-of-n; `reward` = proxy.

`grid_row` labels the condition without its learning rate (a row of the
report's heat map, whose columns are learning rates). The *twin* key is the
condition without the reward params: a proxy-trained
condition and its `reward=gold` oracle share it (`analysis.verdicts`,
attribution).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.transforms import (
    BON_ALGO,
    CONDITION,
    GRID_ROW,
    GROUP_PARAMS,
    OFFLINE_PREF_ALGOS,
    ONLINE_PREF_ALGOS,
    ONLINE_RL_ALGOS,
    PARAM_PREFIX,
    TRAINED_ON_PROXY,
    TWIN,
)
from rlhf_sweeps import metrics as M

# Params that cannot change what a run computes: where it logs (tracking.*) and how much it
# prints (verbose), where it caches (cache_dir), whether it recomputes a cache (force) or only
# plans (dry_run; a dry run logs no evals), how many threads or which device compute it, how
# often it checkpoints (resume is exact), the learning-rate range a model only warns about
# (model.learning_range), and the memory-only knobs of the GPU planner and the vLLM engine.
# Entries ending in "." are prefixes. Everything else, including every param the analysis has
# never heard of, defines the condition.
BOOKKEEPING_PARAMS = (
    "tracking.",
    "verbose",
    "cache_dir",
    "force",
    "dry_run",
    "threads",
    "device",
    "checkpoint_every",
    "model.learning_range",
    "gpu.",
    "rollout.gpu_memory_utilization",
    "rollout.kv_cache_gb",
    "rollout.enable_sleep_mode",  # logged by runs from before it was removed (it was never read)
    "rollout.enforce_eager",
    # what was asked for (auto, hf, vllm); the engine that ran is `rollout.engine`, which counts
    "rollout.name",
)
# Legacy coefficient keys (runs logged before param `coef`), by algorithm family.
LEGACY_ONLINE_COEF = "temperature"
LEGACY_PREF_COEF = "algo.beta"
# Values of param `reward` (conf/reward/): trained on the proxy RM, on gold (oracle), on nothing.
PROXY, GOLD_REWARD, ZERO_REWARD = TRAINED_ON_PROXY, "gold", "zero"
DEFAULT_REWARD = PROXY  # runs logged before param `reward` existed all trained on the proxy
CONDITION_ID = "condition_id"  # column added beside CONDITION and TWIN
# Params rendered as a bare value ("kl", not "regularizer.name=kl"); string params of the same
# group follow it joined by "/" ("kl k3/loss").
BARE_PARAMS = (M.PARAM_ALGO, M.PARAM_REGULARIZER)
MISSING = "–"  # how a param a run lacks is shown, where a label needs it


def is_bookkeeping(name: str) -> bool:
    return any(name.startswith(p) if p.endswith(".") else name == p for p in BOOKKEEPING_PARAMS)


def is_reward_param(name: str) -> bool:
    """`reward` and the flattened `reward.*` group: what separates a condition from its twins."""
    return name == M.PARAM_REWARD or name.startswith(M.PARAM_REWARD + ".")


def param_columns(runs: pd.DataFrame) -> dict[str, str]:
    """param name -> column of `runs` holding it (a typed group column, or `param:<name>`)."""
    out = {p: p for p in GROUP_PARAMS if p in runs}
    for col in runs.columns:
        if col.startswith(PARAM_PREFIX):
            out.setdefault(col[len(PARAM_PREFIX) :], col)
    return out


def relevant_params(runs: pd.DataFrame) -> list[str]:
    """Every param that defines a condition: all but the seed and the bookkeeping ones."""
    return sorted(p for p in param_columns(runs) if p != M.PARAM_SEED and not is_bookkeeping(p))


def canonical(value):
    """A value as a hashable key: numbers by their float value ("3e-4" == "0.0003"), missing as None."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    return x if np.isfinite(x) else str(value)


def _keys(runs: pd.DataFrame, params) -> pd.DataFrame:
    """Canonical values, one column per param, kept as Python objects (None = missing, never NaN)."""
    return pd.DataFrame(
        {p: pd.Series([canonical(v) for v in _col(runs, p)], index=runs.index, dtype=object) for p in params},
        index=runs.index,
        dtype=object,
    )


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    cols = param_columns(runs)
    return runs[cols[name]] if name in cols else pd.Series([None] * len(runs), index=runs.index, dtype=object)


def legacy_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """Fill `coef` and `reward` for runs logged before those params existed."""
    runs = runs.copy()
    algo = _col(runs, M.PARAM_ALGO)
    coef = pd.to_numeric(_col(runs, M.PARAM_COEF), errors="coerce")
    online = pd.to_numeric(_col(runs, LEGACY_ONLINE_COEF), errors="coerce")
    pref = pd.to_numeric(_col(runs, LEGACY_PREF_COEF), errors="coerce")
    legacy = np.where(
        algo.isin(ONLINE_RL_ALGOS), online, np.where(algo.isin((*OFFLINE_PREF_ALGOS, *ONLINE_PREF_ALGOS)), pref, np.nan)
    )
    runs[M.PARAM_COEF] = coef.where(coef.notna(), legacy).where(algo != BON_ALGO, np.nan).astype(float)
    reward = _col(runs, M.PARAM_REWARD)
    runs[M.PARAM_REWARD] = reward.where(reward.notna(), DEFAULT_REWARD).astype(str)
    return runs


def label_order(params) -> list[str]:
    """Display order: algorithm, regularizer and its options, coef, lr, reward, then the rest by name."""
    reg_group = M.PARAM_REGULARIZER.split(".")[0] + "."
    head = [M.PARAM_ALGO, M.PARAM_REGULARIZER]
    reg = sorted(p for p in params if p.startswith(reg_group) and p not in head)
    mid = [M.PARAM_COEF, M.PARAM_LR, M.PARAM_REWARD]
    first = [p for p in (*head, *reg, *mid) if p in params]
    return first + sorted(p for p in params if p not in first)


def fmt_value(x) -> str:
    """Compact number or string: 0.0003 -> 3e-4, 0.05 -> 0.05, 2.0 -> 2."""
    if x is None:
        return MISSING
    if isinstance(x, str):
        return x
    if x != 0 and abs(x) < 1e-2:
        mant, exp = f"{x:.2e}".split("e")
        return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
    return f"{x:.4g}"


def _render(shown: list[tuple[str, object]]) -> str:
    tokens, groups = [], {}
    for name, value in shown:
        group = name.split(".")[0] + "." if "." in name else None
        if name in BARE_PARAMS:
            tokens.append(fmt_value(value))
            groups[group] = len(tokens) - 1
        elif group in groups and isinstance(value, str):  # "kl" + estimator, placement -> "kl k3/loss"
            i = groups[group]
            sep = " " if "/" not in tokens[i] and " " not in tokens[i] else "/"
            tokens[i] = f"{tokens[i]}{sep}{value}"
        else:
            tokens.append(f"{name}={fmt_value(value)}")
    return " ".join(tokens) or "all runs"


def _groups_of_bare() -> dict[str, str]:
    return {p.split(".")[0] + ".": p for p in BARE_PARAMS}


def labels(keys: pd.DataFrame) -> pd.Series:
    """One label per row of `keys` (one row per condition, one column per param, canonical values).

    A param is shown for a condition when it takes more than one value among the conditions
    that agree with it on every param ordered before it; options of the algorithm or the
    regularizer ordered right after its name (`regularizer.estimator`, ...) are all judged
    within the block of that name, so `kl k3/loss` shows both options where either varies
    among the kl runs."""
    order = label_order(list(keys.columns))
    bare_of = _groups_of_bare()
    rows = [tuple(r) for r in keys[order].itertuples(index=False, name=None)]
    out = []
    for row in rows:
        block, shown, open_group = rows, [], None  # open_group: (group, its block) while its options follow
        for j, p in enumerate(order):
            group = p.split(".")[0] + "." if "." in p else None
            if open_group and open_group[0] != group:
                open_group = None
            judge = open_group[1] if open_group else block
            if len({r[j] for r in judge}) > 1:
                bare = bare_of.get(group)
                if open_group and bare not in {q for q, _ in shown}:  # "kl k3/loss", never a bare "k3/loss"
                    shown.append((bare, row[order.index(bare)]))
                shown.append((p, row[j]))
            block = [r for r in block if r[j] == row[j]]
            if p == bare_of.get(group):
                open_group = (group, block)
        out.append(_render(shown))
    return pd.Series(out, index=keys.index)


def _tuples(keys: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in keys.itertuples(index=False, name=None)]


def _factorize(items: list) -> tuple[list[int], list]:
    """Ids in order of first appearance (works on tuples holding None, unlike pd.factorize)."""
    seen: dict = {}
    ids = [seen.setdefault(x, len(seen)) for x in items]
    return ids, list(seen)


def annotate(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs + legacy `coef`/`reward`, `condition` (label), `condition_id` and `twin` (key without reward)."""
    runs = legacy_defaults(runs)
    params = relevant_params(runs)
    keys = _keys(runs, params)
    runs[CONDITION_ID] = _factorize(_tuples(keys))[0]
    runs[CONDITION] = _coarse_labels(keys, params)
    # Labels are unique by construction unless two values print alike (1e-4 vs 1.00001e-4): then say so.
    clash = runs.groupby(CONDITION)[CONDITION_ID].transform("nunique") > 1 if len(runs) else []
    if np.any(clash):
        runs.loc[clash, CONDITION] = runs.loc[clash, CONDITION] + " #" + runs.loc[clash, CONDITION_ID].astype(str)
    twin_params = [p for p in params if not is_reward_param(p)]
    runs[TWIN] = [repr(t) for t in _tuples(keys[twin_params])]
    runs[GRID_ROW] = _coarse_labels(keys, [p for p in params if p != M.PARAM_LR])
    return runs


def _coarse_labels(keys: pd.DataFrame, params: list[str]) -> list[str]:
    """Per run: the label of its condition with only `params` considered (e.g. without lr)."""
    ids, distinct = _factorize(_tuples(keys[params]))
    names = labels(pd.DataFrame(distinct, columns=params, dtype=object)).tolist() if distinct else []
    return [names[i] for i in ids]


def stratum(runs: pd.DataFrame, by: str) -> pd.Series:
    """Per run: a key of every condition param except `by` and its aliases (params that partition
    the runs exactly as `by` does, e.g. `temperature` beside `coef`). Runs of one stratum differ
    only in `by` (and the seed): the unit of a within-stratum trend test."""
    params = relevant_params(runs)
    keys = _keys(runs, params)
    by_ids = _factorize(keys[by].tolist())[0] if by in keys else [0] * len(runs)
    rest = []
    for p in params:
        ids = _factorize(keys[p].tolist())[0]
        alias = len(set(zip(ids, by_ids, strict=True))) == len(set(ids)) == len(set(by_ids))
        if p != by and not alias:
            rest.append(p)
    return pd.Series([repr(t) for t in _tuples(keys[rest])], index=runs.index)
