"""The five report figures (matplotlib, Agg backend, PNG).

Each `figN_*` function takes the tables built by `analysis.transforms` /
`analysis.fits` and a path, draws one figure, writes it and returns the path.
Every figure is written even without data (a panel saying so), so the report
always has the same shape. Seeds are aggregated as the mean with a min-max band.

Layout shared by figures 1 and 3: one row per method (regularizer for online
RL, algorithm otherwise), one column per learning rate, one line per
regularization coefficient; y axes shared so panels compare directly.
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
    D,
    ENTROPY,
    GAP,
    GOLD,
    KL,
    PROXY,
    BON_ALGO,
    curve_band,
    method_label,
    pearson,
)
from rlhf_sweeps import metrics as M  # noqa: E402

DPI = 150
FIG1, FIG2, FIG3, FIG4, FIG5 = (
    "fig1_rewards_vs_step.png",
    "fig2_gold_vs_d.png",
    "fig3_kl_vs_step.png",
    "fig4_entropy_vs_gap.png",
    "fig5_grid_heatmap.png",
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


# --- shared helpers ------------------------------------------------------------------------


def _fmt_num(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:g}"


def _with_method(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    table["method"] = [method_label(a, r) for a, r in zip(table[M.PARAM_ALGO], table[M.PARAM_REGULARIZER])]
    return table


def _coef_colors(values) -> dict:
    """A viridis shade per distinct coefficient (NaN last), stable across panels."""
    vals = sorted({v for v in values if not pd.isna(v)})
    cmap = plt.get_cmap(COEF_CMAP)
    pos = np.linspace(0.05, 0.85, len(vals)) if len(vals) > 1 else [0.35]
    colors = {v: cmap(p) for v, p in zip(vals, pos)}
    colors[np.nan] = "0.35"
    return colors


def _color_for(colors: dict, v):
    return colors[np.nan] if pd.isna(v) else colors[v]


def _coef_label(v) -> str:
    return "coef n/a" if pd.isna(v) else f"coef {v:g}"


def _empty(path: Path, title: str, message: str) -> Path:
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="0.3")
        fig.savefig(path)
        plt.close(fig)
    return path


def _grid(methods, lrs, sharey=True, panel=(4.2, 3.0)):
    fig, axes = plt.subplots(
        len(methods),
        len(lrs),
        figsize=(panel[0] * len(lrs) + 0.6, panel[1] * len(methods) + 0.9),
        sharex=False,
        sharey=sharey,
        squeeze=False,
    )
    return fig, axes


def _sorted_unique(series: pd.Series) -> list:
    vals = list(pd.unique(series))
    return sorted([v for v in vals if not pd.isna(v)]) + [v for v in vals if pd.isna(v)][:1]


def _select(frame: pd.DataFrame, col: str, value) -> pd.DataFrame:
    return frame[frame[col].isna()] if pd.isna(value) else frame[frame[col] == value]


def _lr_title(method: str, lr) -> str:
    return f"{method}, lr {_fmt_num(lr)}"


# --- figure 1 --------------------------------------------------------------------------------


def fig1_rewards_vs_step(table: pd.DataFrame, path: Path) -> Path:
    """Gold (solid) and proxy (dashed) vs step, re-centered on step 0; rows = method, cols = lr."""
    title = "Gold and proxy reward during training"
    table = table[table[M.PARAM_ALGO] != BON_ALGO]
    if table.empty or table[GOLD].isna().all():
        return _empty(path, title, "no run with eval gold reward")
    table = _with_method(table)
    methods, lrs = sorted(table["method"].unique()), _sorted_unique(table[M.PARAM_LR])
    colors = _coef_colors(table[M.PARAM_COEF])
    keys = ["method", M.PARAM_LR, M.PARAM_COEF]
    bands = {v: curve_band(table, keys, v) for v in (GOLD, PROXY)}
    with plt.rc_context(STYLE):
        fig, axes = _grid(methods, lrs)
        for i, method in enumerate(methods):
            for j, lr in enumerate(lrs):
                ax = axes[i, j]
                seen = False
                for value, style in ((GOLD, "-"), (PROXY, "--")):
                    part = _select(bands[value][bands[value]["method"] == method], M.PARAM_LR, lr)
                    for coef, c in part.groupby(M.PARAM_COEF, dropna=False):
                        col = _color_for(colors, coef)
                        ax.plot(c["step"], c["mean"], style, color=col, lw=1.8)
                        ax.fill_between(c["step"], c["lo"], c["hi"], color=col, alpha=0.18, lw=0)
                        seen = True
                if not seen:
                    ax.set_axis_off()
                    continue
                ax.axhline(0, color="0.5", lw=0.8, zorder=0)
                ax.set_title(_lr_title(method, lr))
                if i == len(methods) - 1 or not axes[i + 1, j].has_data():
                    ax.set_xlabel("optimizer step")
                if j == 0:
                    ax.set_ylabel("reward − step-0 value\n(initial-policy gold std)")
        n_seeds = table.groupby(keys, dropna=False)["run_id"].nunique()
        handles = [Line2D([], [], color="k", ls="-", lw=1.8, label="gold"), Line2D([], [], color="k", ls="--", lw=1.8, label="proxy")]
        handles += [Line2D([], [], color=_color_for(colors, c), lw=4, label=_coef_label(c)) for c in _sorted_unique(table[M.PARAM_COEF])]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), frameon=False, bbox_to_anchor=(0.5, 1.0))
        fig.suptitle(
            f"{title} (mean over seeds, band = min–max; {int(n_seeds.max())} seed(s) max per line)", y=1.0 + 0.05, fontsize=12
        )
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.savefig(path)
        plt.close(fig)
    return path


# --- figure 2 --------------------------------------------------------------------------------


def fig2_gold_vs_d(table: pd.DataFrame, run_fits: pd.DataFrame, bon: pd.DataFrame, bon_fit: F.Fit | None, path: Path) -> Path:
    """Gold vs d = sqrt(KL) per run with its fitted RL form; best-of-n overlaid in every panel."""
    title = "Gold reward vs d = √KL, with Gao et al. fits"
    table = table[table[M.PARAM_ALGO] != BON_ALGO].dropna(subset=[D, GOLD])
    has_bon = bon is not None and not bon.empty and bon[GOLD].notna().any()
    if table.empty and not has_bon:
        return _empty(path, title, "no run with eval gold reward and KL")
    table = _with_method(table) if not table.empty else table.assign(method=[])
    methods = sorted(table["method"].unique()) if not table.empty else ["best-of-n"]
    colors = _coef_colors(table[M.PARAM_COEF]) if not table.empty else {}
    lrs = _sorted_unique(table[M.PARAM_LR]) if not table.empty else []
    markers = dict(zip(lrs, "osD^v<>p*h"))
    fits = run_fits.set_index("run_id") if run_fits is not None and not run_fits.empty else pd.DataFrame()
    ncols = min(len(methods), 3)
    nrows = int(np.ceil(len(methods) / ncols))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.8), squeeze=False, sharey=True)
        for k, ax in enumerate(axes.flat):
            if k >= len(methods):
                ax.set_axis_off()
                continue
            method = methods[k]
            part = table[table["method"] == method]
            for run_id, one in part.groupby("run_id"):
                one = one.sort_values(D)
                col = _color_for(colors, one[M.PARAM_COEF].iloc[0])
                ax.scatter(one[D], one[GOLD], s=14, color=col, alpha=0.75, marker=markers.get(one[M.PARAM_LR].iloc[0], "o"), lw=0)
                if run_id in fits.index and np.isfinite(fits.loc[run_id, "a"]):
                    grid = np.linspace(0, one[D].max(), 100)
                    ax.plot(grid, F.predict(grid, fits.loc[run_id, "a"], fits.loc[run_id, "b"], F.RL), color=col, lw=1.2)
            if has_bon:
                _draw_bon(ax, bon, bon_fit)
            ax.axhline(0, color="0.5", lw=0.8, zorder=0)
            ax.set_title(method)
            ax.set_xlabel("d = √KL(π ‖ π_init)  [√nats]")
            if k % ncols == 0:
                ax.set_ylabel("gold − step-0 gold (std)")
        handles = [Line2D([], [], color=_color_for(colors, c), marker="o", ls="-", lw=1.2, label=_coef_label(c)) for c in _sorted_unique(table[M.PARAM_COEF])] if not table.empty else []
        if len(lrs) > 1:
            handles += [Line2D([], [], color="0.3", marker=markers[lr], ls="", label=f"lr {_fmt_num(lr)}") for lr in lrs]
        handles.append(Line2D([], [], color="0.2", ls="-", lw=1.2, label="fit: d(a − b ln d)"))
        if has_bon:
            handles += [
                Line2D([], [], color="k", marker="s", ms=4, ls="", label="best-of-n (data)"),
                Line2D([], [], color="k", ls=":", lw=1.5, label="fit: d(a − b d)"),
            ]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), frameon=False, bbox_to_anchor=(0.5, 1.0))
        fig.suptitle(title + " (points = evals; lines = per-run least-squares fits)", y=1.05, fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.savefig(path)
        plt.close(fig)
    return path


def _draw_bon(ax, bon: pd.DataFrame, bon_fit: F.Fit | None) -> None:
    agg = bon.dropna(subset=[D, GOLD]).groupby("n")[[D, GOLD]].mean().sort_values(D)
    ax.plot(agg[D], agg[GOLD], "s", color="k", ms=4, zorder=3)
    if bon_fit is not None and np.isfinite(bon_fit.a):
        grid = np.linspace(0, agg[D].max(), 100)
        ax.plot(grid, F.predict(grid, bon_fit.a, bon_fit.b, F.BON), ":", color="k", lw=1.5, zorder=3)


# --- figure 3 --------------------------------------------------------------------------------


def fig3_kl_vs_step(table: pd.DataFrame, path: Path) -> Path:
    """KL to the initial policy vs step on a log axis; rows = method, cols = lr, lines = coef."""
    title = "KL(π ‖ π_init) during training"
    table = table[(table[M.PARAM_ALGO] != BON_ALGO) & (table[KL] > 0)]
    if table.empty:
        return _empty(path, title, "no run with positive eval KL")
    table = _with_method(table)
    methods, lrs = sorted(table["method"].unique()), _sorted_unique(table[M.PARAM_LR])
    colors = _coef_colors(table[M.PARAM_COEF])
    keys = ["method", M.PARAM_LR, M.PARAM_COEF]
    band = curve_band(table, keys, KL)
    with plt.rc_context(STYLE):
        fig, axes = _grid(methods, lrs)
        for i, method in enumerate(methods):
            for j, lr in enumerate(lrs):
                ax = axes[i, j]
                part = _select(band[band["method"] == method], M.PARAM_LR, lr)
                if part.empty:
                    ax.set_axis_off()
                    continue
                for coef, c in part.groupby(M.PARAM_COEF, dropna=False):
                    col = _color_for(colors, coef)
                    ax.plot(c["step"], c["mean"], color=col, lw=1.8)
                    ax.fill_between(c["step"], c["lo"], c["hi"], color=col, alpha=0.18, lw=0)
                ax.set_yscale("log")
                ax.set_title(_lr_title(method, lr))
                ax.set_xlabel("optimizer step")
                if j == 0:
                    ax.set_ylabel("KL, sequence sum [nats]")
        handles = [Line2D([], [], color=_color_for(colors, c), lw=4, label=_coef_label(c)) for c in _sorted_unique(table[M.PARAM_COEF])]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), frameon=False, bbox_to_anchor=(0.5, 1.0))
        fig.suptitle(title + " (exact, log scale; mean over seeds, band = min–max)", y=1.05, fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.savefig(path)
        plt.close(fig)
    return path


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
            label = f"{method}: r = {r:+.2f} (n = {n} evals, {part['run_id'].nunique()} runs)" if np.isfinite(r) else f"{method}: r n/a (n = {n})"
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


# --- figure 5 --------------------------------------------------------------------------------

HEATMAP_VALUES = (
    ("peak_gold", "peak gold (std)", "viridis"),
    ("drop", "final − peak gold (std)", "Reds_r"),
    ("final_kl", "final KL [nats]", "magma_r"),
)


def grid_axes(summary: pd.DataFrame) -> tuple[list[str], str | None]:
    """Heat-map rows and column from the params that vary: cols = lr if it varies (else coef), rows = the rest."""
    keys = [M.PARAM_LR, M.PARAM_COEF, M.PARAM_MODEL, M.PARAM_TASK]
    varies = [k for k in keys if k in summary and summary[k].nunique(dropna=False) > 1]
    col = M.PARAM_LR if M.PARAM_LR in varies else (M.PARAM_COEF if M.PARAM_COEF in varies else None)
    rows = ["method"] + [k for k in (M.PARAM_COEF, M.PARAM_MODEL, M.PARAM_TASK) if k in varies and k != col]
    return rows, col


def _row_label(keys, values) -> str:
    parts = []
    for k, v in zip(keys, values):
        if k == "method":
            parts.append(str(v))
        elif k == M.PARAM_COEF:
            parts.append("coef n/a" if pd.isna(v) else f"coef {v:g}")
        else:
            parts.append(f"{k.split('.')[0]} {v}")
    return ", ".join(parts)


def fig5_grid_heatmap(summary: pd.DataFrame, path: Path) -> Path:
    """Seed-mean peak gold, final-minus-peak gold and final KL over the sweep grid."""
    title = "Sweep grid: peak gold, drop from peak, final KL"
    summary = summary[(summary[M.PARAM_ALGO] != BON_ALGO) & summary["peak_gold"].notna()] if not summary.empty else summary
    if summary.empty:
        return _empty(path, title, "no run with eval gold reward")
    rows, col = grid_axes(summary)
    frame = summary.assign(_col=summary[col] if col else "all")
    agg = frame.groupby([*rows, "_col"], dropna=False)[[v for v, _, _ in HEATMAP_VALUES]].mean()
    counts = frame.groupby([*rows, "_col"], dropna=False).size()
    row_index = sorted({k[:-1] for k in agg.index}, key=lambda t: tuple((str(x) if isinstance(x, str) else f"{x:020.10f}") for x in t))
    col_index = _sorted_unique(frame["_col"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1, 3, figsize=(3 * max(2.6, 1.1 * len(col_index) + 1.8), 0.42 * len(row_index) + 1.9), squeeze=False
        )
        for ax, (value, label, cmap) in zip(axes[0], HEATMAP_VALUES):
            mat = np.full((len(row_index), len(col_index)), np.nan)
            for r, rk in enumerate(row_index):
                for c, ck in enumerate(col_index):
                    key = (*rk, ck)
                    if key in agg.index:
                        mat[r, c] = agg.loc[key, value]
            im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, norm=_norm(value, mat), aspect="auto")
            ax.set_facecolor("0.9")
            ax.grid(False)
            for r in range(mat.shape[0]):
                for c in range(mat.shape[1]):
                    if np.isfinite(mat[r, c]):
                        n = counts.get((*row_index[r], col_index[c]), 0)
                        txt = f"{mat[r, c]:.2g}" + (f"\n(n={n})" if n > 1 else "")
                        ax.text(c, r, txt, ha="center", va="center", fontsize=7.5, color=_ink(im, mat[r, c]))
            ax.set_xticks(range(len(col_index)), [_fmt_num(v) if col else "all" for v in col_index])
            ax.set_yticks(range(len(row_index)), [_row_label(rows, rk) for rk in row_index] if ax is axes[0, 0] else [])
            ax.set_xlabel(col if col else "")
            ax.set_title(label)
            fig.colorbar(im, ax=ax, shrink=0.85, pad=0.02)
        fig.suptitle(title + " (mean over seeds)", fontsize=12)
        fig.tight_layout()
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
    out_dir = Path(out_dir)
    return [
        fig1_rewards_vs_step(table, out_dir / FIG1),
        fig2_gold_vs_d(table, run_fits, bon, bon_fit, out_dir / FIG2),
        fig3_kl_vs_step(table, out_dir / FIG3),
        fig4_entropy_vs_gap(table, out_dir / FIG4),
        fig5_grid_heatmap(summary, out_dir / FIG5),
    ]
