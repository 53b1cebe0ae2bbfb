"""MLflow -> tidy pandas frames. The only module in `analysis/` that imports mlflow.

What it reads is the contract `rlhf_sweeps.tracking` writes (names from
`rlhf_sweeps.metrics`): one experiment; per sweep a parent run tagged
`sweep_parent="true"` and each job a child run tagged with the `sweep_id`;
params are the flattened config. Nothing here assumes a particular launcher:
a run with no sweep tag, a missing param or a half-finished metric history is
loaded as it is, and `missing_metrics` lists what is absent instead of
dropping the run.

Outputs:

- `runs`: one row per run (sweep parents excluded): run_id, run_name, status,
  sweep_id, overrides, failure_reason, parent_run_id, start/end time, the
  GROUP_PARAMS parsed to numbers where numeric, and every other param
  under `param:<name>` as the string MLflow stored.
- `metrics`: long and tidy, one row per (run, key, step): run_id, run_name,
  status, the GROUP_PARAMS, key, step, value. When a step was logged
  twice (a requeued job re-logs the steps after its last checkpoint) the
  latest timestamp wins.

Both are cached as parquet under `<out>/cache/` and reused unless `refresh`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import ViewType

from analysis.transforms import GROUP_PARAMS, PARAM_PREFIX
from rlhf_sweeps import metrics as M

# GROUP_PARAMS (analysis.transforms) become typed columns of both frames; the condition a run
# belongs to is read from all its params (analysis.conditions).
NUMERIC_PARAMS = (M.PARAM_LR, M.PARAM_COEF, M.PARAM_SEED)
# Where a launcher logged no param, the matching tag (set by rlhf_sweeps.tracking) is used.
PARAM_TAG_FALLBACK = {M.PARAM_ALGO: M.TAG_ALGO, M.PARAM_REGULARIZER: M.TAG_REGULARIZER, M.PARAM_TASK: M.TAG_TASK}
# Metric namespaces fetched in full; perf/ and rollout/ are engineering logs the report does not use.
DEFAULT_PREFIXES = ("eval/", "bon/", "train/", "pref/")

RUN_COLUMNS = (
    "run_id",
    "run_name",
    "status",
    M.TAG_SWEEP_ID,
    M.TAG_OVERRIDES,
    M.TAG_FAILURE,
    "parent_run_id",
    "start_time",
    "end_time",
)
METRIC_COLUMNS = ("run_id", "run_name", "status", *GROUP_PARAMS, "key", "step", "value")
CACHE_DIR = "cache"


@dataclass
class SweepData:
    runs: pd.DataFrame
    metrics: pd.DataFrame
    experiment: str
    sweep_id: str | None
    parent_run_id: str | None  # the sweep's parent run, where exactly one exists
    tracking_uri: str | None
    from_cache: bool = False


def _client(tracking_uri: str | None) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _is_parent(run) -> bool:
    return str(run.data.tags.get(M.TAG_IS_SWEEP_PARENT, "")).lower() == "true"


def parse_params(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric group params to float (seed to nullable int); unparseable values become NaN."""
    frame = frame.copy()
    for name in NUMERIC_PARAMS:
        if name in frame:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    if M.PARAM_SEED in frame:
        frame[M.PARAM_SEED] = frame[M.PARAM_SEED].round().astype("Int64")
    return frame


def _run_row(run) -> dict:
    tags, params = run.data.tags, run.data.params
    row = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or run.info.run_id[:8],
        "status": run.info.status,
        M.TAG_SWEEP_ID: tags.get(M.TAG_SWEEP_ID),
        M.TAG_OVERRIDES: tags.get(M.TAG_OVERRIDES),
        M.TAG_FAILURE: tags.get(M.TAG_FAILURE),
        "parent_run_id": tags.get(M.TAG_PARENT),
        "start_time": pd.to_datetime(run.info.start_time, unit="ms") if run.info.start_time else pd.NaT,
        "end_time": pd.to_datetime(run.info.end_time, unit="ms") if run.info.end_time else pd.NaT,
    }
    for name in GROUP_PARAMS:
        value = params.get(name, tags.get(PARAM_TAG_FALLBACK.get(name, ""), None))
        row[name] = value
    for name, value in params.items():
        if name not in GROUP_PARAMS:
            row[PARAM_PREFIX + name] = value
    return row


def _history(client: MlflowClient, run_id: str, key: str) -> pd.DataFrame:
    hist = client.get_metric_history(run_id, key)
    frame = pd.DataFrame(
        {"step": [m.step for m in hist], "value": [m.value for m in hist], "timestamp": [m.timestamp for m in hist]}
    )
    # A requeued job re-logs the steps after its last checkpoint: keep the latest.
    frame = frame.sort_values(["step", "timestamp"]).drop_duplicates("step", keep="last")
    frame["key"] = key
    return frame[["key", "step", "value"]]


def fetch(
    experiment: str,
    sweep_id: str | None = None,
    tracking_uri: str | None = None,
    prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
) -> SweepData:
    """Query MLflow for every run of `experiment` (or of one sweep) and its full metric histories."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise SystemExit(
            f"no MLflow experiment named {experiment!r} at {tracking_uri or mlflow.get_tracking_uri()}; found: {names}"
        )
    filter_string = f"tags.{M.TAG_SWEEP_ID} = '{sweep_id}'" if sweep_id else ""
    found = _search_all(client, exp.experiment_id, filter_string)
    parents = [r for r in found if _is_parent(r)]
    jobs = [r for r in found if not _is_parent(r)]

    rows, frames = [], []
    for run in jobs:
        row = _run_row(run)
        rows.append(row)
        for key in sorted(run.data.metrics):
            if key.startswith(prefixes):
                hist = _history(client, run.info.run_id, key)
                hist["run_id"] = run.info.run_id
                frames.append(hist)

    runs = pd.DataFrame(rows)
    for col in (*RUN_COLUMNS, *GROUP_PARAMS):
        if col not in runs:
            runs[col] = None
    runs = parse_params(runs)
    metrics = _attach_run_columns(pd.concat(frames, ignore_index=True) if frames else None, runs)
    # Only a sweep's own parent can receive its report: with no --sweep, only when there is exactly one.
    parent = parents[0].info.run_id if len(parents) == 1 else None
    return SweepData(runs, metrics, experiment, sweep_id, parent, tracking_uri)


def _attach_run_columns(long: pd.DataFrame | None, runs: pd.DataFrame) -> pd.DataFrame:
    if long is None or long.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in METRIC_COLUMNS}).astype(
            {"step": "int64", "value": "float64"}
        )
    keep = ["run_id", "run_name", "status", *GROUP_PARAMS]
    out = long.merge(runs[keep], on="run_id", how="left")
    out["step"] = out["step"].astype("int64")
    out["value"] = out["value"].astype("float64")
    return out[list(METRIC_COLUMNS)].sort_values(["run_id", "key", "step"], ignore_index=True)


def _cache_paths(out_dir: Path) -> dict[str, Path]:
    base = Path(out_dir) / CACHE_DIR
    return {"runs": base / "runs.parquet", "metrics": base / "metrics.parquet", "meta": base / "meta.json"}


def sweep_ids(experiment: str, tracking_uri: str | None = None) -> list[str]:
    """The experiment's sweep ids (the `sweep_id` tags of its runs), oldest sweep first."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    started: dict[str, int] = {}
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                                  page_token=token)
        for run in page:
            sweep = run.data.tags.get(M.TAG_SWEEP_ID)
            if sweep:
                started[sweep] = min(started.get(sweep, run.info.start_time), run.info.start_time)
        token = page.token
        if not token:
            break
    return sorted(started, key=lambda s: (started[s], s))


def load(
    experiment: str,
    sweep_id: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    refresh: bool = False,
) -> SweepData:
    """`fetch`, through a parquet cache in `<out_dir>/cache/` keyed by (experiment, sweep, uri)."""
    meta = {"experiment": experiment, "sweep_id": sweep_id, "tracking_uri": tracking_uri}
    paths = _cache_paths(Path(out_dir)) if out_dir is not None else None
    if paths and not refresh and all(p.exists() for p in paths.values()):
        cached = json.loads(paths["meta"].read_text())
        if all(cached.get(k) == v for k, v in meta.items()):
            return SweepData(
                runs=pd.read_parquet(paths["runs"]),
                metrics=pd.read_parquet(paths["metrics"]),
                experiment=experiment,
                sweep_id=sweep_id,
                parent_run_id=cached.get("parent_run_id"),
                tracking_uri=tracking_uri,
                from_cache=True,
            )
    data = fetch(experiment, sweep_id, tracking_uri)
    if paths:
        paths["runs"].parent.mkdir(parents=True, exist_ok=True)
        data.runs.to_parquet(paths["runs"], index=False)
        data.metrics.to_parquet(paths["metrics"], index=False)
        paths["meta"].write_text(
            json.dumps({**meta, "parent_run_id": data.parent_run_id, "fetched_at": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
    return data


def log_report_to_parent(
    parent_run_id: str | None,
    files: list[str | Path],
    tracking_uri: str | None = None,
    artifact_path: str = "analysis",
) -> bool:
    """Log the report, figures and tables as artifacts of the sweep's parent run. False when there is none."""
    if not parent_run_id:
        return False
    client = _client(tracking_uri)
    for path in files:
        client.log_artifact(parent_run_id, str(path), artifact_path=artifact_path)
    return True
