"""`python -m analysis`: MLflow sweep -> figures, tables, verdicts and an HTML report.

Reads every run of an MLflow experiment (or of one sweep), caches the metric
histories as parquet in the output folder, writes report.html, six figures,
fits.csv, fit_groups.csv, peaks.csv, conditions.csv, attribution.csv,
verdicts.csv, verdicts.md, runs.csv and missing_metrics.csv, and logs them as
artifacts of the sweep's parent run. A study spread over several sweeps of one
experiment is analysed whole when --sweep is not given; seeds pool by exact
condition, whatever sweep they came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis import load, report
from analysis.verdicts import fmt_pm


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  python -m analysis                                    # the latest sweep of rlhf-sweeps\n"
            "  python -m analysis --sweep multirun/2026-12-03/14-50-50 --out reports/entropy --refresh\n"
            "  python -m analysis --experiment embedded-study --all  # every run of an experiment\n"
            "  python -m analysis --tracking-uri http://10.0.0.5:5000 --no-log-artifacts"
        ),
    )
    p.add_argument("--experiment", default="rlhf-sweeps", help="MLflow experiment name (default: %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--sweep", default=None,
                       help="only the runs of sweep SWEEP (its sweep_id, e.g. multirun/2026-12-03/14-50-50; "
                            "default: the experiment's latest sweep)")
    which.add_argument("--all", action="store_true", help="every run of the experiment, whatever its sweep")
    p.add_argument("--out", default=None, help="output folder (default: analysis_out/<sweep or experiment>)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI, e.g. sqlite:///mlflow.db or http://host:5000 "
        "(default: $MLFLOW_TRACKING_URI, else MLflow's default)",
    )
    p.add_argument("--refresh", action="store_true", help="re-query MLflow instead of reusing <out>/cache/*.parquet")
    p.add_argument(
        "--no-log-artifacts", action="store_true", help="do not log the report as artifacts of the sweep's parent run"
    )
    p.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap resamples for fit intervals (default: %(default)s)"
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.all:
        known = load.sweep_ids(args.experiment, args.tracking_uri)
        if args.sweep is not None and args.sweep not in known:
            listed = "\n".join(f"  {s}" for s in reversed(known)) or "  (none: the experiment has no sweep)"
            print(f"no sweep {args.sweep!r} in experiment {args.experiment!r}. Known sweep ids, newest first:\n"
                  f"{listed}\nPass one of them to --sweep, or --all for every run.", file=sys.stderr)
            return 2
        if args.sweep is None and known:
            args.sweep = known[-1]
            print(f"analysing the latest sweep of {args.experiment!r}: {args.sweep} "
                  f"({len(known)} sweep(s) in all; --sweep ID for another, --all for every run)")
        elif args.sweep is None:
            print(f"experiment {args.experiment!r} has no sweep: analysing all its runs")
    out = Path(args.out or Path("analysis_out") / (args.sweep or args.experiment))
    data = load.load(args.experiment, args.sweep, args.tracking_uri, out, refresh=args.refresh)
    source = "cache (use --refresh to re-query MLflow)" if data.from_cache else "MLflow"
    print(f"loaded {len(data.runs)} runs, {len(data.metrics)} metric points from {source}")
    if data.from_cache and (data.runs["status"] == "RUNNING").any():
        print("note: the cache holds RUNNING runs; pass --refresh to pick up their newer metrics")
    if data.runs.empty:
        print("no runs to analyze", file=sys.stderr)
    title = f"rlhf-sweeps analysis: {args.experiment}" + (f" / sweep {args.sweep}" if args.sweep else "")
    rep = report.build(data.runs, data.metrics, out, title=title, n_boot=args.n_boot)

    status = data.runs["status"].value_counts().to_dict() if not data.runs.empty else {}
    print("runs by status: " + (", ".join(f"{k} {v}" for k, v in status.items()) or "none"))
    if not rep.missing.empty:
        print(f"{len(rep.missing)} run(s) missing required metrics (listed in the report):")
        for r in rep.missing.itertuples(index=False):
            print(f"  {r.run_name} [{r.status}]: {r.missing}")
    print(f"{len(rep.conditions)} conditions (seeds pooled only when every param but the seed is equal)")
    if not rep.attribution.empty:
        print("attribution (gold fall from the peak window, ± 1 SE; exploitation = proxy-trained - oracle-trained):")
        for r in rep.attribution.to_dict("records"):
            line = f"  {r['condition']}: proxy-trained fall {fmt_pm(r['proxy_fall'], r['proxy_fall_se'])}"
            if pd.notna(r["oracle"]):
                line += (
                    f", oracle-trained {fmt_pm(r['oracle_fall'], r['oracle_fall_se'])}, exploitation "
                    f"{fmt_pm(r['exploitation'], r['exploitation_se'])} -> {r['call']}"
                )
            if pd.notna(r["zero"]):
                line += f", regularizer alone (reward=zero) {fmt_pm(r['zero_fall'], r['zero_fall_se'])}"
            print(line)
    print("verdicts:")
    for r in rep.verdicts.to_dict("records"):
        scope = f"[{r['runs']} runs, seeds {r['seeds']}; {r['figure']}]"
        print(f"  {r['claim']:<4} {r['verdict']:<13} {scope} {r['evidence']}")

    if not args.no_log_artifacts:
        if load.log_report_to_parent(data.parent_run_id, rep.files, args.tracking_uri):
            print(f"logged {len(rep.files)} files to parent run {data.parent_run_id} under artifacts/analysis/")
        else:
            print("no single sweep parent run found: report not logged to MLflow")
    print("wrote:")
    for path in rep.files:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
