"""analysis/: MLflow -> tables -> fits -> verdicts -> report, on a real SQLite MLflow store.

The store is filled once per module with synthetic runs logged exactly as
`rlhf_sweeps.tracking` does (params, tags, parent run, statuses), whose eval
curves follow Gao et al.'s RL form with known (a, b), so the fits, the peak
table and the verdicts have answers a bug would change.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import fits as F
from analysis import transforms as T
from analysis import verdicts as V
from rlhf_sweeps import metrics as M

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "rlhf-sweeps"
SWEEP = "sweep-test"
STEPS = np.arange(0, 201, 10)  # eval every 10 optimizer steps, step 0 = initial policy
NOISE = 0.003  # gold noise (std units) at steps > 0


def rl_gold(d, a, b):
    return np.where(d > 0, d * (a - b * np.log(np.where(d > 0, d, 1.0))), 0.0)


def entropy_b(coef: float) -> float:
    """Larger entropy coefficient -> larger b -> earlier, deeper gold peak (C4 holds by construction)."""
    return 0.7 + 3.0 * coef


def _curves(kind: str, coef: float, seed: int) -> dict:
    """Eval curves of one synthetic run: gold follows d(a - b ln d) plus a per-run offset."""
    rng = np.random.default_rng(1000 + seed + int(coef * 1000))
    t = STEPS.astype(float)
    if kind == "entropy":  # unbounded KL growth ~ t^1.6, gold peaks then falls
        kl = 0.05 * (1 + 10 * coef) * (t / 10) ** 1.6
        a, b = 1.0, entropy_b(coef)
        win = 0.5 + 0.1 * np.tanh(t / 100)
    elif kind == "kl":  # KL saturates, gold still rising at the end
        kl = (0.15 / coef) * (1 - np.exp(-t / 50))
        a, b = 1.0, 0.3
        win = 0.5 + 0.2 * np.tanh(t / 100)
    elif kind == "simpo":
        kl = 2.0 * (1 - np.exp(-t / 60))
        a, b = 0.8, 0.2
        win = 0.5 + 0.15 * (1 - np.exp(-t / 60))
    elif kind == "online_simpo":
        kl = 0.08 * (t / 10) ** 1.6
        a, b = 1.0, 1.2
        win = 0.5 - 0.08 * (t / 200)
    else:
        raise ValueError(kind)
    d = np.sqrt(kl)
    offset = 0.05 * seed - 0.02  # normalization is approximate: re-centering must remove this
    gold = offset + rl_gold(d, a, b) + np.r_[0.0, rng.normal(0, NOISE, len(t) - 1)]
    proxy = 0.01 + 0.8 * d + 0.1 * d**2
    entropy = 30.0 + 4.0 * (proxy - gold) + rng.normal(0, 0.2, len(t))
    return {
        M.EVAL_KL: kl,
        M.EVAL_GOLD_REWARD: gold,
        M.EVAL_PROXY_REWARD: proxy,
        M.EVAL_ENTROPY: entropy,
        M.EVAL_GOLD_WIN_RATE: win,
        "_ab": (a, b),
    }


def _log(client, run_id, series: dict, steps) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), ts, int(s))
        for k, vals in series.items()
        if not k.startswith("_")
        for s, v in zip(steps, vals, strict=True)
    ]
    for i in range(0, len(batch), 900):
        client.log_batch(run_id, metrics=batch[i : i + 900])


def _child(client, exp_id, parent_id, algo, reg, lr, coef, seed, status="FINISHED", sweep=SWEEP, failure=None):
    from mlflow.entities import Param

    overrides = f"algo={algo},regularizer={reg},lr={lr:g},temperature={coef},seed={seed}"
    tags = {M.TAG_SWEEP_ID: sweep, M.TAG_OVERRIDES: overrides, M.TAG_ALGO: algo, M.TAG_REGULARIZER: reg}
    if parent_id:
        tags[M.TAG_PARENT] = parent_id
    if failure:
        tags[M.TAG_FAILURE] = failure
    run = client.create_run(exp_id, run_name=overrides, tags=tags)
    params = {
        M.PARAM_ALGO: algo,
        M.PARAM_REGULARIZER: reg,
        M.PARAM_LR: f"{lr:g}",
        M.PARAM_COEF: str(coef),
        M.PARAM_SEED: str(seed),
        M.PARAM_MODEL: "tiny-llama",
        M.PARAM_TASK: "embedded",
        "rollout.k": "4",
    }
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite MLflow store with one sweep (parent + children) and one stray run of another sweep."""
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp / "artifacts"))
    parent = client.create_run(exp_id, run_name=SWEEP, tags={M.TAG_IS_SWEEP_PARENT: "true", M.TAG_SWEEP_ID: SWEEP})
    pid = parent.info.run_id
    truth = {}
    for coef in (0.01, 0.03, 0.1):
        for seed in (0, 1):
            rid = _child(client, exp_id, pid, "rloo", "entropy", 1e-4, coef, seed)
            c = _curves("entropy", coef, seed)
            _log(client, rid, c, STEPS)
            client.set_terminated(rid, "FINISHED")
            truth[rid] = c["_ab"]
    for coef in (0.05, 0.1):
        for seed in (0, 1):
            rid = _child(client, exp_id, pid, "rloo", "kl", 1e-4, coef, seed)
            c = _curves("kl", coef, seed)
            _log(client, rid, c, STEPS)
            client.set_terminated(rid, "FINISHED")
            truth[rid] = c["_ab"]
    for algo in ("simpo", "online_simpo"):
        for seed in (0, 1):
            rid = _child(client, exp_id, pid, algo, "none", 1e-4, 2.0, seed)
            c = _curves(algo, 2.0, seed)
            _log(client, rid, c, STEPS)
            client.set_terminated(rid, "FINISHED")
    # best-of-n baseline: step = n, KL = ln n - (n-1)/n, gold = d(a - b d)
    rid = _child(client, exp_id, pid, "bon", "none", 0.0, 0.0, 0)
    n = 2 ** np.arange(0, 8)
    bkl = np.log(n) - (n - 1) / n
    _log(
        client,
        rid,
        {
            M.BON_KL: bkl,
            M.BON_GOLD_REWARD: 0.03 + np.sqrt(bkl) * (1.2 - 0.25 * np.sqrt(bkl)),
            M.BON_PROXY_REWARD: np.sqrt(bkl),
        },
        n,
    )
    client.set_terminated(rid, "FINISHED")
    # a job that died before its first eval: must be listed, not dropped
    failed = _child(client, exp_id, pid, "rloo", "entropy", 1e-4, 0.03, 2, failure="CUDA out of memory")
    _log(client, failed, {M.TRAIN_PROXY_REWARD: np.array([0.0, 0.1])}, [1, 2])
    client.set_terminated(failed, "FAILED")
    # a run of another sweep, and no parent: --sweep must leave it out
    other = _child(client, exp_id, None, "rloo", "kl", 1e-3, 0.1, 0, sweep="other-sweep")
    _log(client, other, _curves("kl", 0.1, 0), STEPS)
    client.set_terminated(pid, "FINISHED")
    return {"uri": uri, "client": client, "parent": pid, "failed": failed, "other": other, "truth": truth}


@pytest.fixture(scope="module")
def cli_run(store, tmp_path_factory):
    from analysis.__main__ import main

    out = tmp_path_factory.mktemp("report")
    rc = main(
        [
            "--experiment",
            EXPERIMENT,
            "--sweep",
            SWEEP,
            "--out",
            str(out),
            "--tracking-uri",
            store["uri"],
            "--n-boot",
            "200",
        ]
    )
    assert rc == 0
    return out


# --- load ------------------------------------------------------------------------------------


def test_load_tidy_frame_and_sweep_filter(store, tmp_path):
    from analysis import load

    data = load.load(EXPERIMENT, SWEEP, store["uri"], tmp_path, refresh=True)
    assert data.parent_run_id == store["parent"]
    assert store["parent"] not in set(data.runs["run_id"])  # sweep parent excluded
    assert store["other"] not in set(data.runs["run_id"])  # other sweep filtered
    assert len(data.runs) == 6 + 4 + 4 + 1 + 1
    assert set(data.runs["status"]) == {"FINISHED", "FAILED"}
    assert data.runs[M.PARAM_LR].dtype == float and data.runs[M.PARAM_COEF].dtype == float
    assert list(data.metrics.columns[:3]) == ["run_id", "run_name", "status"]
    assert {"key", "step", "value", M.PARAM_REGULARIZER, M.PARAM_SEED} <= set(data.metrics.columns)
    gold = data.metrics[data.metrics["key"] == M.EVAL_GOLD_REWARD]
    assert gold.groupby("run_id")["step"].apply(list).map(lambda s: s == list(STEPS)).all()
    # second call reuses the parquet cache, with the same content
    again = load.load(EXPERIMENT, SWEEP, store["uri"], tmp_path)
    assert again.from_cache and again.parent_run_id == store["parent"]
    pd.testing.assert_frame_equal(again.metrics, data.metrics, check_dtype=False)


# --- transforms ------------------------------------------------------------------------------


def _tiny_metrics() -> pd.DataFrame:
    rows = []
    series = {
        M.EVAL_GOLD_REWARD: [0.1, 0.5, 0.9, 0.4],
        M.EVAL_PROXY_REWARD: [0.0, 0.2, 0.5, 1.0],
        M.EVAL_KL: [-1e-6, 1.0, 4.0, 9.0],
    }
    for key, vals in series.items():
        for step, v in zip((0, 10, 20, 30), vals, strict=True):
            rows.append(
                {
                    "run_id": "r1",
                    "run_name": "r1",
                    "status": "FINISHED",
                    M.PARAM_ALGO: "rloo",
                    M.PARAM_REGULARIZER: "entropy",
                    M.PARAM_LR: 1e-4,
                    M.PARAM_COEF: 0.1,
                    M.PARAM_SEED: 0,
                    "key": key,
                    "step": step,
                    "value": v,
                }
            )
    return pd.DataFrame(rows)


def test_peak_drop_by_hand():
    table = T.eval_table(_tiny_metrics())
    np.testing.assert_allclose(table[T.GOLD], [0.0, 0.4, 0.8, 0.3])  # re-centered on step 0
    np.testing.assert_allclose(table[T.D], [0.0, 1.0, 2.0, 3.0])  # negative KL clipped before sqrt
    s = T.run_summary(table).iloc[0]
    assert s["peak_step"] == 20 and s["peak_kl"] == 4.0 and s["peak_d"] == 2.0
    assert s["peak_gold"] == pytest.approx(0.8)
    assert s["final_gold"] == pytest.approx(0.3)
    assert s["drop"] == pytest.approx(-0.5)
    assert s["proxy_rise"] == pytest.approx(0.5)  # 1.0 at the end vs 0.5 at the gold peak
    assert s["final_gap"] == pytest.approx(1.0 - 0.3)
    assert s["mid_kl"] == pytest.approx(2.5)  # KL at step 15, interpolated between 1 and 4
    assert s["kl_growth_ratio"] == pytest.approx(9.0 / 2.5)
    flags = V.flag_runs(T.run_summary(table)).iloc[0]
    assert bool(flags["overoptimized"]) and not bool(flags["kl_stable"])


def test_aggregate_seeds():
    summary = pd.DataFrame(
        {M.PARAM_REGULARIZER: ["kl", "kl", "entropy"], M.PARAM_LR: [1e-4] * 3, "drop": [-0.1, -0.3, -1.0]}
    )
    agg = T.aggregate(summary, [M.PARAM_REGULARIZER, M.PARAM_LR], ["drop"]).set_index(M.PARAM_REGULARIZER)
    assert agg.loc["kl", "n_runs"] == 2 and agg.loc["kl", "drop_mean"] == pytest.approx(-0.2)
    assert agg.loc["kl", "drop_min"] == pytest.approx(-0.3) and agg.loc["entropy", "n_runs"] == 1


# --- fits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a,b", [(1.0, 0.5), (2.0, 1.5), (0.7, -0.2)])
def test_fit_forms_exact(a, b):
    d = np.linspace(0, 4, 30)
    rl = F.fit(d, rl_gold(d, a, b), F.RL)
    assert rl.a == pytest.approx(a, rel=1e-9) and rl.b == pytest.approx(b, rel=1e-9) and rl.r2 == pytest.approx(1.0)
    assert rl.d_star == pytest.approx(np.exp(a / b - 1)) if b > 0 else np.isnan(rl.d_star)
    bon = F.fit(d, d * (a - b * d), F.BON)
    assert bon.a == pytest.approx(a) and bon.b == pytest.approx(b)
    assert bon.d_star == pytest.approx(a / (2 * b)) if b > 0 else np.isnan(bon.d_star)


def test_fits_recover_known_params_from_mlflow(store, tmp_path):
    from analysis import load

    data = load.load(EXPERIMENT, SWEEP, store["uri"], tmp_path)
    table = T.eval_table(data.metrics)
    fitted = F.fit_runs(table, F.RL).set_index("run_id")
    for run_id, (a, b) in store["truth"].items():
        assert fitted.loc[run_id, "a"] == pytest.approx(a, rel=0.05), run_id
        assert fitted.loc[run_id, "b"] == pytest.approx(b, rel=0.05), run_id
        assert fitted.loc[run_id, "r2"] > 0.99
    groups = F.fit_groups(table[table[M.PARAM_REGULARIZER] == "entropy"], [M.PARAM_COEF], n_boot=200)
    for g in groups.itertuples():
        assert g.n_runs == 2 and g.a_lo <= g.a <= g.a_hi and g.b_lo <= g.b <= g.b_hi
        assert g.b == pytest.approx(entropy_b(getattr(g, M.PARAM_COEF)), rel=0.05)


# --- verdict rules on constructed cases --------------------------------------------------------


def _summary(rows) -> pd.DataFrame:
    base = {
        "status": "FINISHED",
        M.PARAM_LR: 1e-4,
        "n_evals": 10,
        "gold_range": 1.0,
        "final_win_rate": np.nan,
        "peak_step": 100.0,
        "peak_kl": 2.0,
        "final_gap": 0.5,
        "mid_kl": 1.0,
    }
    out = []
    for i, r in enumerate(rows):
        row = {**base, "run_id": f"r{i}", **r}
        row.setdefault("kl_growth_ratio", row["final_kl"] / row["mid_kl"])
        out.append(row)
    return pd.DataFrame(out)


def _ent(drop, proxy_rise, final_kl, coef=0.1, gap=0.5):
    return {
        M.PARAM_ALGO: "rloo",
        M.PARAM_REGULARIZER: "entropy",
        M.PARAM_COEF: coef,
        "drop": drop,
        "proxy_rise": proxy_rise,
        "final_kl": final_kl,
        "final_gap": gap,
    }


def _kl(drop, final_kl, mid_kl):
    return {
        M.PARAM_ALGO: "rloo",
        M.PARAM_REGULARIZER: "kl",
        M.PARAM_COEF: 0.1,
        "drop": drop,
        "proxy_rise": 0.3,
        "final_kl": final_kl,
        "mid_kl": mid_kl,
    }


def _verdict(summary, claim, fits=None):
    fits = fits if fits is not None else pd.DataFrame(columns=["run_id", "r2", "b", "d_star"])
    table = V.judge(summary, fits).set_index("claim")
    return table.loc[claim, "verdict"], table.loc[claim, "evidence"]


def test_c2_rules():
    kls = [_kl(0.0, 2.0, 1.9), _kl(0.0, 2.2, 2.0)]
    over = [_ent(-0.5, 0.8, 10.0), _ent(-0.3, 0.4, 12.0), _ent(-0.4, 0.5, 9.0)]
    v, ev = _verdict(_summary(over + kls), "C2")
    assert v == V.SUPPORTED and "3/3 over-optimized" in ev
    # fell but the proxy fell too: not over-optimization by the rule
    calm = [_ent(-0.5, -0.1, 10.0), _ent(-0.05, 0.4, 12.0), _ent(0.0, 0.5, 9.0)]
    assert _verdict(_summary(calm + kls), "C2")[0] == V.CONTRADICTED
    # majority over-optimizes but with less KL than the KL runs: the KL half fails
    low_kl = [_ent(-0.5, 0.8, 1.0), _ent(-0.3, 0.4, 1.2)]
    assert _verdict(_summary(low_kl + kls), "C2")[0] == V.CONTRADICTED
    assert _verdict(_summary(over[:1] + kls), "C2")[0] == V.INCONCLUSIVE  # one run
    assert _verdict(_summary(over[:1] + calm[:1] + kls), "C2")[0] == V.INCONCLUSIVE  # 1/2: mixed
    assert _verdict(_summary(over), "C2")[0] == V.INCONCLUSIVE  # nothing to compare KL with
    assert _verdict(_summary(kls), "C2")[0] == V.NO_DATA


def test_c3_rules():
    stable = [_kl(0.0, 2.0, 1.9), _kl(-0.05, 2.2, 2.0)]
    growing = [_kl(0.0, 8.0, 2.0), _kl(0.0, 6.0, 2.0)]
    assert _verdict(_summary(stable), "C3")[0] == V.SUPPORTED
    assert _verdict(_summary(growing), "C3")[0] == V.CONTRADICTED
    assert _verdict(_summary(stable[:1] + growing[:1]), "C3")[0] == V.INCONCLUSIVE
    # KL tiny but x3: growth of 0.02 nats is bounded by the absolute tolerance
    assert _verdict(_summary([_kl(0.0, 0.03, 0.01), _kl(0.0, 0.03, 0.01)]), "C3")[0] == V.SUPPORTED


def test_c4_rules():
    rising = [_ent(-0.1 * i, 0.5, 5.0, coef=c, gap=0.2 * i) for i, c in enumerate((0.01, 0.03, 0.1, 0.3), 1)]
    v, ev = _verdict(_summary(rising), "C4")
    assert v == V.SUPPORTED and "rho(coef, fall from peak) = 1" in ev
    falling = [_ent(-0.1 * i, 0.5, 5.0, coef=c, gap=0.2 * i) for i, c in enumerate((0.3, 0.1, 0.03, 0.01), 1)]
    assert _verdict(_summary(falling), "C4")[0] == V.CONTRADICTED
    assert _verdict(_summary(rising[:2]), "C4")[0] == V.INCONCLUSIVE  # 2 coefficients


def test_c5_c6_c7_rules():
    def pref(algo, win, drop=0.0, rise=0.2):
        return {
            M.PARAM_ALGO: algo,
            M.PARAM_REGULARIZER: "none",
            M.PARAM_COEF: 2.0,
            "drop": drop,
            "proxy_rise": rise,
            "final_kl": 2.0,
            "final_win_rate": win,
            "final_gold": 0.3,
        }

    good = [pref("simpo", 0.62), pref("simpo", 0.66)]
    assert _verdict(_summary(good), "C5")[0] == V.SUPPORTED
    assert _verdict(_summary([pref("simpo", 0.45), pref("simpo", 0.5)]), "C5")[0] == V.CONTRADICTED
    assert _verdict(_summary([pref("simpo", 0.52), pref("simpo", 0.53)]), "C5")[0] == V.INCONCLUSIVE
    assert _verdict(_summary([_ent(-0.5, 0.8, 10.0)]), "C5")[0] == V.NO_DATA
    bad_online = [pref("online_simpo", 0.4, -0.5, 0.8), pref("online_simpo", 0.45, -0.4, 0.6)]
    ok_online = [pref("online_simpo", 0.64), pref("online_simpo", 0.66)]
    assert _verdict(_summary(good + bad_online), "C6")[0] == V.SUPPORTED
    assert _verdict(_summary(good + ok_online), "C6")[0] == V.CONTRADICTED
    assert _verdict(_summary(good), "C6")[0] == V.NO_DATA
    runs = _summary([_ent(-0.5, 0.8, 10.0), _ent(-0.3, 0.4, 12.0), _ent(-0.3, 0.4, 12.0)])
    fits = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "r2": [0.95, 0.9, 0.3], "b": [1.0] * 3, "d_star": [2.0] * 3})
    assert _verdict(runs, "C7", fits)[0] == V.SUPPORTED
    assert _verdict(runs, "C7", fits.assign(r2=[0.2, 0.3, 0.9]))[0] == V.CONTRADICTED
    assert _verdict(runs, "C7", fits.assign(r2=[0.6, 0.7, 0.9]))[0] == V.INCONCLUSIVE
    assert _verdict(runs.assign(gold_range=0.01), "C7", fits)[0] == V.NO_DATA  # gold never moved


# --- end to end ------------------------------------------------------------------------------


def test_cli_writes_report_figures_tables(cli_run):
    out = cli_run
    for name in (
        "fig1_rewards_vs_step.png",
        "fig2_gold_vs_d.png",
        "fig3_kl_vs_step.png",
        "fig4_entropy_vs_gap.png",
        "fig5_grid_heatmap.png",
        "report.html",
        "fits.csv",
        "peaks.csv",
        "verdicts.csv",
        "verdicts.md",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "fig1_rewards_vs_step.png").read_bytes()[:4] == b"\x89PNG"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5
    verdicts = pd.read_csv(out / "verdicts.csv").set_index("claim")
    # the synthetic sweep is built so that every claim holds
    assert list(verdicts.index) == ["C2", "C3", "C4", "C5", "C6", "C7"]
    assert (verdicts["verdict"] == V.SUPPORTED).all(), verdicts[["verdict", "evidence"]].to_string()
    peaks = pd.read_csv(out / "peaks.csv")
    ent = peaks[peaks["method"] == "entropy (rloo)"]
    assert len(ent) == 6 and ent["overoptimized"].all()
    assert (peaks[peaks["method"] == "kl (rloo)"]["kl_stable"]).all()
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits["form"]) == {"rl", "bon"}
    bon = fits[fits["form"] == "bon"].iloc[0]
    assert bon["a"] == pytest.approx(1.2, rel=0.05) and bon["b"] == pytest.approx(0.25, rel=0.05)
    assert "| C2 |" in (out / "verdicts.md").read_text()


def test_failed_run_is_listed_not_dropped(cli_run, store):
    missing = pd.read_csv(cli_run / "missing_metrics.csv")
    row = missing[missing["run_id"] == store["failed"]]
    assert len(row) == 1 and row["status"].iloc[0] == "FAILED"
    assert M.EVAL_GOLD_REWARD in row["missing"].iloc[0] and row["failure_reason"].iloc[0] == "CUDA out of memory"
    assert store["failed"] in (cli_run / "report.html").read_text()
    assert store["failed"] in set(pd.read_csv(cli_run / "runs.csv")["run_id"])


def test_parent_run_gets_report_artifacts(cli_run, store):
    names = {f.path for f in store["client"].list_artifacts(store["parent"], "analysis")}
    assert {"analysis/report.html", "analysis/verdicts.md", "analysis/fig2_gold_vs_d.png"} <= names


def test_cli_help_and_reuses_cache(cli_run, store, capsys):
    from analysis.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--refresh" in capsys.readouterr().out
    main(
        [
            "--sweep",
            SWEEP,
            "--out",
            str(cli_run),
            "--tracking-uri",
            store["uri"],
            "--no-log-artifacts",
            "--n-boot",
            "10",
        ]
    )
    assert "from cache" in capsys.readouterr().out


def test_analysis_imports_no_torch_and_mlflow_only_in_load():
    code = "import sys, analysis.__main__, analysis.report; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    for path in (ROOT / "analysis").glob("*.py"):
        src = path.read_text()
        imports_mlflow = "import mlflow" in src or "from mlflow" in src
        assert imports_mlflow == (path.name == "load.py"), path.name


def test_report_on_empty_and_bare_runs(tmp_path):
    """No runs at all, and a run from another launcher with no params and 2 evals: a report, never a crash."""
    from analysis import load, report

    empty_runs = pd.DataFrame(columns=[*load.RUN_COLUMNS, *load.GROUP_PARAMS])
    rep = report.build(empty_runs, load._attach_run_columns(None, empty_runs), tmp_path / "empty", n_boot=10)
    assert (rep.verdicts["verdict"] == V.NO_DATA).all()
    assert all(p.stat().st_size > 0 for p in rep.files)

    runs = load.parse_params(
        pd.DataFrame(
            [
                {"run_id": "bare", "run_name": "bare", "status": "RUNNING"},
                {"run_id": "bon", "run_name": "bon", "status": "FINISHED", M.PARAM_ALGO: "bon"},
            ]
        ).reindex(columns=["run_id", "run_name", "status", *load.GROUP_PARAMS])
    )
    n = np.array([1, 2, 4, 8])
    long = pd.DataFrame(
        [
            {"run_id": "bare", "key": k, "step": s, "value": v}
            for k in (M.EVAL_GOLD_REWARD, M.EVAL_KL)
            for s, v in ((0, 0.0), (10, 0.5))
        ]
        + [{"run_id": "bon", "key": M.BON_KL, "step": int(i), "value": np.log(i) - (i - 1) / i} for i in n]
        + [{"run_id": "bon", "key": M.BON_GOLD_REWARD, "step": int(i), "value": 0.3 * np.log(i)} for i in n]
    )
    rep = report.build(runs, load._attach_run_columns(long, runs), tmp_path / "bare", n_boot=10)
    missing = rep.missing.set_index("run_id")
    assert list(missing.index) == ["bare"] and M.EVAL_PROXY_REWARD in missing.loc["bare", "missing"]
    assert rep.summary.loc[0, "method"] == "unknown" and pd.isna(rep.summary.loc[0, "overoptimized"])
    assert (rep.run_fits["form"] == "bon").sum() == 1
    assert (rep.verdicts["verdict"] == V.NO_DATA).all()
