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

from analysis import conditions, figures, fits, transforms, verdicts
from analysis.transforms import CONDITION
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
CONDITIONS_CSV, ATTRIBUTION_CSV = "conditions.csv", "attribution.csv"
KEY_COLS = [CONDITION, M.PARAM_ALGO, M.PARAM_REGULARIZER, M.PARAM_LR, M.PARAM_COEF, M.PARAM_REWARD, M.PARAM_SEED]
# The figure that shows each claim's evidence (a column of the verdict table).
CLAIM_FIGURES = {
    "C2": f"{figures.FIG1}, {figures.FIG3}",
    "C2a": figures.FIG6,
    "C2b": figures.FIG6,
    "C3": f"{figures.FIG3}, {figures.FIG1}",
    "C4": figures.FIG5,
    "C5": figures.FIG1,
    "C6": figures.FIG1,
    "C7": figures.FIG2,
}


@dataclass
class Report:
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    runs: pd.DataFrame | None = None
    missing: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    conditions: pd.DataFrame | None = None
    attribution: pd.DataFrame | None = None
    run_fits: pd.DataFrame | None = None
    group_fits: pd.DataFrame | None = None
    verdicts: pd.DataFrame | None = None

    @property
    def html(self) -> Path:
        return self.out_dir / REPORT


def analyze(runs: pd.DataFrame, metrics: pd.DataFrame, n_boot: int = fits.N_BOOT) -> dict:
    """Every table of the report, as DataFrames (no files)."""
    runs = conditions.annotate(runs)
    metrics = _with_columns(metrics, runs)
    table = transforms.eval_table(metrics)
    table = table[table[M.PARAM_ALGO] != transforms.BON_ALGO]
    summary = verdicts.flag_runs(transforms.run_summary(table), table)
    conds = verdicts.condition_table(table)
    att = verdicts.attribution(conds)
    keys = ["run_name", *KEY_COLS]
    run_fits = fits.fit_runs(table, fits.RL, keys=keys)
    group_fits = fits.fit_groups(table, [CONDITION], fits.RL, n_boot=n_boot)
    bon = transforms.bon_table(metrics)
    bon_fits = fits.fit_runs(bon, fits.BON, keys=keys)
    bon_pooled = fits.fit(bon[transforms.D], bon[transforms.GOLD], fits.BON) if not bon.empty else None
    judged = verdicts.judge(conds, att, summary, run_fits, verdicts.d_ranges(table), runs)
    judged.insert(judged.columns.get_loc("rule"), "figure", judged["claim"].map(CLAIM_FIGURES))
    return {
        "runs": runs,
        "table": table,
        "summary": summary,
        "conditions": conds,
        "attribution": att,
        "missing": transforms.missing_metrics(runs, metrics),
        "run_fits": run_fits,
        "group_fits": group_fits,
        "bon": bon,
        "bon_fits": bon_fits,
        "bon_pooled": bon_pooled,
        "verdicts": judged,
    }


def _with_columns(metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The tidy frame with its run-level columns (coef, reward, condition, ...) taken from `runs`."""
    metrics = metrics.copy()
    for col in ("run_id", "key", "step", "value"):
        if col not in metrics:
            metrics[col] = pd.Series(dtype=float if col in ("step", "value") else object)
    carried = [c for c in transforms.RUN_KEYS if c != "run_id" and c in runs]
    metrics = metrics.drop(columns=[c for c in carried if c in metrics])
    metrics = metrics.merge(runs[["run_id", *carried]], on="run_id", how="left")
    for col in transforms.RUN_KEYS:
        if col not in metrics:
            metrics[col] = pd.Series(dtype=object)
    return metrics


def runs_table(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The runs section: identity, condition, status, how far each got (`runs` as `analyze` annotates them)."""
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
    return out.sort_values([c for c in KEY_COLS if c in out], na_position="last")


PEAK_COLS = [
    "run_name",
    "method",
    CONDITION,
    M.PARAM_LR,
    M.PARAM_COEF,
    M.PARAM_REWARD,
    M.PARAM_SEED,
    "status",
    "n_evals",
    "peak_step",
    "peak_kl",
    "peak_gold",
    "final_gold",
    "peak_window",
    "final_window",
    "fall",
    "fall_se",
    "fall_z",
    "rise",
    "rise_z",
    "content_fall",
    "fluency_fall",
    "gain",
    "gain_z",
    "final_kl",
    "kl_projected",
    "final_entropy",
    "final_win_rate",
    "gold_fell",
    "overoptimized",
    "kl_bounded",
    "se_source",
    "recentered",
    "run_id",
]
CONDITION_COLS = [
    CONDITION,
    "method",
    M.PARAM_ALGO,
    M.PARAM_REGULARIZER,
    M.PARAM_COEF,
    M.PARAM_LR,
    M.PARAM_REWARD,
    "n_runs",
    "seeds",
    "unfinished",
    "n_evals",
    "gold_se",
    "peak_window",
    "final_window",
    "fall",
    "fall_se",
    "fall_z",
    "fall_lo",
    "fall_hi",
    "content_fall",
    "fluency_fall",
    "rise",
    "rise_z",
    "gain",
    "gain_se",
    "gain_z",
    "kl_end",
    "kl_projected",
    "kl_projected_lo",
    "kl_projected_hi",
    "final_win_rate",
    "gold_fell",
    "overoptimized",
    "kl_bounded",
    "se_source",
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
        out,
        runs=runs_table(t["runs"], metrics),
        missing=t["missing"],
        summary=t["summary"],
        conditions=t["conditions"],
        attribution=t["attribution"],
        verdicts=t["verdicts"],
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
        CONDITIONS_CSV: rep.conditions[[c for c in CONDITION_COLS if c in rep.conditions]],
        ATTRIBUTION_CSV: rep.attribution,
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
    "regularization coefficient. One line per condition (exact: every param but the seed equal), the mean over its "
    "seeds; bands their min-max. Controls trained on gold or on nothing are rows of their own.",
    figures.FIG2: "Gold vs d = sqrt(KL to the initial policy) at every eval, with each run's least-squares fit of "
    "R(d) = d(a - b ln d) (Gao et al. 2022, RL). Black squares: best-of-n (bon/gold_reward vs sqrt(bon/kl)), "
    "dotted: its fit R(d) = d(a - b d).",
    figures.FIG3: "Exact sequence-summed KL to the initial policy (log scale); mean over seeds, band min-max.",
    figures.FIG4: "Policy entropy (sequence sum) against the proxy-gold gap at every eval after step 0. Pearson r per "
    "method in the legend; points from the same run are not independent, so r describes, it does not test.",
    figures.FIG5: "Seed means over the sweep grid, one row per condition without its learning rate: peak gold (single "
    "best eval, biased up by noise), fall from the peak window to the last evals (the rules' statistic; 0 = no fall), "
    "final KL.",
    figures.FIG6: "Attribution. Gold (solid; band = min-max over seeds) and its parts, content (dashed) and fluency "
    "(dotted), against step, for each proxy-trained condition beside its twin trained on gold itself (no reward model "
    "to exploit) and, where run, on no reward (the regularizer alone). Colour: coefficient. A gold fall under the "
    "proxy that the oracle twin does not show is exploitation of the reward model; a fall the oracle twin shows too "
    "is the regularizer's or optimizer's own drift. Falling fluency with steady content means the policy left the "
    "language.",
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
    cols = ("claim", "statement", "verdict", "runs", "seeds", "evidence", "figure", "rule")
    rows = []
    for r in v.to_dict("records"):
        cls = r["verdict"].replace(" ", "")
        cells = {
            "claim": f"<b>{html.escape(r['claim'])}</b>",
            "verdict": f"<b>{html.escape(r['verdict'])}</b>",
            "rule": html.escape(r["rule"]),
        }
        tds = []
        for c in cols:
            if c not in r:
                continue
            extra = f" {cls}" if c == "verdict" else (" note" if c == "rule" else "")
            tds.append(f"<td class='text{extra}'>{cells.get(c, html.escape(str(r[c])))}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    head = "".join(f"<th class='text'>{c}</th>" for c in cols if c in v)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{html.escape(Path(path).name)}'>"


def _figure_html(path: Path) -> str:
    caption = f"<figcaption><b>{path.name}</b>. {html.escape(CAPTIONS[path.name])}</figcaption>"
    return f"<figure>{_img(path)}{caption}</figure>"


NOISE_NOTE = f"""
<p class="note">How to read the verdicts. Seeds pool only within an exact condition (every param but the seed
equal; conditions.csv). A level is the mean of {verdicts.WINDOW} consecutive evals; a <i>fall</i> is the gold level
in the best window minus the level in the last {verdicts.WINDOW} evals. Its SE is the larger of the one implied by
the logged per-eval SEs (<code>eval/gold_reward_se</code>, analytic, clustered by prompt) and the spread over seeds;
gold fell iff fall/SE &ge; {verdicts.FALL_Z} (a threshold calibrated for the max-over-windows bias by
<code>python -m analysis.calibrate</code>). ± is one SE; ranges are over seeds. Rules in full: the rule column and
docs/science.md §9.</p>
"""


def _html(title: str, rep: Report, peaks: pd.DataFrame, figs: list[Path], bon_pooled) -> str:
    status = rep.runs["status"].value_counts().to_dict() if rep.runs is not None and not rep.runs.empty else {}
    status_txt = ", ".join(f"{k}: {v}" for k, v in status.items()) or "no runs"
    n_cond = len(rep.conditions) if rep.conditions is not None else 0
    bon_txt = ""
    if bon_pooled is not None and np.isfinite(bon_pooled.a):
        bon_txt = (
            "<p>Best-of-n, pooled over bon runs: R(d) = d(a - b d) with "
            f"a = {bon_pooled.a:.4g}, b = {bon_pooled.b:.4g}, "
            f"R<sup>2</sup> = {_cell(bon_pooled.r2)}, d* = {_cell(bon_pooled.d_star)}.</p>"
        )
    lead = [p for p in figs if p.name == figures.FIG6]
    rest = "".join(_figure_html(p) for p in figs if p.name != figures.FIG6)
    conds = rep.conditions[[c for c in CONDITION_COLS if c in rep.conditions]] if rep.conditions is not None else None
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(rep.runs) if rep.runs is not None else 0} runs ({html.escape(status_txt)}) in {n_cond} conditions;
{len(rep.missing)} missing required metrics.
Gold and proxy are re-centered on each run's step-0 eval, in units of the initial policy's gold std; KL is the exact
sequence-summed KL to the initial policy (nats); d = &radic;KL.</p>

<h2>Verdicts (docs/science.md §7)</h2>
{_verdict_html(rep.verdicts)}
{NOISE_NOTE}

<h2>Attribution: exploitation vs drift (C2a, C2b)</h2>
{"".join(_figure_html(p) for p in lead)}
<p class="note">Per proxy-trained condition with a control twin: falls from the peak window (gold std, ± 1 SE,
seed range lo/hi), their content and fluency parts over the same windows, exploitation = proxy-trained fall &minus;
oracle-trained fall, and its call (exploitation / drift / neither; rule C2a).</p>
{_table_html(rep.attribution)}

<h2>Conditions (seeds pooled)</h2>
<p class="note">One row per exact condition: the statistics the verdicts use, on the seed-mean curve.</p>
{_table_html(conds)}

<h2>Missing metrics</h2>
<p class="note">Runs that lack a metric the analysis needs. They stay in the runs table and in every figure they can
contribute to; they are never dropped silently.</p>
{_table_html(rep.missing)}

<h2>Figures</h2>
{rest}

<h2>Peaks and falls (one row per run)</h2>
<p class="note">peak_step/peak_gold: the single best eval (a description, biased up by noise). fall, rise, gain and
the flags: the verdict rules applied to the run alone (one seed, so less power than per condition).
kl_projected: KL at the end plus its late slope over one more run length (KL-bounded iff &le; {verdicts.KL_BUDGET:g}
nats).</p>
{_table_html(peaks)}

<h2>Fits of Gao et al.'s forms</h2>
<p class="note">Per run (form rl: R(d) = d(a - b ln d), d* = exp(a/b - 1); form bon: R(d) = d(a - b d), d* = a/(2b)).
d* is empty where b &le; 0 (no peak).</p>
{_table_html(rep.run_fits)}
{bon_txt}
<p class="note">Per condition, seeds pooled; 95% intervals from a bootstrap over seeds (conditions with &ge; 2 seeds).
</p>
{_table_html(rep.group_fits)}

<h2>Runs</h2>
{_table_html(rep.runs)}
</body></html>
"""
