"""Checkpoints: the last two are kept, each verified by its size and SHA-256; a
corrupt or unsummed one is never trusted (issue 17).

A real SIGKILLed `launch.py` resuming past a truncated checkpoint, and a real
`mlflow server` stopped mid-run, are in tests/e2e/test_broken_state_runs.py.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlhf_sweeps import checkpoint


# ------------------------------------------------------------------------------- checkpoints
def _save(run_dir: Path, step: int) -> None:
    checkpoint.save(run_dir, {"step": step, "w": torch.full((1000,), float(step))})


def test_checkpoints_keep_the_last_two_and_fall_back_past_a_corrupt_one(tmp_path, capsys):
    for step in (3, 6, 9):
        _save(tmp_path, step)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == ["checkpoint-00000006.pt",
                                                                        "checkpoint-00000009.pt"]
    assert checkpoint.load(tmp_path)["step"] == 9

    latest = tmp_path / "checkpoint-00000009.pt"
    latest.write_bytes(latest.read_bytes()[:-10])  # truncated (a full disk, a bad copy)
    state = checkpoint.load(tmp_path)
    assert state["step"] == 6 and torch.equal(state["w"], torch.full((1000,), 6.0))
    assert "resuming from the previous one, checkpoint-00000006.pt (step 6)" in capsys.readouterr().err
    assert not latest.exists()  # the corrupt one is gone: the next save does not meet it again

    # same size, flipped bytes: the checksum catches what the size cannot
    prev = tmp_path / "checkpoint-00000006.pt"
    data = bytearray(prev.read_bytes())
    data[len(data) // 2] ^= 0xFF
    prev.write_bytes(bytes(data))
    assert checkpoint.load(tmp_path) is None
    err = capsys.readouterr().err
    assert "no valid checkpoint" in err and "restarts from step 0" in err


def test_a_checkpoint_without_its_sum_is_not_trusted_and_a_reader_repairs_nothing(tmp_path, capsys):
    _save(tmp_path, 3)
    _save(tmp_path, 6)
    (tmp_path / "checkpoint-00000006.sum.json").unlink()
    assert checkpoint.load(tmp_path, repair=False)["step"] == 3
    assert (tmp_path / "checkpoint-00000006.pt").exists() and capsys.readouterr().err == ""
    assert checkpoint.latest_step(tmp_path) == 3
