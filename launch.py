"""rlhf-sweeps entry point: the only @hydra.main.

    python launch.py                                        # one run, embedded CPU world
    python launch.py -m regularizer=entropy,kl lr=1e-4,1e-3 # a sweep
    python launch.py -m hydra/launcher=slurm ...            # the same sweep on SLURM
    python launch.py --cfg job                              # print the composed config
    python launch.py experiment=smoke dry_run=true          # print the plan, train nothing

compose (Hydra) -> validate (rlhf_sweeps.config) -> plan -> run (rlhf_sweeps.job).

In a multirun a failing member does not raise: it reports FAILED (its MLflow
run is FAILED with a `failure_reason` tag) and the other members go on; at the
end rlhf_sweeps.sweep.SweepCallback prints what finished, was skipped, failed,
was killed or was lost, and the command exits 1 if anything did not finish.

What a user gets wrong gets one paragraph, never a traceback: a bad value
(exit 2), an unwritable `cache_dir` or output folder (2), an unreachable
tracking store (2), a member already running elsewhere (BUSY, 3). SIGTERM
ends the run KILLED, as Ctrl-C does (exit 143 / 130).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

# vLLM's engine runs in-process: no spawn, no import-time guard problems in jobs.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# torch reads its C++ log level once, when it loads, which is before any config exists; the
# quiet default is set here (rlhf_sweeps/quiet.py sets the rest), unless verbose=true is asked.
if not any(arg.lower() in ("verbose=true", "verbose=1") for arg in sys.argv[1:]):
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
# `make slurm-up` starts a project-local cluster whose config lives in .slurm/;
# let `python launch.py -m hydra/launcher=slurm ...` find it without sourcing
# .slurm/env.sh. A cluster of the user's own (SLURM_CONF set, or /etc/slurm) wins.
_LOCAL_SLURM_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".slurm", "slurm.conf")
if "SLURM_CONF" not in os.environ and not os.path.exists("/etc/slurm/slurm.conf") and os.path.exists(_LOCAL_SLURM_CONF):
    os.environ["SLURM_CONF"] = _LOCAL_SLURM_CONF

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rlhf_sweeps.config import Config, ConfigError  # noqa: E402
from rlhf_sweeps.sweep import survive_lost_jobs  # noqa: E402

ConfigStore.instance().store(name="schema", node=Config)
# hydra/launcher=local|slurm: a member that dies without reporting (SIGKILL, OOM) is
# summarized as LOST instead of crashing the sweep (rlhf_sweeps.sweep).
survive_lost_jobs()


def _launcher_cpus(hc):
    """The launcher preset's cpus_per_task (submitit local / SLURM), None for the basic launcher."""
    launcher = hc.get("launcher") or {}
    return launcher.get("cpus_per_task")


_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def _output_dir_problem(argv: list[str]) -> str | None:
    """Hydra makes its output folder before any of our code runs, and fails with a traceback if it
    cannot: check the folder (or its nearest existing parent) is writable first."""
    if any(a in ("-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "--shell-completion") for a in argv):
        return None  # prints and exits: writes nothing
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")]
    folder = Path(given[-1].split("${", 1)[0] or ".") if given else Path("multirun" if multirun else "outputs")
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    why = "a read-only file system" if _read_only_fs(existing) else "no write permission"
    return (f"{key}={given[-1] if given else folder}: cannot write there ({existing}: {why}). Hydra keeps each "
            f"run's log and config there: run from a writable folder, or pass {key}=/a/writable/folder.")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _fail(message: str, code: int = 2) -> None:
    print(f"\n{message}\n", file=sys.stderr, flush=True)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from rlhf_sweeps.interrupts import Terminated, raise_interrupt, raise_terminated
    from rlhf_sweeps.job import JobBusy, run_job, run_name

    # SIGTERM (kill, timeout, scancel) ends the run KILLED with its reason, as Ctrl-C does;
    # neither lands inside a store write (rlhf_sweeps/interrupts.py).
    signal.signal(signal.SIGTERM, raise_terminated)
    signal.signal(signal.SIGINT, raise_interrupt)
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        try:
            return run_job(cfg, overrides, launcher_cpus=_launcher_cpus(hc))
        except ConfigError as err:  # bad values, unwritable cache_dir, unreachable tracking store
            _fail(str(err))
        except JobBusy as err:
            _fail(f"[rlhf-sweeps] BUSY: {err}", 3)
        except (Terminated, KeyboardInterrupt) as err:
            _fail(f"[rlhf-sweeps] stopped: {str(err) or 'Ctrl-C'}; its MLflow run is KILLED. Run the same command "
                  "again to resume it from its last checkpoint.", 143 if isinstance(err, Terminated) else 130)

    # A sweep member: one bad grid point must not take the sweep down. Report
    # the outcome to the sweep folder (rlhf_sweeps.sweep.SweepCallback sums up).
    from rlhf_sweeps.sweep import finish_sweep, record_result, sweep_info_for, update_result

    sweep_dir, num = Path(hc.sweep.dir), int(hc.job.num)
    sweep = sweep_info_for(hc, cfg)
    base = {"name": sweep.name or run_name(overrides), "overrides": overrides}
    record_result(sweep_dir, num, {**base, "status": "RUNNING", "pid": os.getpid(), "host": socket.gethostname()})
    try:
        result = run_job(cfg, overrides, sweep, launcher_cpus=_launcher_cpus(hc))
    except ConfigError as err:
        print(f"\n{err}\n", file=sys.stderr)
        result = {"status": "CONFIG_ERROR", "error": str(err)}
    except JobBusy as err:
        print(f"[rlhf-sweeps] BUSY: job {base['name']}: {err}", file=sys.stderr)
        result = {"status": "BUSY", "error": str(err)}
    except (Terminated, KeyboardInterrupt) as err:
        why = str(err) or "Ctrl-C"
        reason = f"{why}; run the same sweep command again to resume it from its last checkpoint"
        update_result(sweep_dir, num, {"status": "KILLED", "error": reason})
        print(f"[rlhf-sweeps] job {base['name']} KILLED: {reason}", file=sys.stderr, flush=True)
        if hc.launcher.get("_target_") == _BASIC_LAUNCHER:  # the sweep is this process: it ends here too
            finish_sweep(sweep_dir, cfg.tracking.uri, cfg.tracking.experiment, interrupted=why)
        raise Terminated(why) from None  # exit 143, no traceback; submitit then sees the job end
    except Exception as err:  # noqa: BLE001
        print(f"[rlhf-sweeps] job {base['name']} FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        result = {"status": "FAILED", "error": f"{type(err).__name__}: {err}"}
    update_result(sweep_dir, num, {**base, **result})
    return result


# Groups composed for the user by the defaults list (per-algorithm specializations), not chosen.
INTERNAL_GROUPS = ("algo_model", "algo_regularizer")


def public_groups() -> dict[str, list[str]]:
    """The config groups a user chooses from, and their options (from conf/)."""
    conf = Path(__file__).resolve().parent / "conf"
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf.iterdir()) if d.is_dir() and d.name not in (*INTERNAL_GROUPS, "hydra")}


def _group_option_problem(argv: list[str]) -> str | None:
    """A mistyped group option (`regularizer=klx`), with the nearest option: before Hydra, whose
    own message lists the options but guesses nothing."""
    import difflib

    groups = public_groups()
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in groups or "(" in value:  # glob(...), choice(...): Hydra's sweep syntax
            continue
        for option in value.split(","):
            if option and option not in groups[key] and option != "null":
                near = difflib.get_close_matches(option, groups[key], n=1)
                hint = f"did you mean `{key}={near[0]}`? " if near else ""
                return (f"{key}={option}: no such option in conf/{key}/. {hint}"
                        f"Options: {', '.join(groups[key])}.")
    return None


if __name__ == "__main__":
    problem = _output_dir_problem(sys.argv[1:]) or _group_option_problem(sys.argv[1:])
    if problem:
        _fail(problem)
    main()
