"""How a sweep names its parent run and its members, and the aligned summary
table it prints at the end. The sweeps that lose members to SIGKILL and
SIGTERM are in tests/e2e/test_sweep_survives.py.
"""

from __future__ import annotations

from rlhf_sweeps.sweep import member_name, parent_name, read_grid, summarize, write_grid

TRACEBACK = "Traceback (most recent call last)"


# ------------------------------------------------------------------------------------ units
def test_the_parent_is_named_after_the_grid_and_members_after_their_values(tmp_path):
    write_grid(tmp_path, ["experiment=smoke", "regularizer=entropy,kl", "lr=1e-4,3e-4", "cache_dir=/x",
                          "hydra/launcher=local", "seed=0"])
    grid = read_grid(tmp_path)
    assert parent_name(grid, "multirun/x") == "regularizer=entropy,kl lr=1e-4,3e-4"
    groups = ["regularizer", "algo", "hydra/launcher"]
    names = {member_name(["experiment=smoke", f"regularizer={r}", f"lr={lr}", "seed=0"], grid["axes"], groups)
             for r in ("entropy", "kl") for lr in ("0.0001", "0.0003")}
    assert names == {"entropy lr=0.0001", "entropy lr=0.0003", "kl lr=0.0001", "kl lr=0.0003"}


def test_the_summary_is_an_aligned_table_with_numbers_and_whole_reasons():
    error = "Invalid config:\n  lr=-1.0: must be a positive number (e.g. lr=0.0003)\nFix the value(s) ..."
    results = [
        {"num": 0, "status": "FINISHED", "run_id": "a", "overrides": ["regularizer=entropy", "lr=0.0001"]},
        {"num": 1, "status": "CONFIG_ERROR", "error": error, "overrides": ["regularizer=kl", "lr=-1"]},
        {"num": 2, "status": "LOST", "run_id": "c", "error": "the process died", "overrides": ["regularizer=kl",
                                                                                              "lr=0.0003"]},
    ]
    numbers = {"a": {"final_gold": -8.78, "peak_gold": 0.74, "peak_step": 20, "proxy_rise": 3.1, "final_kl": 52.3,
                     "overoptimized": True},
               "c": {"final_gold": 0.1, "peak_gold": 0.2, "peak_step": 0, "proxy_rise": 0.05, "final_kl": 1.0,
                     "overoptimized": None}}
    counts, text = summarize(results, ["regularizer=entropy,kl", "lr=1e-4,-1,3e-4"], numbers)
    assert counts == {"FINISHED": 1, "CONFIG_ERROR": 1, "LOST": 1}
    lines = text.splitlines()
    header, rows = lines[0], lines[1:4]
    assert header.split()[:4] == ["#", "regularizer", "lr", "status"]

    def cell(row: str, column: str) -> str:  # aligned: every value starts under its column's name
        return row[header.index(column):]

    for row, status in zip(rows, ["FINISHED", "CONFIG_ERROR", "LOST"]):
        assert cell(row, "status").startswith(status), row
    assert cell(rows[0], "gold final").startswith("-8.78") and cell(rows[0], "gold peak").startswith("+0.74 (20)")
    assert cell(rows[0], "proxy rise").startswith("+3.10") and cell(rows[0], "KL final").startswith("52.3")
    assert cell(rows[0], "over-opt") == "YES" and cell(rows[2], "over-opt") == "?"
    assert cell(rows[1], "gold final").startswith("-")
    # a reason is printed whole, under the table: the CONFIG_ERROR line shows the validation message
    assert "lr=-1.0: must be a positive number" in text and "#2 LOST: the process died" in text


def test_the_lost_job_grace_comes_from_the_environment_and_survives_a_bad_value(monkeypatch, capsys):
    from rlhf_sweeps import sweep

    monkeypatch.delenv(sweep.RESULT_GRACE_ENV, raising=False)
    assert sweep._result_grace_s() == sweep.RESULT_GRACE_S
    monkeypatch.setenv(sweep.RESULT_GRACE_ENV, "5")
    assert sweep._result_grace_s() == 5.0
    monkeypatch.setenv(sweep.RESULT_GRACE_ENV, "soon")
    assert sweep._result_grace_s() == sweep.RESULT_GRACE_S
    assert "RLHF_SWEEPS_RESULT_GRACE_S='soon' is not a number of seconds" in capsys.readouterr().err
