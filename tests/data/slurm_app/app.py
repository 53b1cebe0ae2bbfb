"""Tiny Hydra app for the launcher-preset tests (tests/e2e/test_slurm_cluster.py).

The test runs it with ``--config-path <tmp conf>`` holding ``config.yaml``
(from this folder) and the project's ``conf/hydra/launcher/*.yaml``. Each job
writes ``result.json`` into its Hydra output folder.
"""

import json
import os
import socket
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name="config")
def main(cfg: DictConfig) -> int:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    result = {
        "x": cfg.x,
        "y": cfg.x * cfg.scale,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array_task_id": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "submitit_executor": os.environ.get("SUBMITIT_EXECUTOR"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    (out_dir / "result.json").write_text(json.dumps(result))
    return result["y"]


if __name__ == "__main__":
    main()
