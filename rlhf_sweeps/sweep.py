"""One sweep, one MLflow parent run, one summary, whatever happens to its members.

Every job of a multirun (whatever the launcher: basic, submitit local,
SLURM) shares Hydra's sweep folder, and this module keeps the sweep's state
there:

* `grid.json`: the command line's overrides, written by `SweepCallback` when
  the multirun starts. The parent run is named after the axes that vary
  (`regularizer=entropy,kl lr=1e-4,3e-4`) and its `sweep_overrides` param is
  the whole grid; each member is named after its own values of those axes
  (`entropy lr=3e-4`: a group's option alone, any other key as key=value).
* `mlflow_parent_run_id`: the parent run. The first job that trains creates
  it under a file lock; the others read it. A sweep whose jobs are all
  skipped opens no MLflow run at all.
* `.results/<job num>.json`: each job's outcome (FINISHED, SKIPPED, RELOGGED,
  FAILED, CONFIG_ERROR, BUSY, KILLED), written by `launch.py`, with its MLflow
  run id as soon as the run is open. RUNNING until the job reports.

A member that dies without reporting (SIGKILL, the OOM killer, a lost node)
leaves no result for submitit, whose `results()` would raise and take the
whole sweep down before any summary. `survive_lost_jobs` (called by
`launch.py`) makes the submitit launchers report such a member as LOST
instead, and the sweep goes on to its summary.

`SweepCallback.on_multirun_end` runs in the submitting process when the
multirun ends: it prints one aligned row per member (the axes, the status,
final and peak gold, the proxy's rise since the gold peak, final KL, and the
analysis' own over-optimization flag), the reasons of the members that did
not finish, and the command that analyses the sweep; it ends any lost
member's MLflow run FAILED, ends the parent run FINISHED (FAILED if any member
failed, was killed or lost), and exits 1 if any did. It lives here rather than
in launch.py because Hydra instantiates callbacks by dotted path and pickles
them into submitit jobs, and launch.py, run as `__main__`, has no such path.

The sweep id is the sweep folder's path relative to the working directory,
e.g. `multirun/2026-11-29/23-59-01`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.experimental.callback import Callback
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _submitit

from rlhf_sweeps import metrics as M

PARENT_FILE = "mlflow_parent_run_id"
GRID_FILE = "grid.json"
RESULTS_DIR = ".results"
# RUNNING at the end = the job never reported, and the launcher did not see it die
FAILED_STATUSES = ("FAILED", "CONFIG_ERROR", "KILLED", "LOST", "RUNNING")
TAG_SWEEP_COUNTS = "sweep_counts"
_NOT_AN_AXIS = ("hydra/", "hydra.", "tracking.", "cache_dir", "threads", "device", "verbose", "force", "dry_run")
_LOST = ("the process died without reporting (SIGKILL, out of memory, node failure); run the same sweep "
         "command again to resume it from its last checkpoint (finished members are skipped)")


def sweep_id_for(sweep_dir: Path) -> str:
    try:
        return str(sweep_dir.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{sweep_dir.name}-{hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------------- names
def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def write_grid(sweep_dir: Path, overrides: Sequence[str]) -> None:
    """The command line's overrides, and which of them vary (Hydra's own parser decides)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    axes = [o.input_line for o in parsed if o.is_sweep_override() and not o.input_line.startswith(_NOT_AN_AXIS)]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / GRID_FILE).write_text(json.dumps({"overrides": list(overrides), "axes": axes}))


def read_grid(sweep_dir: Path) -> dict[str, list[str]]:
    path = sweep_dir / GRID_FILE
    return json.loads(path.read_text()) if path.exists() else {"overrides": [], "axes": []}


def parent_name(grid: dict[str, list[str]], sweep_id: str) -> str:
    """`regularizer=entropy,kl lr=1e-4,3e-4`: the axes as typed (the sweep id if nothing varies)."""
    return " ".join(grid["axes"]) or f"sweep {sweep_id}"


def member_name(overrides: Sequence[str], axes: Sequence[str], groups: Sequence[str]) -> Optional[str]:
    """`entropy lr=3e-4`: this member's values of the sweep's axes; a config group's option alone."""
    axis_keys = [_split(a)[0] for a in axes]
    values = dict(_split(o) for o in overrides)
    parts = [values[k] if k in groups else f"{k}={values[k]}" for k in axis_keys if k in values]
    return " ".join(parts) or None


# --------------------------------------------------------------- parent run
def parent_run(sweep_dir: Path, sweep_id: str, uri: str, experiment: str) -> str:
    from rlhf_sweeps.cache import file_lock
    from rlhf_sweeps.tracking import Tracker, git_commit

    sweep_dir.mkdir(parents=True, exist_ok=True)
    marker = sweep_dir / PARENT_FILE
    with file_lock(sweep_dir / f".{PARENT_FILE}.lock"):
        if marker.exists():
            return marker.read_text().strip()
        grid = read_grid(sweep_dir)
        tracker = Tracker(uri, experiment)
        run_id = tracker.start(parent_name(grid, sweep_id), {"sweep_overrides": " ".join(grid["overrides"])},
                               {M.TAG_SWEEP_ID: sweep_id, M.TAG_IS_SWEEP_PARENT: "true",
                                M.TAG_GIT_COMMIT: git_commit()})
        marker.write_text(run_id)
        return run_id


def sweep_info_for(hc, cfg):
    """The SweepInfo of one member (launch.py): its sweep, parent run, short name, run-id reporter."""
    from rlhf_sweeps.job import SweepInfo

    sweep_dir = Path(hc.sweep.dir)
    sweep_id = sweep_id_for(sweep_dir)
    num = int(hc.job.num)
    uri, experiment = cfg.tracking.uri, cfg.tracking.experiment
    grid = read_grid(sweep_dir)
    name = member_name(list(hc.overrides.task), grid["axes"], list(hc.runtime.choices.keys()))
    axis_keys = {_split(a)[0] for a in grid["axes"]}
    shared = tuple(k for k in (_split(o)[0] for o in hc.overrides.task) if k not in axis_keys)

    def started(run_id: str) -> None:
        update_result(sweep_dir, num, {"run_id": run_id})

    return SweepInfo(sweep_id=sweep_id, parent_run=lambda: parent_run(sweep_dir, sweep_id, uri, experiment),
                     name=name, started=started, shared=shared)


# ------------------------------------------------------------------ results
def record_result(sweep_dir: Path, job_num: int, result: dict[str, Any]) -> None:
    """Write one job's outcome atomically (a requeued job overwrites its own)."""
    folder = sweep_dir / RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{job_num}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"num": job_num, **result}, default=str))
    os.replace(tmp, folder / f"{job_num}.json")


def read_result(sweep_dir: Path, job_num: int) -> dict[str, Any]:
    path = sweep_dir / RESULTS_DIR / f"{job_num}.json"
    return json.loads(path.read_text()) if path.exists() else {"num": job_num}


def update_result(sweep_dir: Path, job_num: int, fields: dict[str, Any]) -> None:
    record_result(sweep_dir, job_num, {**read_result(sweep_dir, job_num), **fields})


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    folder = sweep_dir / RESULTS_DIR
    if not folder.is_dir():
        return []
    rows = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    return sorted(rows, key=lambda r: r["num"])


# ------------------------------------------------- launchers that survive their jobs
def _launch_surviving_lost_jobs(self, job_overrides, initial_job_idx):
    """hydra-submitit-launcher 1.2.0's `BaseSubmititLauncher.launch`, except that a job that ends
    without a result (SIGKILL, the OOM killer, a lost node) is recorded LOST instead of raised."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf
    from submitit.core.utils import UncompletedJobError

    # --- as in the plugin: an executor with the preset's parameters, one array of jobs
    init_keys = {"max_num_timeout"}
    init_params = {"folder": self.params["submitit_folder"],
                   **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys}}
    executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
    base = set(OmegaConf.structured(_submitit.BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                  if k not in init_keys | {"submitit_folder"}})
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    nums = [initial_job_idx + i for i in range(len(job_overrides))]
    params = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
              for n, o in zip(nums, job_overrides)]
    jobs = executor.map_array(self, *zip(*params))
    if self._EXECUTOR == "local":
        for job in jobs:  # submitit waits 15 s for a missing result file, for a shared file system's
            job._results_timeout_s = LOCAL_RESULT_WAIT_S  # sake; a local job's is on this disk when it ends
    # --- the difference: wait for every job, dead or alive
    returns = []
    for job, num, overrides in zip(jobs, nums, job_overrides):
        try:
            if self._EXECUTOR == "slurm" and not _wait_slurm(job):
                raise UncompletedJobError(f"SLURM job {job.job_id} ended without a result")
            returns.append(job.results()[0])
        except UncompletedJobError:
            if read_result(sweep_dir, num).get("status", "RUNNING") == "RUNNING":
                update_result(sweep_dir, num, {"status": "LOST", "error": f"{_LOST} (job {job.job_id}: no result)"})
            returns.append(JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED,
                                     _return_value={"status": "LOST"}))
    return returns


# SLURM states after which a job will not run again (a requeued one is PENDING again)
_SLURM_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
                "DEADLINE"}


def _slurm_states(job_id: str) -> Optional[set[str]]:
    """The job's states in SLURM's controller (empty once it is forgotten), None if squeue fails."""
    try:
        proc = subprocess.run(["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:  # squeue rejects the id of a job the controller no longer holds
        return set() if "invalid job id" in proc.stderr.lower() else None
    return set(proc.stdout.split())


# A SLURM job that ended gets this long for its result file to appear (a shared file system's
# delay) before it is reported LOST; the environment variable overrides it (the tests, whose
# files are local, use a few seconds).
RESULT_GRACE_ENV, RESULT_GRACE_S = "RLHF_SWEEPS_RESULT_GRACE_S", 60.0
LOCAL_RESULT_WAIT_S = 2  # hydra/launcher=local: the same wait for a job on this machine


def _result_grace_s() -> float:
    raw = os.environ.get(RESULT_GRACE_ENV, "")
    try:
        return float(raw) if raw else RESULT_GRACE_S
    except ValueError:
        print(f"[rlhf-sweeps] warning: {RESULT_GRACE_ENV}={raw!r} is not a number of seconds; "
              f"using {RESULT_GRACE_S:.0f}", file=sys.stderr, flush=True)
        return RESULT_GRACE_S


def _wait_slurm(job, poll_s: float = 5.0, grace_s: Optional[float] = None) -> bool:
    """Wait until the job has a result (True) or has ended without one (False).

    submitit alone would wait forever for a job killed without a result when `sacct` does not
    answer (a cluster without accounting, as the local one); `squeue -t all` always does. A job
    that ended gets `grace_s` (default `_result_grace_s()`) for its result file to appear.
    """
    grace_s = _result_grace_s() if grace_s is None else grace_s
    ended_at = None
    while not job.done():
        states = _slurm_states(job.job_id)
        if states is not None and states <= _SLURM_ENDED:
            ended_at = ended_at or time.time()
            if time.time() - ended_at > grace_s:
                return False
        else:
            ended_at = None  # running, queued again (a requeue), or squeue did not answer
        time.sleep(poll_s)
    return True


def survive_lost_jobs() -> None:
    """Make hydra/launcher=local|slurm (every preset built on submitit) report a member that died
    without a result instead of raising. Hydra accepts launcher classes only from its
    `hydra_plugins` package, so this replaces the plugin's `launch` method rather than subclassing.
    Hydra's plugin scan re-executes the plugin's module (new classes), so it must have run first."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # the scan, once per process
    _submitit.BaseSubmititLauncher.launch = _launch_surviving_lost_jobs


# ------------------------------------------------------------------- summary
def run_numbers(hist: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Peak and final gold (and the peak's step), the proxy's rise since the gold peak, final KL,
    and the over-optimization flag of the analysis' own per-run rule (one code path)."""
    import numpy as np

    from analysis.verdicts import overoptimization

    steps = [s for s in sorted(hist) if M.EVAL_GOLD_REWARD in hist[s]]
    if not steps:
        return {}

    def series(key: str) -> np.ndarray:
        return np.array([[hist[s].get(key, np.nan) for s in steps]], dtype=float)  # (1 run, evals)

    gold, proxy, kl = series(M.EVAL_GOLD_REWARD)[0], series(M.EVAL_PROXY_REWARD)[0], series(M.EVAL_KL)[0]
    peak = int(np.argmax(gold))
    flag, _, _ = overoptimization(series(M.EVAL_GOLD_REWARD), series(M.EVAL_GOLD_SE),
                                  series(M.EVAL_PROXY_REWARD), series(M.EVAL_PROXY_SE))
    return {"final_gold": float(gold[-1]), "peak_gold": float(gold[peak]), "peak_step": steps[peak],
            "proxy_rise": float(proxy[-1] - proxy[peak]), "final_kl": float(kl[-1]), "overoptimized": flag}


_SUMMARY_KEYS = (M.EVAL_GOLD_REWARD, M.EVAL_GOLD_SE, M.EVAL_PROXY_REWARD, M.EVAL_PROXY_SE, M.EVAL_KL)


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def count_statuses(results: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def summarize(results: list[dict[str, Any]], axes: Sequence[str] = (), numbers: Optional[dict] = None) -> tuple[
        dict[str, int], str]:
    """(status counts, an aligned table with one row per member, then the reasons of those that failed)."""
    numbers = numbers or {}
    counts = count_statuses(results)
    axis_keys = [_split(a)[0] for a in axes]
    head = ["#", *(axis_keys or ["member"]), "status", "gold final", "gold peak (step)", "proxy rise", "KL final",
            "over-opt"]
    rows = []
    for r in results:
        values = dict(_split(o) for o in r.get("overrides", []))
        who = [values.get(k, "?") for k in axis_keys] if axis_keys else [r.get("name", "")]
        n = numbers.get(r.get("run_id"), {})
        flag = n.get("overoptimized")
        resumed = r.get("resumed_from_step")
        rows.append([str(r["num"]), *who, r["status"] + (f" (resumed from step {resumed})" if resumed else ""),
                     _fmt(n.get("final_gold"), "+.2f"),
                     f"{_fmt(n.get('peak_gold'), '+.2f')} ({n['peak_step']})" if n else "-",
                     _fmt(n.get("proxy_rise"), "+.2f"), _fmt(n.get("final_kl"), ".1f"),
                     "-" if not n else ("?" if flag is None else ("YES" if flag else "no"))])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    lines = ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    if any(row[-1] == "?" for row in rows):
        lines.append("  over-opt ?: too few evals for the analysis' rule (docs/science.md §9)")
    for r in results:
        why = r.get("error") or ("never reported, and its launcher did not see it end" if r["status"] == "RUNNING"
                                 else None)
        if why and r["status"] not in ("FINISHED", "SKIPPED", "RELOGGED"):
            text = str(why).strip().replace("\n", "\n      ")
            lines.append(f"  #{r['num']} {r['status']}: {text}")
    return counts, "\n".join(lines)


def _close_runs(results, parent: Path, uri: str, experiment: str, numbers: dict, status: str,
                reason: Optional[str]) -> None:
    """End lost members' runs FAILED, read every member's numbers into `numbers`, end the parent run."""
    from rlhf_sweeps.tracking import Tracker

    tracker = Tracker(uri, experiment)
    for r in results:
        if not r.get("run_id"):
            continue
        if r["status"] in ("LOST", "RUNNING") and tracker.run_status(r["run_id"]) == "RUNNING":
            tracker.run_id = r["run_id"]  # SIGKILL left it RUNNING: nothing else will end it
            tracker.finish("FAILED", "lost: " + (r.get("error") or _LOST))
        try:
            numbers[r["run_id"]] = run_numbers(tracker.history(_SUMMARY_KEYS, r["run_id"]))
        except Exception as err:  # noqa: BLE001 - a table without this row's numbers, not a sweep left open
            print(f"[rlhf-sweeps] warning: no numbers for member #{r['num']} ({type(err).__name__}: {err})",
                  file=sys.stderr)
    if parent.exists():
        tracker.run_id = parent.read_text().strip()
        tracker.set_tags({TAG_SWEEP_COUNTS: json.dumps(count_statuses(results), sort_keys=True)})
        tracker.finish(status, reason)


def finish_sweep(sweep_dir: Path, uri: str, experiment: str, interrupted: Optional[str] = None) -> bool:
    """Print the summary, end lost members' runs and the parent run; True if every member succeeded."""
    results = read_results(sweep_dir)
    grid = read_grid(sweep_dir)
    failed = sum(1 for r in results if r["status"] in FAILED_STATUSES)
    parent = sweep_dir / PARENT_FILE
    status = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
    where, numbers = "no MLflow parent run (nothing trained)", {}
    if parent.exists() or any(r.get("run_id") for r in results):  # else no run anywhere: leave the store alone
        try:
            _close_runs(results, parent, uri, experiment, numbers, status, interrupted or (
                f"{failed} member(s) failed, were killed or lost" if failed else None))
            if parent.exists():
                where = f"MLflow parent run {parent.read_text().strip()} ended {status}"
        except Exception as err:  # noqa: BLE001 - the summary must still print, without numbers
            where = f"MLflow not updated ({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''})"
    counts, table = summarize(results, grid["axes"], numbers)
    parts = ", ".join(f"{counts[s]} {s.lower()}" for s in sorted(counts))
    sweep_id = sweep_id_for(sweep_dir)
    print(f"\n[rlhf-sweeps] sweep {sweep_id}: {len(results)} job(s): {parts or 'none reported'}; {where}"
          + (f"; interrupted: {interrupted}" if interrupted else "") + "\n" + table
          + f"\n  analyse it: python -m analysis --sweep {sweep_id} --experiment {experiment} --tracking-uri {uri}\n",
          flush=True)
    return not failed and not interrupted


class SweepCallback(Callback):
    """Writes the grid when a multirun starts; prints the summary and closes the parent run when it ends."""

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        # axes set by a preset (`hydra.sweeper.params`, e.g. experiment=paper_simpo) count as typed
        preset = OmegaConf.select(config, "hydra.sweeper.params") or {}
        write_grid(Path(str(config.hydra.sweep.dir)),
                   [*(f"{k}={v}" for k, v in preset.items()), *config.hydra.overrides.task])

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        if not finish_sweep(Path(str(config.hydra.sweep.dir)), config.tracking.uri, config.tracking.experiment):
            sys.exit(1)
