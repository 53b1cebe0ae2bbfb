"""Tables -> fits -> figures -> verdicts -> one self-contained HTML report + CSV/markdown files.

`build(runs, metrics, out_dir)` is pure of MLflow: it takes the two frames
`analysis.load` produces (from MLflow or its parquet cache), so it also serves
frames built by hand in tests or notebooks. Figures are embedded in the HTML
as base64 PNGs (the file opens anywhere, and as an MLflow artifact) and are
also written next to it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures, fits, transforms, verdicts
from rlhf_sweeps import metrics as M

REPORT = "report.html"
FITS_CSV, FIT_GROUPS_CSV, PEAKS_CSV, VERDICTS_CSV, VERDICTS_MD = (
    "fits.csv",
    "fit_groups.csv",
    "peaks.csv",
    "verdicts.csv",
    "verdicts.md",
)
MISSING_CSV, RUNS_CSV = "missing_metrics.csv", "runs.csv"
KEY_COLS = [M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_LR, M.PARAM_COEF, M.PARAM_SEED]


@dataclass
class Report:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    runs: pd.DataFrame | None = None
    missing: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    run_fits: pd.DataFrame | None = None
    group_fits: pd.DataFrame | None = None
    verdicts: pd.DataFrame | None = None

    @property
    def html(self) -> Path:
        return self.out_dir / REPORT


def analyze(runs: pd.DataFrame, metrics: pd.DataFrame, n_boot: int = fits.N_BOOT) -> dict:
    """Every table of the report, as DataFrames (no files)."""
    metrics = _with_columns(metrics)
    table = transforms.eval_table(metrics)
    table = table[table[M.PARAM_ALGO] != transforms.BON_ALGO]
    summary = verdicts.flag_runs(transforms.run_summary(table))
    keys = ["run_name", M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_LR, M.PARAM_COEF, M.PARAM_SEED]
    run_fits = fits.fit_runs(table, fits.RL, keys=keys)
    group_fits = fits.fit_groups(table, transforms.group_keys(runs), fits.RL, n_boot=n_boot)
    bon = transforms.bon_table(metrics)
    bon_fits = fits.fit_runs(bon, fits.BON, keys=keys)
    bon_pooled = fits.fit(bon[transforms.D], bon[transforms.GOLD], fits.BON) if not bon.empty else None
    return {
        "table": table,
        "summary": summary,
        "missing": transforms.missing_metrics(runs, metrics),
        "run_fits": run_fits,
        "group_fits": group_fits,
        "bon": bon,
        "bon_fits": bon_fits,
        "bon_pooled": bon_pooled,
        "verdicts": verdicts.judge(summary, run_fits, bon_fits),
    }


def _with_columns(metrics: pd.DataFrame) -> pd.DataFrame:
    """The tidy frame with every column `analysis.load` gives it, even when it holds no rows."""
    metrics = metrics.copy()
    for col in ("run_id", "run_name", "status", *transforms.RUN_KEYS, "key", "step", "value"):
        if col not in metrics:
            metrics[col] = pd.Series(dtype=float if col in ("step", "value") else object)
    return metrics


def runs_table(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The runs section: identity, grid position, status, how far each got."""
    cols = [
        "run_name",
        "status",
        *KEY_COLS,
        M.PARAM_MODEL,
        M.PARAM_TASK,
        M.TAG_SWEEP_ID,
        M.TAG_OVERRIDES,
        M.TAG_FAILURE,
        "run_id",
    ]
    out = runs[[c for c in cols if c in runs]].copy()
    if not metrics.empty:
        evals = metrics[metrics["key"] == M.EVAL_GOLD_REWARD].groupby("run_id")["step"].agg(["count", "max"])
        out["gold evals"] = out["run_id"].map(evals["count"]).fillna(0).astype(int)
        out["last eval step"] = out["run_id"].map(evals["max"])
    return out.sort_values(
        [c for c in (M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_LR, M.PARAM_COEF, M.PARAM_SEED) if c in out],
        na_position="last",
    )


PEAK_COLS = [
    "run_name",
    "method",
    M.PARAM_LR,
    M.PARAM_COEF,
    M.PARAM_SEED,
    "status",
    "n_evals",
    "peak_step",
    "peak_kl",
    "peak_gold",
    "final_step",
    "final_gold",
    "drop",
    "proxy_rise",
    "final_gap",
    "final_kl",
    "kl_growth_ratio",
    "final_entropy",
    "final_win_rate",
    "overoptimized",
    "kl_stable",
    "recentered",
    "run_id",
]


def build(
    runs: pd.DataFrame,
    metrics: pd.DataFrame,
    out_dir: str | Path,
    title: str = "rlhf-sweeps analysis",
    n_boot: int = fits.N_BOOT,
) -> Report:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = analyze(runs, metrics, n_boot=n_boot)
    rep = Report(
        out, runs=runs_table(runs, metrics), missing=t["missing"], summary=t["summary"], verdicts=t["verdicts"]
    )

    peaks = t["summary"][[c for c in PEAK_COLS if c in t["summary"]]]
    rep.run_fits = pd.concat(
        [f for f in (t["run_fits"], t["bon_fits"]) if not f.empty] or [t["run_fits"]], ignore_index=True
    )
    rep.group_fits = t["group_fits"]
    written = {
        RUNS_CSV: rep.runs,
        MISSING_CSV: rep.missing,
        FITS_CSV: rep.run_fits,
        FIT_GROUPS_CSV: rep.group_fits,
        PEAKS_CSV: peaks,
        VERDICTS_CSV: rep.verdicts,
    }
    for name, frame in written.items():
        frame.to_csv(out / name, index=False)
        rep.files.append(out / name)
    (out / VERDICTS_MD).write_text(verdicts.to_markdown(rep.verdicts))
    rep.files.append(out / VERDICTS_MD)

    figs = figures.all_figures(t["table"], t["summary"], t["run_fits"], t["bon"], t["bon_pooled"], out)
    rep.files.extend(figs)
    rep.html.write_text(_html(title, rep, peaks, figs, t["bon_pooled"]))
    rep.files.insert(0, rep.html)
    return rep


# --- HTML ----------------------------------------------------------------------------------

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1300px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .82em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: right; vertical-align: top; }
th { background: #f3f3f3; } td.text, th.text { text-align: left; }
.supported { background: #dff3df; } .contradicted { background: #f8dcdc; }
.inconclusive { background: #fbf1d3; } .nodata { background: #eee; color: #666; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; } .note { color: #555; font-size: .9em; }
.scroll { overflow-x: auto; }
"""

CAPTIONS = {
    figures.FIG1: "Gold (solid) and proxy (dashed) reward on the held-out eval prompts, each re-centered on the run's "
    "step-0 value, in units of the initial policy's gold std. Rows: method; columns: learning rate; colour: "
    "regularization coefficient. Lines are means over seeds, bands their min-max.",
    figures.FIG2: "Gold vs d = sqrt(KL to the initial policy) at every eval, with each run's least-squares fit of "
    "R(d) = d(a - b ln d) (Gao et al. 2022, RL). Black squares: best-of-n (bon/gold_reward vs sqrt(bon/kl)), "
    "dotted: its fit R(d) = d(a - b d).",
    figures.FIG3: "Exact sequence-summed KL to the initial policy (log scale); mean over seeds, band min-max.",
    figures.FIG4: "Policy entropy (sequence sum) against the proxy-gold gap at every eval after step 0. Pearson r per "
    "method in the legend; points from the same run are not independent, so r describes, it does not test.",
    figures.FIG5: "Seed means over the sweep grid: peak gold, final minus peak gold (the drop; 0 = no fall), final KL.",
}


def _table_html(frame: pd.DataFrame, max_rows: int = 500) -> str:
    if frame is None or frame.empty:
        return "<p class='note'>(none)</p>"
    frame = frame.head(max_rows)
    head = "".join(
        f"<th class='{'text' if not _numeric(frame[c]) else ''}'>{html.escape(str(c))}</th>" for c in frame.columns
    )
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in frame.columns:
            v = row[c]
            cls = "" if _numeric(frame[c]) else "text"
            cells.append(f"<td class='{cls}'>{html.escape(_cell(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _verdict_html(v: pd.DataFrame) -> str:
    rows = []
    for r in v.itertuples(index=False):
        cls = r.verdict.replace(" ", "")
        rows.append(
            f"<tr><td class='text'><b>{r.claim}</b></td><td class='text'>{html.escape(r.statement)}</td>"
            f"<td class='text {cls}'><b>{html.escape(r.verdict)}</b></td>"
            f"<td class='text'>{html.escape(r.evidence)}</td>"
            f"<td class='text note'>{html.escape(r.rule)}</td></tr>"
        )
    head = "".join(f"<th class='text'>{c}</th>" for c in ("claim", "statement", "verdict", "evidence", "rule"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(Path(path).name)}'>"


def _html(title: str, rep: Report, peaks: pd.DataFrame, figs: list[Path], bon_pooled) -> str:
    status = rep.runs["status"].value_counts().to_dict() if rep.runs is not None and not rep.runs.empty else {}
    status_txt = ", ".join(f"{k}: {v}" for k, v in status.items()) or "no runs"
    bon_txt = ""
    if bon_pooled is not None and np.isfinite(bon_pooled.a):
        bon_txt = (
            "<p>Best-of-n, pooled over bon runs: R(d) = d(a - b d) with "
            f"a = {bon_pooled.a:.4g}, b = {bon_pooled.b:.4g}, "
            f"R<sup>2</sup> = {_cell(bon_pooled.r2)}, d* = {_cell(bon_pooled.d_star)}.</p>"
        )
    fig_html = "".join(
        f"<figure>{_img(p)}<figcaption><b>{p.name}</b>. {html.escape(CAPTIONS[p.name])}</figcaption></figure>"
        for p in figs
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rep.runs) if rep.runs is not None else 0} runs ({html.escape(status_txt)});
{len(rep.missing)} missing required metrics.
Gold and proxy are re-centered on each run's step-0 eval, in units of the initial policy's gold std; KL is the exact
sequence-summed KL to the initial policy (nats); d = &radic;KL.</p>

<h2>Verdicts (SCIENCE.md sec. 7)</h2>
{_verdict_html(rep.verdicts)}

<h2>Missing metrics</h2>
<p class="note">Runs that lack a metric the analysis needs. They stay in the runs table and in every figure they can
contribute to; they are never dropped silently.</p>
{_table_html(rep.missing)}

<h2>Figures</h2>
{fig_html}

<h2>Peaks and drops (one row per run)</h2>
<p class="note">peak = first eval of maximal gold; drop = final - peak gold;
proxy_rise = final proxy - proxy at the gold peak;
kl_growth_ratio = KL(final) / KL(half-way). Flags use the rules in the verdict table.</p>
{_table_html(peaks)}

<h2>Fits of Gao et al.'s forms</h2>
<p class="note">Per run (form rl: R(d) = d(a - b ln d), d* = exp(a/b - 1); form bon: R(d) = d(a - b d), d* = a/(2b)).
d* is empty where b &le; 0 (no peak).</p>
{_table_html(rep.run_fits)}
{bon_txt}
<p class="note">Per group, seeds pooled; 95% intervals from a bootstrap over seeds (groups with &ge; 2 seeds).</p>
{_table_html(rep.group_fits)}

<h2>Runs</h2>
{_table_html(rep.runs)}
</body></html>
"""
