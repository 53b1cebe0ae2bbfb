"""`python -m analysis.calibrate` prints the false-positive rate and power of
every verdict rule. The rates themselves are tested in tests/unit/test_calibrate.py.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

LINE = re.compile(r"^(?P<rule>\S.*?): false_positive_rate=(?P<fpr>[0-9.]+) power=(?P<power>[0-9.]+)\s")


def test_cli_prints_rates_per_rule():
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.calibrate", "--n-sims", "100", "--se", "0.05"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [LINE.match(ln) for ln in proc.stdout.splitlines() if "false_positive_rate=" in ln]
    assert len(lines) == 7 and all(lines)
    assert lines[0]["rule"] == "overoptimized[condition, 3 seed(s)]" and "SE 0.05" in proc.stdout
