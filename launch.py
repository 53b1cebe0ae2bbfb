"""rlhf-sweeps entry point: the only @hydra.main.

    python launch.py                                        # one run, embedded CPU world
    python launch.py -m regularizer=entropy,kl lr=1e-4,1e-3 # a sweep
    python launch.py -m hydra/launcher=slurm ...            # the same sweep on SLURM
    python launch.py --cfg job                              # print the composed config
    python launch.py experiment=smoke dry_run=true          # print the plan, train nothing

compose (Hydra) -> validate (rlhf_sweeps.config) -> plan -> run (rlhf_sweeps.job).
"""

from __future__ import annotations

import os
import sys

# vLLM's engine runs in-process: no spawn, no import-time guard problems in jobs.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rlhf_sweeps.config import Config, ConfigError  # noqa: E402

ConfigStore.instance().store(name="schema", node=Config)


def _sweep_info(cfg):
    from rlhf_sweeps.job import SweepInfo

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return SweepInfo()
    from rlhf_sweeps.sweep import sweep_info_for

    return sweep_info_for(hc, cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from rlhf_sweeps.job import run_job

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        return run_job(cfg, overrides, _sweep_info(cfg))
    except ConfigError as err:
        print(f"\n{err}\n", file=sys.stderr)
        if multirun:  # one bad grid point must not take the sweep down
            return {"status": "CONFIG_ERROR", "error": str(err)}
        sys.exit(2)
    except Exception as err:  # noqa: BLE001
        if not multirun:
            raise
        print(f"[rlhf-sweeps] job {overrides} FAILED: {type(err).__name__}: {err}", file=sys.stderr)
        return {"status": "FAILED", "error": f"{type(err).__name__}: {err}"}


if __name__ == "__main__":
    main()
