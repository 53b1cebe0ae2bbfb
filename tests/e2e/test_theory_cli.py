"""`python -m analysis.theory` writes its CSVs without importing torch, as a module
and as a script.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from tests.conftest import ROOT

BETA, ALPHA, GAMMA = 2.0, 1.0, 1.0


def test_cli_writes_csvs_and_never_imports_torch(tmp_path):
    out = tmp_path / "theory"
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys; from analysis.theory import main; rc = main(['--out', sys.argv[1]]); "
         "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)",
         str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "VERDICT" in proc.stdout
    t = pd.read_csv(out / "theory_table.csv")
    nc = pd.read_csv(out / "noncancel_table.csv")
    assert len(t) == 8 and len(nc) == 90


def test_cli_module_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.theory", "--seed", "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "theory_table.csv").exists()
    assert (tmp_path / "noncancel_table.csv").exists()
