"""What a run prints: one line per eval, and a short block when it ends.

The numbers are the ones MLflow gets (the eval metrics as logged); the
over-optimization flag at the end is the analysis' own per-run rule
(`analysis.verdicts.overoptimization`, one code path), so the terminal and
the report never disagree about a run.
"""

from __future__ import annotations

import math
from typing import Optional

from rlhf_sweeps import metrics as M


def eval_line(step: int, m: dict[str, float]) -> str:
    """`step 80 | gold -1.75 ± 0.09 | proxy +1.12 | KL 36.1 | H 48.2 | win 0.31`."""
    gold = f"gold {m[M.EVAL_GOLD_REWARD]:+.2f}"
    se = m.get(M.EVAL_GOLD_SE, math.nan)
    if math.isfinite(se):
        gold += f" ± {se:.2f}"
    parts = [f"step {step}", gold, f"proxy {m[M.EVAL_PROXY_REWARD]:+.2f}", f"KL {m[M.EVAL_KL]:.1f}",
             f"H {m[M.EVAL_ENTROPY]:.1f}", f"win {m[M.EVAL_GOLD_WIN_RATE]:.2f}"]
    return " | ".join(parts)


def run_end_block(name: str, history: dict[int, dict[str, float]], url: Optional[str]) -> str:
    """Peak and final gold (and the peak's step), proxy rise since the gold peak, final KL,
    the analysis' over-optimization flag, and where to look in the MLflow UI."""
    import numpy as np

    from analysis.verdicts import WINDOW, overoptimization

    steps = sorted(s for s, m in history.items() if M.EVAL_GOLD_REWARD in m)
    if not steps:
        return f"[rlhf-sweeps] finished: {name} (no evaluation logged)"

    def series(key: str) -> np.ndarray:
        return np.array([[history[s].get(key, np.nan) for s in steps]], dtype=float)  # (1 run, evals)

    gold, proxy = series(M.EVAL_GOLD_REWARD)[0], series(M.EVAL_PROXY_REWARD)[0]
    peak = int(np.argmax(gold))
    flag, fall, _ = overoptimization(series(M.EVAL_GOLD_REWARD), series(M.EVAL_GOLD_SE),
                                     series(M.EVAL_PROXY_REWARD), series(M.EVAL_PROXY_SE))
    if flag is None:
        verdict = "undecided (too few evals for the rule)"
    else:
        # The rule compares WINDOW-eval means, not the single evals shown above: a lone high eval
        # is what noise makes, so "peak" and "fell" can differ on purpose.
        verdict = ("YES" if flag else "no") + (f" (gold fell {fall.value:+.2f} from its best {WINDOW}-eval "
                                                f"window to its last, z {fall.z:.1f}; rule: python -m "
                                                "analysis, docs/science.md §9)")
    lines = [
        f"[rlhf-sweeps] finished: {name}",
        f"  gold      peak {gold[peak]:+.2f} at step {steps[peak]}, final {gold[-1]:+.2f}",
        f"  proxy     rose {proxy[-1] - proxy[peak]:+.2f} since the gold peak (final {proxy[-1]:+.2f})",
        f"  KL        final {history[steps[-1]][M.EVAL_KL]:.1f} nats",
        f"  over-optimized: {verdict}",
    ]
    if url:
        lines.append(f"  MLflow    {url}")
    return "\n".join(lines)


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (the runs view, not the GenAI overview). For a local
    store the UI is `mlflow ui` on its default address; a server URI is its own UI."""
    host = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{host}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
