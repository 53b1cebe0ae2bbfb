"""The six report figures (matplotlib, Agg backend, PNG).

Each `figN_*` function takes the tables built by `analysis.transforms` /
`analysis.fits` and a path, draws one figure, writes it and returns the path.
Every figure is written even without data (a panel saying so), so the report
always has the same shape. Seeds are aggregated as the mean with a min-max band.

Layout shared by figures 1 and 3: one row per method (regularizer for online
RL, algorithm otherwise; controls trained on gold or zero are methods of their
own), one column per learning rate, one line per condition coloured by its
regularization coefficient; y axes shared so panels compare directly. Figure 6
(attribution) puts proxy-trained conditions beside their `reward=gold` and
`reward=zero` twins, with gold's content/fluency split.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from analysis import fits as F  # noqa: E402
from analysis.transforms import (  # noqa: E402
    BON_ALGO,
    CONDITION,
    CONTENT,
    ENTROPY,
    FLUENCY,
    GAP,
    GOLD,
    GRID_ROW,
    KL,
    OFFLINE_PREF_ALGOS,
    ONLINE_PREF_ALGOS,
    ONLINE_RL_ALGOS,
    PROXY,
    TRAINED_ON_PROXY,
    TWIN,
    D,
    curve_band,
    method_labels,
    pearson,
)
from rlhf_sweeps import metrics as M  # noqa: E402
from rlhf_sweeps.config import ENTROPY_REG, KL_REG  # noqa: E402

DPI = 150
FIG1, FIG2, FIG3, FIG4, FIG5, FIG6 = (
    "fig1_rewards_vs_step.png",
    "fig2_gold_vs_d.png",
    "fig3_kl_vs_step.png",
    "fig4_entropy_vs_gap.png",
    "fig5_grid_heatmap.png",
    "fig6_attribution.png",
)
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
}
METHOD_COLORS = plt.get_cmap("tab10").colors
COEF_CMAP = "viridis"
PREF_ALGOS = (*OFFLINE_PREF_ALGOS, *ONLINE_PREF_ALGOS)


# --- shared helpers ------------------------------------------------------------------------


def _fmt_num(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:g}"


def _with_method(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["method"] = method_labels(table)
    if CONDITION not in table:  # frames built by hand: one condition per coefficient
        table[CONDITION] = table[M.PARAM_COEF].astype(str)
    return table


def _coef_symbol(part: pd.DataFrame) -> str:
    """alpha for the entropy bonus, beta for KL and the preference temperatures (docs/science.md §1)."""
    regs, algos = set(part[M.PARAM_REGULARIZER].dropna()), set(part[M.PARAM_ALGO].dropna())
    if regs == {ENTROPY_REG}:
        return "α"
    if regs == {KL_REG} or algos <= set(PREF_ALGOS):
        return "β"
    return "coef"


def _coef_colors(values) -> dict:
    """A viridis shade per distinct coefficient of one method (NaN grey), stable across its panels."""
    vals = sorted({v for v in values if not pd.isna(v)})
    cmap = plt.get_cmap(COEF_CMAP)
    pos = np.linspace(0.1, 0.85, len(vals)) if len(vals) > 1 else [0.35] * len(vals)
    colors = {v: cmap(p) for v, p in zip(vals, pos, strict=True)}
    colors[np.nan] = "0.35"
    return colors


def _color_for(colors: dict, v):
    return colors[np.nan] if pd.isna(v) else colors[v]


def _coef_label(symbol: str, v) -> str:
    return f"{symbol} n/a" if pd.isna(v) else f"{symbol} = {v:g}"


def _empty(path: Path, title: str, message: str) -> Path:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.3")
        fig.savefig(path)
        plt.close(fig)
    return path


def _sorted_unique(series: pd.Series) -> list:
    vals = list(pd.unique(series))
    return sorted([v for v in vals if not pd.isna(v)]) + [v for v in vals if pd.isna(v)][:1]


def _select(frame: pd.DataFrame, col: str, value) -> pd.DataFrame:
    return frame[frame[col].isna()] if pd.isna(value) else frame[frame[col] == value]


def _wrap(n: int) -> int:
    return n if n <= 3 else (2 if n == 4 else 3)


def _panel_grid(table: pd.DataFrame, panel=(4.3, 3.1)):
    """Panels keyed by (method, lr): a method x lr grid when lr varies, else the methods wrapped in rows of <= 3.

    Returns (fig, {(method, lr): ax}, [unused axes]).
    """
    methods, lrs = sorted(table["method"].unique()), _sorted_unique(table[M.PARAM_LR])
    if len(lrs) > 1:
        nrows, ncols = len(methods), len(lrs)
        where = {(m, lr): (i, j) for i, m in enumerate(methods) for j, lr in enumerate(lrs)}
    else:
        ncols = _wrap(len(methods))
        nrows = int(np.ceil(len(methods) / ncols))
        where = {(m, lrs[0]): divmod(k, ncols) for k, m in enumerate(methods)}
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(panel[0] * ncols, panel[1] * nrows + 1.0),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    used = {key: axes[i, j] for key, (i, j) in where.items()}
    unused = [ax for ax in axes.flat if all(ax is not a for a in used.values())]
    return fig, used, unused


def _panel_title(method: str, lr, n_lrs: int) -> str:
    return f"{method}, lr = {_fmt_num(lr)}" if n_lrs > 1 or not pd.isna(lr) else method


def _finish(fig, handles, title: str, subtitle: str, path: Path) -> Path:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=12)
    fig.savefig(path)
    plt.close(fig)
    return path


def _banded_lines(ax, part: pd.DataFrame, colors: dict, style: str = "-") -> None:
    """One line per condition (its seed mean; band = min-max over seeds), coloured by coefficient."""
    for _, c in part.groupby(CONDITION, dropna=False):
        col = _color_for(colors, c[M.PARAM_COEF].iloc[0])
        ax.plot(c["step"], c["mean"], style, color=col, lw=1.8)
        if (c["n"] > 1).any():
            ax.fill_between(c["step"], c["lo"], c["hi"], color=col, alpha=0.2, lw=0)


def _coef_legend(ax, part: pd.DataFrame, colors: dict) -> None:
    symbol = _coef_symbol(part)
    coefs = _sorted_unique(part[M.PARAM_COEF])
    if len(coefs) > 1 or (coefs and not pd.isna(coefs[0])):
        handles = [Line2D([], [], color=_color_for(colors, c), lw=2.5, label=_coef_label(symbol, c)) for c in coefs]
        ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.85)


# --- figure 1 --------------------------------------------------------------------------------


def fig1_rewards_vs_step(table: pd.DataFrame, path: Path) -> Path:
    """Gold (solid) and proxy (dashed) vs step, re-centered on step 0; one panel per (method, lr)."""
    title = "Gold and proxy reward during training"
    table = table[table[M.PARAM_ALGO] != BON_ALGO]
    if table.empty or table[GOLD].isna().all():
        return _empty(path, title, "no run with eval gold reward")
    table = _with_method(table)
    keys = ["method", M.PARAM_LR, M.PARAM_COEF, CONDITION]
    bands = {v: curve_band(table, keys, v) for v in (GOLD, PROXY)}
    n_lrs = table[M.PARAM_LR].nunique(dropna=False)
    n_seeds = int(table.groupby(keys, dropna=False)["run_id"].nunique().max())
    with plt.rc_context(STYLE):
        fig, panels, unused = _panel_grid(table)
        for (method, lr), ax in panels.items():
            colors = _coef_colors(table.loc[table["method"] == method, M.PARAM_COEF])
            for value, style in ((GOLD, "-"), (PROXY, "--")):
                part = _select(bands[value][bands[value]["method"] == method], M.PARAM_LR, lr)
                _banded_lines(ax, part, colors, style)
            ax.axhline(0, color="0.5", lw=0.8, zorder=0)
            ax.set_title(_panel_title(method, lr, n_lrs))
            ax.set_xlabel("optimizer step")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("reward − step-0 value (gold std)")
            _coef_legend(ax, _select(table[table["method"] == method], M.PARAM_LR, lr), colors)
        for ax in unused:
            ax.set_axis_off()
        handles = [
            Line2D([], [], color="k", ls="-", lw=1.8, label="gold"),
            Line2D([], [], color="k", ls="--", lw=1.8, label="proxy"),
        ]
        sub = f"one line per condition: mean over seeds (up to {n_seeds}), band = min–max; re-centered on step 0"
        return _finish(fig, handles, title, sub, path)


# --- figure 2 --------------------------------------------------------------------------------


def fig2_gold_vs_d(
    table: pd.DataFrame, run_fits: pd.DataFrame, bon: pd.DataFrame, bon_fit: F.Fit | None, path: Path
) -> Path:
    """Gold vs d = sqrt(KL) per run with its fitted RL form; best-of-n overlaid in every panel."""
    title = "Gold reward vs d = √KL with Gao et al. (2022) fits"
    table = table[table[M.PARAM_ALGO] != BON_ALGO].dropna(subset=[D, GOLD])
    has_bon = bon is not None and not bon.empty and bon[GOLD].notna().any()
    if table.empty and not has_bon:
        return _empty(path, title, "no run with eval gold reward and KL")
    table = _with_method(table) if not table.empty else table.assign(method=pd.Series(dtype=str))
    methods = sorted(table["method"].unique()) if not table.empty else ["best-of-n"]
    lrs = _sorted_unique(table[M.PARAM_LR]) if not table.empty else []
    markers = {lr: "osD^v<>p*h"[i % 10] for i, lr in enumerate(lrs)}
    fits = run_fits.set_index("run_id") if run_fits is not None and not run_fits.empty else pd.DataFrame()
    ncols = _wrap(len(methods))
    nrows = int(np.ceil(len(methods) / ncols))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows + 1.0), squeeze=False, sharey=True, layout="constrained"
        )
        for k, ax in enumerate(axes.flat):
            if k >= len(methods):
                ax.set_axis_off()
                continue
            method = methods[k]
            part = table[table["method"] == method]
            colors = _coef_colors(part[M.PARAM_COEF])
            for run_id, one in part.groupby("run_id"):
                one = one.sort_values(D)
                col = _color_for(colors, one[M.PARAM_COEF].iloc[0])
                marker = markers.get(one[M.PARAM_LR].iloc[0], "o")
                ax.scatter(one[D], one[GOLD], s=13, color=col, alpha=0.8, marker=marker, lw=0, zorder=2)
                if run_id in fits.index and np.isfinite(fits.loc[run_id, "a"]):
                    grid = np.linspace(0, one[D].max(), 100)
                    ax.plot(
                        grid,
                        F.predict(grid, fits.loc[run_id, "a"], fits.loc[run_id, "b"], F.RL),
                        color=col,
                        lw=1.1,
                        alpha=0.9,
                    )
            if has_bon:
                _draw_bon(ax, bon, bon_fit)
            ax.axhline(0, color="0.5", lw=0.8, zorder=0)
            ax.set_title(method)
            ax.set_xlabel("d = √KL(π ‖ π_init)  [√nats]")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("gold − step-0 gold (std)")
            if not part.empty:
                _coef_legend(ax, part, colors)
        handles = [Line2D([], [], color="0.2", ls="-", lw=1.2, label="per-run fit d(a − b ln d)")]
        if len(lrs) > 1:
            handles += [
                Line2D([], [], color="0.3", marker=markers[lr], ls="", label=f"lr = {_fmt_num(lr)}") for lr in lrs
            ]
        if has_bon:
            handles += [
                Line2D([], [], color="k", marker="s", ms=4, ls="", label="best-of-n"),
                Line2D([], [], color="k", ls=":", lw=1.5, label="best-of-n fit d(a − b d)"),
            ]
        return _finish(
            fig, handles, title, "points = evals of each run; gold re-centered on step 0 (best-of-n: on n = 1)", path
        )


def _draw_bon(ax, bon: pd.DataFrame, bon_fit: F.Fit | None) -> None:
    agg = bon.dropna(subset=[D, GOLD]).groupby("n")[[D, GOLD]].mean().sort_values(D)
    ax.plot(agg[D], agg[GOLD], "s", color="k", ms=4, zorder=3)
    if bon_fit is not None and np.isfinite(bon_fit.a):
        grid = np.linspace(0, agg[D].max(), 100)
        ax.plot(grid, F.predict(grid, bon_fit.a, bon_fit.b, F.BON), ":", color="k", lw=1.5, zorder=3)


# --- figure 3 --------------------------------------------------------------------------------


def fig3_kl_vs_step(table: pd.DataFrame, path: Path) -> Path:
    """KL to the initial policy vs step on a log axis; one panel per (method, lr), a line per coefficient."""
    title = "KL(π ‖ π_init) during training"
    table = table[(table[M.PARAM_ALGO] != BON_ALGO) & (table[KL] > 0)]
    if table.empty:
        return _empty(path, title, "no run with positive eval KL")
    table = _with_method(table)
    band = curve_band(table, ["method", M.PARAM_LR, M.PARAM_COEF, CONDITION], KL)
    n_lrs = table[M.PARAM_LR].nunique(dropna=False)
    with plt.rc_context(STYLE):
        fig, panels, unused = _panel_grid(table)
        for (method, lr), ax in panels.items():
            colors = _coef_colors(table.loc[table["method"] == method, M.PARAM_COEF])
            _banded_lines(ax, _select(band[band["method"] == method], M.PARAM_LR, lr), colors)
            ax.set_yscale("log")
            ax.set_title(_panel_title(method, lr, n_lrs))
            ax.set_xlabel("optimizer step")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("KL, sequence sum [nats]")
            _coef_legend(ax, _select(table[table["method"] == method], M.PARAM_LR, lr), colors)
        for ax in unused:
            ax.set_axis_off()
        return _finish(
            fig, [], title, "exact KL from full distributions, log scale; mean over seeds, band = min–max", path
        )


# --- figure 4 --------------------------------------------------------------------------------


def fig4_entropy_vs_gap(table: pd.DataFrame, path: Path) -> Path:
    """Policy entropy vs proxy-gold gap at every eval after step 0; Pearson r per method in the legend."""
    title = "Policy entropy vs proxy−gold gap"
    table = table[(table[M.PARAM_ALGO] != BON_ALGO) & (table["step"] > 0)].dropna(subset=[ENTROPY, GAP])
    if table.empty:
        return _empty(path, title, "no run with eval entropy, gold and proxy")
    table = _with_method(table)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        for k, (method, part) in enumerate(sorted(table.groupby("method"), key=lambda t: t[0])):
            r, n = pearson(part[ENTROPY], part[GAP])
            label = (
                f"{method}: r = {r:+.2f} (n = {n} evals, {part['run_id'].nunique()} runs)"
                if np.isfinite(r)
                else f"{method}: r n/a (n = {n})"
            )
            ax.scatter(part[ENTROPY], part[GAP], s=16, alpha=0.6, color=METHOD_COLORS[k % 10], lw=0, label=label)
        ax.axhline(0, color="0.5", lw=0.8, zorder=0)
        ax.set_xlabel("entropy of the policy, sequence sum [nats]")
        ax.set_ylabel("proxy − gold, re-centered (std)")
        ax.set_title(title + "\n(each point = one eval of one run after step 0; Pearson r per method)")
        ax.legend(loc="best", frameon=True, framealpha=0.9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
    return path


# --- figure 6 --------------------------------------------------------------------------------

REWARD_ORDER = (TRAINED_ON_PROXY, "gold", "zero")  # column order of the attribution figure
REWARD_TITLES = {TRAINED_ON_PROXY: "trained on the proxy", "gold": "trained on gold (oracle)", "zero": "no reward"}
PART_STYLES = ((GOLD, "-", "gold"), (CONTENT, "--", "content"), (FLUENCY, ":", "fluency"))


def fig6_attribution(table: pd.DataFrame, path: Path) -> Path:
    """Gold vs step, proxy-trained beside oracle-trained (and reward=zero) twins, per regularizer and lr.

    Lines: gold (solid, band = min-max over seeds), its content (dashed) and fluency (dotted)
    parts, seed means; colour = coefficient. Only online conditions that have a control twin."""
    title = "Attribution: exploitation of the proxy vs the regularizer's own drift"
    need = {TWIN, M.PARAM_REWARD}
    online = table[M.PARAM_ALGO].isin((*ONLINE_RL_ALGOS, *ONLINE_PREF_ALGOS))
    t = table[online] if need <= set(table) else table.iloc[:0]
    t = t.dropna(subset=[GOLD])
    with_controls = t.groupby(TWIN)[M.PARAM_REWARD].nunique() if not t.empty else pd.Series(dtype=int)
    t = t[t[TWIN].isin(with_controls[with_controls > 1].index)] if not t.empty else t
    if t.empty:
        return _empty(path, title, "no reward=gold or reward=zero controls in this selection:\nC2a and C2b: no data")
    t = _with_method(t)
    t["_row"] = [
        f"{r} ({a}), lr = {_fmt_num(lr)}"
        for a, r, lr in zip(t[M.PARAM_ALGO], t[M.PARAM_REGULARIZER], t[M.PARAM_LR], strict=True)
    ]
    rows = sorted(t["_row"].unique())
    cols = [r for r in REWARD_ORDER if r in set(t[M.PARAM_REWARD])] + sorted(set(t[M.PARAM_REWARD]) - set(REWARD_ORDER))
    parts = [p for p in PART_STYLES if p[0] in t and t[p[0]].notna().any()]
    bands = {p: curve_band(t, ["_row", M.PARAM_REWARD, M.PARAM_COEF, CONDITION], p) for p, *_ in parts}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(rows), len(cols), figsize=(4.4 * len(cols), 3.1 * len(rows) + 1.0), squeeze=False, sharey=True,
            layout="constrained",
        )
        for i, row in enumerate(rows):
            colors = _coef_colors(t.loc[t["_row"] == row, M.PARAM_COEF])
            for j, reward in enumerate(cols):
                ax = axes[i, j]
                for p, style, _ in parts:
                    b = bands[p]
                    sel = b[(b["_row"] == row) & (b[M.PARAM_REWARD] == reward)]
                    for _, c in sel.groupby(CONDITION):
                        col = _color_for(colors, c[M.PARAM_COEF].iloc[0])
                        ax.plot(c["step"], c["mean"], style, color=col, lw=1.8 if p == GOLD else 1.2)
                        if p == GOLD and (c["n"] > 1).any():
                            ax.fill_between(c["step"], c["lo"], c["hi"], color=col, alpha=0.18, lw=0)
                ax.axhline(0, color="0.5", lw=0.8, zorder=0)
                ax.set_title(f"{row}\n{REWARD_TITLES.get(reward, 'reward = ' + str(reward))}", fontsize=10)
                ax.set_xlabel("optimizer step")
                if j == 0:
                    ax.set_ylabel("value − step-0 value (gold std)")
                sub = t[(t["_row"] == row) & (t[M.PARAM_REWARD] == reward)]
                if not sub.empty:
                    _coef_legend(ax, sub, colors)
                else:
                    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="0.4")
        handles = [Line2D([], [], color="k", ls=style, lw=1.6, label=label) for _, style, label in parts]
        sub = (
            "seed means (band: gold min–max); gold = content + fluency (embedded world); "
            "exploitation = fall under the proxy − fall under the oracle"
        )
        return _finish(fig, handles, title, sub, path)


# --- figure 5 --------------------------------------------------------------------------------

HEATMAP_VALUES = (
    ("peak_gold", "peak gold (std)", "viridis", "{:.2f}"),
    ("fall", "fall from the peak window (std)", "Reds", "{:.2f}"),
    ("final_kl", "final KL [nats]", "magma_r", "{:.3g}"),
)


def grid_axes(summary: pd.DataFrame) -> tuple[list[str], str]:
    """Heat-map rows and column from the sweep grid: columns = lr; rows = method x coefficient x the
    condition without its lr (`grid_row`), so runs that differ in anything but lr and seed never share
    a cell. Coefficients mean different things per method, so they index rows within a method."""
    rows = ["method", M.PARAM_COEF] + ([GRID_ROW] if GRID_ROW in summary else [])
    return rows, M.PARAM_LR


def _row_label(keys, values, symbol: str) -> str:
    if GRID_ROW in keys:  # the generated condition label (without lr) says it all
        return str(values[list(keys).index(GRID_ROW)])
    parts = []
    for k, v in zip(keys, values, strict=True):
        if k == "method":
            parts.append(str(v))
        elif k == M.PARAM_COEF:
            if not pd.isna(v):
                parts.append(f"{symbol} = {v:g}")
        elif k == GRID_ROW:
            parts.append(f"[{v}]")
        else:
            parts.append(f"{k.split('.')[0]} {v}")
    return ", ".join(parts)


def _sort_key(values) -> tuple:
    return tuple((0, v, 0.0) if isinstance(v, str) else (1, "", -np.inf if pd.isna(v) else float(v)) for v in values)


def fig5_grid_heatmap(summary: pd.DataFrame, path: Path) -> Path:
    """Seed-mean peak gold, fall from the peak window (analysis.verdicts) and final KL over the sweep grid."""
    title = "Over-optimization across the sweep grid"
    summary = (
        summary[(summary[M.PARAM_ALGO] != BON_ALGO) & summary["peak_gold"].notna()] if not summary.empty else summary
    )
    if summary.empty:
        return _empty(path, title, "no run with eval gold reward")
    rows, col = grid_axes(summary)
    values = [v for v, *_ in HEATMAP_VALUES]
    agg = summary.groupby([*rows, col], dropna=False)[values].mean()
    counts = summary.groupby([*rows, col], dropna=False).size()
    row_index = sorted({k[:-1] for k in agg.index}, key=_sort_key)
    col_index = _sorted_unique(summary[col])
    symbols = {m: _coef_symbol(part) for m, part in summary.groupby("method")}
    row_labels = [_row_label(rows, rk, symbols.get(rk[0], "coef")) for rk in row_index]
    uniform_n = counts.nunique() == 1
    panel_w = max(2.6, 0.95 * len(col_index) + 1.6)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1,
            3,
            figsize=(3 * panel_w + 1.4, 0.36 * len(row_index) + 1.9),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        for ax, (value, label, cmap, fmt) in zip(axes[0], HEATMAP_VALUES, strict=True):
            mat = np.full((len(row_index), len(col_index)), np.nan)
            for r, rk in enumerate(row_index):
                for c, ck in enumerate(col_index):
                    if (*rk, ck) in agg.index:
                        mat[r, c] = agg.loc[(*rk, ck), value]
            im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, norm=_norm(value, mat), aspect="auto")
            ax.set_facecolor("0.92")
            ax.grid(False)
            for r in range(mat.shape[0]):
                for c in range(mat.shape[1]):
                    if np.isfinite(mat[r, c]):
                        v = mat[r, c]
                        txt = fmt.format(0.0 if abs(v) < 5e-3 and value != "final_kl" else v)
                        if not uniform_n:
                            txt += f"\n(n={counts.get((*row_index[r], col_index[c]), 0)})"
                        ax.text(c, r, txt, ha="center", va="center", fontsize=8, color=_ink(im, mat[r, c]))
            ax.set_xticks(range(len(col_index)), [_fmt_num(v) for v in col_index])
            ax.set_yticks(range(len(row_index)), row_labels)
            ax.tick_params(axis="both", length=0)
            ax.set_xlabel("learning rate")
            ax.set_title(label)
            for spine in ax.spines.values():
                spine.set_visible(False)
            fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
        n_txt = f"{int(counts.iloc[0])} seed(s) per cell" if uniform_n else "n = runs per cell"
        fig.suptitle(f"{title}\nmean over seeds ({n_txt}); grey = not in the sweep", fontsize=12)
        fig.savefig(path)
        plt.close(fig)
    return path


def _norm(value: str, mat: np.ndarray):
    finite = mat[np.isfinite(mat)]
    if finite.size == 0:
        return None
    if value == "final_kl" and finite.min() > 0 and finite.max() / finite.min() > 20:
        return LogNorm(vmin=finite.min(), vmax=finite.max())
    return None


def _ink(im, value: float) -> str:
    r, g, b, _ = im.cmap(im.norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def all_figures(table, summary, run_fits, bon, bon_fit, out_dir: Path) -> list[Path]:
    """Every figure, the attribution figure first (the report leads with it)."""
    out_dir = Path(out_dir)
    return [
        fig6_attribution(table, out_dir / FIG6),
        fig1_rewards_vs_step(table, out_dir / FIG1),
        fig2_gold_vs_d(table, run_fits, bon, bon_fit, out_dir / FIG2),
        fig3_kl_vs_step(table, out_dir / FIG3),
        fig4_entropy_vs_gap(table, out_dir / FIG4),
        fig5_grid_heatmap(summary, out_dir / FIG5),
    ]
