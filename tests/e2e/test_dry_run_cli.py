"""`launch.py dry_run=true` prints the plan of a paper preset (Pythia-1B on an 80 GB
GPU) without loading anything, and bench/gpu_check.sh runs its CPU-only smoke.
"""

from __future__ import annotations

import re
import subprocess

import torch

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from tests.conftest import ROOT, run_launch


def test_paper_tldr_dry_run_prints_plan_and_fits_pythia_1b_on_80gb(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = run_launch(["experiment=paper_tldr", "dry_run=true", f"tracking.uri=sqlite:///{db}",
                       f"cache_dir={tmp_path}/cache"])
    out = proc.stdout
    assert "policy_path: cleanrl/EleutherAI_pythia-1b-deduped__sft__tldr" in out  # resolved config
    assert "128 prompts x k=4 = 512 responses per optimizer step" in out
    assert "16 sequences x 32 gradient-accumulation steps" in out
    assert "512 prompt + 53 response = 565 tokens" in out
    assert "1,011,781,632" in out  # Pythia-1B's published parameter count
    assert "6,650,736,640" in out  # the 6.9B gold RM without its LM head, with a scalar head
    assert re.search(r"=> FITS on a 80 GiB GPU", out)
    assert not db.exists() and not (tmp_path / "cache").exists()  # no run, no stage, no download


def test_gpu_check_cpu_only_smoke(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-only"], cwd=ROOT,
                          env={"PATH": f"{ROOT}/.venv/bin:/usr/bin:/bin", "OUT": str(tmp_path),
                               "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "status: OK" in proc.stdout
    import json

    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["update_toy"]["update_tokens_per_s"] > 0 and torch.isfinite(torch.tensor(res["update_toy"]["loss"]))
    # the reason fp32 master weights are kept: lr=1e-7 moves fp32 weights, barely any bf16 one
    assert res["numerics"]["changed_by_lr1e-7_float32"] > 0.5 > 0.05 > res["numerics"]["changed_by_lr1e-7_bfloat16"]
