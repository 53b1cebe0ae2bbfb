"""`launch.py` on the command line: a bad value or option exits non-zero before any
run with a message that names it (and the nearest valid option), `--cfg job`
prints the composed config, and `--help` lists the groups a user chooses.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from tests.conftest import ROOT, run_launch

CONF = ROOT / "conf"
GROUPS = ["task", "model", "algo", "regularizer", "reward", "rollout", "tracking", "experiment"]


def _runs_in(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


def test_cli_negative_lr_exits_nonzero_before_any_run(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = run_launch(["regularizer=kl", "lr=-1", f"tracking.uri=sqlite:///{db}", f"cache_dir={tmp_path}"],
                      check=False, timeout=120)
    assert proc.returncode != 0
    assert "lr=-1.0" in proc.stderr and "positive" in proc.stderr
    assert _runs_in(db) == 0
    assert not (tmp_path / "stages").exists()  # no compute happened


def test_cli_unknown_regularizer_lists_allowed_values(tmp_path):
    db = tmp_path / "mlflow.db"
    proc = run_launch(["regularizer=klx", f"tracking.uri=sqlite:///{db}"], check=False, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr
    assert "regularizer=klx" in err and "conf/regularizer/" in err
    for allowed in ("entropy", "kl", "none"):
        assert allowed in err
    assert _runs_in(db) == 0


def test_cfg_job_prints_composed_config():
    proc = run_launch(["--cfg", "job", "regularizer=entropy"], timeout=120)
    assert "regularizer:" in proc.stdout and "name: entropy" in proc.stdout


def test_unknown_reward_option_fails_at_composition_and_lists_the_options():
    proc = run_launch(["reward=oracle"], check=False)
    assert proc.returncode != 0
    assert all(opt in proc.stderr for opt in ("gold", "proxy", "zero"))


def test_help_lists_every_group_a_user_chooses_and_no_internal_one():
    from launch import INTERNAL_GROUPS, public_groups

    out = run_launch(["--help"]).stdout
    for group, options in public_groups().items():
        assert f"  {group}: {', '.join(options)}" in out, group
    assert not any(g in out for g in INTERNAL_GROUPS)


def test_a_mistyped_group_option_suggests_the_nearest():
    proc = run_launch(["regularizer=klx"], check=False)
    assert proc.returncode == 2 and "did you mean `regularizer=kl`?" in proc.stderr
    assert "Traceback" not in proc.stderr
