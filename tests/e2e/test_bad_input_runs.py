"""Bad values, bad places and broken state, each through `launch.py` as a user would (issue 17).

Every input here once gave a traceback, a hang, a run left RUNNING or a silent
no-op. Now a bad value, combination or place exits non-zero with one paragraph
that names the key or path (no Python traceback, no compute); broken state is
repaired and the repair is said; the one valid-but-useless combination (k1 in
the loss) runs with a warning. No case leaves a RUNNING run in the store.

The read-only cases bind-mount a folder read-only (root only; skipped elsewhere).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from rlhf_sweeps import checkpoint
from tests.launching import SMALL, histories, launch_cmd, launch_env, mlflow_runs, run_launch

TRACEBACK = "Traceback (most recent call last)"


# ------------------------------------------------------------------------------- the inputs
@dataclass
class Case:
    """One input. `args` are launch.py overrides; `prepare(ctx)` builds broken state and may return
    more overrides; `expect` is error (exit != 0, one paragraph naming `names`), repaired, or warns."""

    id: str
    args: list[str] = field(default_factory=list)
    expect: str = "error"
    names: tuple[str, ...] = ()  # what the message must contain
    prepare: Optional[Callable] = None
    check: Optional[Callable] = None  # extra assertions (ctx, proc)


@dataclass
class Ctx:
    tmp: Path
    stages: Path  # a module-wide cache of built stages, to copy (never to modify)
    unmount: Optional[Path] = None  # a read-only mount to undo
    background: Optional[subprocess.Popen] = None  # a run started by `prepare`

    @property
    def cache(self) -> Path:
        return self.tmp / "cache"

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.tmp / 'mlflow.db'}"

    def args(self, *extra: str) -> list[str]:
        defaults = ["threads=1", f"cache_dir={self.cache}", f"tracking.uri={self.uri}",
                    f"hydra.run.dir={self.tmp / 'outputs'}"]
        given = {e.split("=", 1)[0] for e in extra}
        return [*SMALL, *(d for d in defaults if d.split("=", 1)[0] not in given), *extra]

    def with_stages(self) -> None:
        shutil.copytree(self.stages / "stages", self.cache / "stages", dirs_exist_ok=True)

    def train(self, *extra: str) -> Path:
        """One finished smoke run (6 steps, checkpoints at 3 and 6); returns its run folder."""
        self.with_stages()
        run_launch(self.args(*extra), self.tmp, timeout=900)
        (run_dir,) = [p for p in (self.cache / "runs").iterdir() if p.is_dir()]
        return run_dir


def _stage(ctx: Ctx, name: str) -> Path:
    (folder,) = (ctx.cache / "stages").glob(f"{name}-*")
    return folder


# --- broken state -----------------------------------------------------------------------
def _truncated_checkpoint(ctx: Ctx):
    run_dir = ctx.train()
    (run_dir / "done.json").unlink()  # a run that was killed after its last checkpoint, say
    latest = checkpoint._candidates(run_dir)[0]
    latest.write_bytes(latest.read_bytes()[:1000])


def _check_truncated_checkpoint(ctx: Ctx, proc):
    assert "resuming from the previous one, checkpoint-00000003.pt (step 3)" in proc.stderr
    (run,) = mlflow_runs(ctx.uri)
    for key, points in histories(ctx.uri, run.info.run_id).items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{key}: duplicated steps {steps}"


def _truncated_stage_weights(ctx: Ctx):
    ctx.with_stages()
    weights = _stage(ctx, "sft") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def _missing_normalization(ctx: Ctx):
    ctx.with_stages()
    (_stage(ctx, "proxy") / "normalization.json").unlink()


def _check_rebuilt(stage: str):
    def check(ctx: Ctx, proc):
        rebuilt = [line for line in (ctx.cache / "builds.log").read_text().splitlines() if "rebuilt" in line]
        assert len(rebuilt) == 1 and f" {stage}-" in rebuilt[0], rebuilt
        assert "rebuilding it" in proc.stderr
        (run,) = mlflow_runs(ctx.uri)
        assert run.info.status == "FINISHED"
    return check


def _store_moved(ctx: Ctx):
    ctx.train()
    shutil.move(ctx.tmp / "mlflow.db", ctx.tmp / "moved.db")


def _check_relogged(ctx: Ctx, proc):
    assert "re-logged it from" in proc.stdout and "nothing trained" in proc.stdout
    assert "step 0 |" not in proc.stdout  # no evaluation ran: nothing was trained
    (run,) = mlflow_runs(ctx.uri)
    (old,) = mlflow_runs(f"sqlite:///{ctx.tmp / 'moved.db'}")
    assert run.info.status == "FINISHED" and run.data.params == old.data.params
    assert histories(ctx.uri, run.info.run_id) == histories(f"sqlite:///{ctx.tmp / 'moved.db'}", old.info.run_id)


def _wait_for(predicate, what: str, proc, timeout: float = 600):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} never happened:\n{proc.communicate()[0][-3000:] if proc.poll() is not None else ''}")


def _start_long_run(ctx: Ctx) -> subprocess.Popen:
    """A 200-step run in the background, returned once it has its first checkpoint."""
    ctx.with_stages()
    first = subprocess.Popen(launch_cmd(ctx.args("steps=200", "eval_every=50", "checkpoint_every=3")), cwd=ctx.tmp,
                             env=launch_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(lambda: any((ctx.cache / "runs").glob("*/checkpoint-*.pt")), "a first checkpoint", first)
    return first


def _busy(ctx: Ctx):
    ctx.background = _start_long_run(ctx)
    return ["steps=200", "eval_every=50", "checkpoint_every=3"]


def _check_busy(ctx: Ctx, proc):
    assert proc.returncode == 3 and proc.stderr.strip().startswith("[rlhf-sweeps] BUSY:"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    first = ctx.background
    first.send_signal(signal.SIGTERM)  # the first one, stopped as `kill` does: its run ends KILLED
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 143 and TRACEBACK not in out, out[-3000:]
    (run,) = mlflow_runs(ctx.uri)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["failure_reason"]


def _sigterm(ctx: Ctx):
    ctx.background = _start_long_run(ctx)
    ctx.background.send_signal(signal.SIGTERM)
    return "wait"


# --- read-only places -------------------------------------------------------------------
def _mount_read_only(ctx: Ctx, populated: bool) -> Path:
    src, ro = ctx.tmp / "ro_src", ctx.tmp / "ro"
    src.mkdir()
    ro.mkdir()
    if populated:
        shutil.copytree(ctx.stages / "stages", src / "stages")
    for cmd in (["mount", "--bind", str(src), str(ro)], ["mount", "-o", "remount,ro,bind", str(ro)]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            pytest.skip("cannot bind-mount a read-only folder here (needs root)")
    ctx.unmount = ro
    return ro


def _ro_cache(populated: bool):
    def prepare(ctx: Ctx):
        return [f"cache_dir={_mount_read_only(ctx, populated)}"]
    return prepare


def _ro_output(ctx: Ctx):
    return [f"hydra.run.dir={_mount_read_only(ctx, False) / 'outputs'}"]


CASES = [
    # values with no valid meaning
    Case("seed=-1", ["seed=-1"], names=("seed=-1", "e.g. seed=0")),
    Case("threads=-1", ["threads=-1"], names=("threads=-1", ">= 1")),
    Case("n_eval_prompts=0", ["task.n_eval_prompts=0"], names=("task.n_eval_prompts=0",)),
    Case("is_cap=-1", ["rollout.is_cap=-1"], names=("rollout.is_cap=-1.0",)),
    Case("horizon=0", ["regularizer.horizon=0"], names=("regularizer.horizon=0",)),
    Case("grad_clip=0", ["algo.grad_clip=0"], names=("algo.grad_clip=0.0", "never updates")),
    Case("grad_clip=-1", ["algo.grad_clip=-1"], names=("algo.grad_clip=-1.0", "ascends")),
    Case("max_new_tokens=100", ["rollout.max_new_tokens=100"], names=("rollout.max_new_tokens=100", "64 positions")),
    Case("heldout_frac=1.5", ["task.proxy.heldout_frac=1.5"], names=("task.proxy.heldout_frac=1.5", "[0, 1)")),
    Case("label_noise=1.5", ["task.pairs.label_noise=1.5"], names=("task.pairs.label_noise=1.5", "[0, 0.5]")),
    Case("samples_per_eval=-1", ["tracking.samples_per_eval=-1"], names=("tracking.samples_per_eval=-1",)),
    # combinations and keys nothing reads
    Case("dpo+entropy", ["algo=dpo", "regularizer=entropy", "temperature=0.5"],
         names=("regularizer=entropy: has no effect", "algo=dpo", "reads temperature")),
    Case("+foo=1", ["+foo=1"], names=("foo: not a config key",)),
    Case("k1-in-loss", ["regularizer.placement=loss", "regularizer.estimator=k1"], expect="warns",
         names=("zero-mean gradient", "regularizer.estimator=k2")),
    # stores
    Case("uri=foo://bar", ["tracking.uri=foo://bar"], names=("tracking.uri=foo://bar", "mlflow server")),
    Case("uri=unreachable", ["tracking.uri=http://127.0.0.1:9"],
         names=("tracking.uri=http://127.0.0.1:9", "Connection refused", "mlflow server")),
    # places
    Case("read-only cache (empty)", prepare=_ro_cache(False), names=("cache_dir=", "Read-only file system")),
    Case("read-only cache (populated)", prepare=_ro_cache(True), names=("cache_dir=", "Read-only file system")),
    Case("read-only output dir", prepare=_ro_output, names=("hydra.run.dir=", "read-only file system")),
    # broken state
    Case("truncated checkpoint", prepare=_truncated_checkpoint, expect="repaired", names=("corrupt checkpoint",),
         check=_check_truncated_checkpoint),
    Case("truncated stage weights", prepare=_truncated_stage_weights, expect="repaired",
         names=("model.safetensors has 5000 bytes",), check=_check_rebuilt("sft")),
    Case("stage without normalization.json", prepare=_missing_normalization, expect="repaired",
         names=("normalization.json is missing",), check=_check_rebuilt("proxy")),
    Case("store moved away", prepare=_store_moved, expect="repaired", names=("does not hold it",),
         check=_check_relogged),
    Case("second process (BUSY)", prepare=_busy, expect="busy", check=_check_busy),
    Case("SIGTERM", prepare=_sigterm, expect="killed"),
]


@pytest.fixture(scope="module")
def built_stages(tmp_path_factory) -> Path:
    """The smoke stages, built once for the module (copied by the cases that need them)."""
    tmp = tmp_path_factory.mktemp("stages")
    ctx = Ctx(tmp, tmp)
    run_launch([*ctx.args(), "steps=1", "eval_every=1", "checkpoint_every=1"], tmp, timeout=900)
    return ctx.cache


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input(case: Case, tmp_path, built_stages):
    ctx = Ctx(tmp_path, built_stages)
    try:
        extra = case.prepare(ctx) if case.prepare else None
        t0 = time.time()
        if extra == "wait":  # the process is already running: this case is about how it ends
            out, _ = ctx.background.communicate(timeout=300)
            proc = subprocess.CompletedProcess(ctx.background.args, ctx.background.returncode, out, out)
        else:
            proc = run_launch(ctx.args(*case.args, *(extra or [])), tmp_path, timeout=600, check=False)
        elapsed = time.time() - t0
    finally:
        if ctx.unmount is not None:
            subprocess.run(["umount", str(ctx.unmount)], check=False)
    out = proc.stdout + proc.stderr
    assert TRACEBACK not in proc.stderr, proc.stderr[-4000:]
    if case.expect == "error":
        assert proc.returncode != 0, out[-3000:]
        for needle in case.names:
            assert needle in proc.stderr, f"{needle!r} not in:\n{proc.stderr[-3000:]}"
        # one paragraph: the message is a single block of lines, nothing else on stderr
        blocks = [b for b in proc.stderr.strip().split("\n\n") if b.strip() and " INFO " not in b]
        assert len(blocks) == 1, proc.stderr
        assert not (ctx.cache / "stages").exists() or case.id.startswith("read-only")  # no compute happened
    elif case.expect == "killed":
        assert proc.returncode == 143 and "stopped: received SIGTERM" in out, out[-3000:]
        (run,) = mlflow_runs(ctx.uri)
        assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["failure_reason"]
    elif case.expect != "busy":  # repaired / warns: the run completes, having said what it did
        assert proc.returncode == 0, out[-4000:]
        for needle in case.names:
            assert needle in out, f"{needle!r} not in:\n{out[-3000:]}"
        assert [r.info.status for r in mlflow_runs(ctx.uri)] == ["FINISHED"]
    if case.check:
        case.check(ctx, proc)
    if case.id == "uri=unreachable":
        assert elapsed < 60, f"an unreachable store took {elapsed:.0f}s to fail"  # ~20 s measured
    # whatever happened, nothing is left RUNNING
    assert not [r for r in mlflow_runs(ctx.uri) if r.info.status == "RUNNING"]
