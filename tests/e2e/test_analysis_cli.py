"""`python -m analysis` in a fresh interpreter: it never imports torch, and only
analysis/load.py imports mlflow. The analysis itself is tested in tests/unit/test_analysis.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from tests.conftest import ROOT

EXPERIMENT, EXACT_EXPERIMENT = "rlhf-sweeps", "fits-exact"
SWEEP_MAIN, SWEEP_CONTROLS = "study-main", "study-controls"
STEPS = np.arange(0, 201, 20)  # the study: 200 steps, eval every 20 -> 11 evals incl. step 0
SE = 0.09  # logged eval SE (gold std), the real size


def test_analysis_imports_no_torch_and_mlflow_only_in_load():
    code = (
        "import sys, analysis.__main__, analysis.report, analysis.calibrate; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    for path in (ROOT / "analysis").glob("*.py"):
        src = path.read_text()
        imports_mlflow = "import mlflow" in src or "from mlflow" in src
        assert imports_mlflow == (path.name == "load.py"), path.name
