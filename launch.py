"""rlhf-sweeps entry point: the only @hydra.main.

    python launch.py                                        # one run, embedded CPU world
    python launch.py -m regularizer=entropy,kl lr=1e-4,1e-3 # a sweep
    python launch.py -m hydra/launcher=slurm ...            # the same sweep on SLURM
    python launch.py --cfg job                              # print the composed config
    python launch.py experiment=smoke dry_run=true          # print the plan, train nothing

compose (Hydra) -> validate (rlhf_sweeps.config) -> plan -> run (rlhf_sweeps.job).

In a multirun a failing member does not raise: it reports FAILED (its MLflow
run is FAILED with a `failure_reason` tag) and the other members go on; at the
end rlhf_sweeps.sweep.SweepCallback prints what finished, was skipped or
failed, and the command exits 1 if anything failed.
"""

from __future__ import annotations

import os
import sys

# vLLM's engine runs in-process: no spawn, no import-time guard problems in jobs.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
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

ConfigStore.instance().store(name="schema", node=Config)


def _launcher_cpus(hc):
    """The launcher preset's cpus_per_task (submitit local / SLURM), None for the basic launcher."""
    launcher = hc.get("launcher") or {}
    return launcher.get("cpus_per_task")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from rlhf_sweeps.job import JobBusy, run_job

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        try:
            return run_job(cfg, overrides, launcher_cpus=_launcher_cpus(hc))
        except ConfigError as err:
            print(f"\n{err}\n", file=sys.stderr)
            sys.exit(2)

    # A sweep member: one bad grid point must not take the sweep down. Report
    # the outcome to the sweep folder (rlhf_sweeps.sweep.SweepCallback sums up).
    from pathlib import Path

    from rlhf_sweeps.job import run_name
    from rlhf_sweeps.sweep import record_result, sweep_info_for

    sweep_dir, num, name = Path(hc.sweep.dir), int(hc.job.num), run_name(overrides)
    record_result(sweep_dir, num, {"status": "RUNNING", "name": name})
    try:
        result = run_job(cfg, overrides, sweep_info_for(hc, cfg), launcher_cpus=_launcher_cpus(hc))
    except ConfigError as err:
        print(f"\n{err}\n", file=sys.stderr)
        result = {"status": "CONFIG_ERROR", "error": str(err)}
    except JobBusy as err:
        print(f"[rlhf-sweeps] job {name}: {err}", file=sys.stderr)
        result = {"status": "BUSY", "error": str(err)}
    except Exception as err:  # noqa: BLE001
        print(f"[rlhf-sweeps] job {name} FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        result = {"status": "FAILED", "error": f"{type(err).__name__}: {err}"}
    record_result(sweep_dir, num, {"name": name, **result})
    return result


if __name__ == "__main__":
    main()
