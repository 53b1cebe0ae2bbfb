"""The cache every job shares: config hashes, one file lock, and stages built once.

Torch-free on purpose: `job.py` and `sweep.py` hash configs and take locks
before torch is imported, and a dry run never imports it.

A stage lives in `<cache_dir>/stages/<name>-<hash>/`, where the hash covers
exactly the config that determines it (plus STAGE_VERSION, bumped when the
code that builds a stage changes its output). Sweep members and later sweeps
reuse a stage whose config did not change. The embedded world's builders are
in `rlhf_sweeps/world/stages.py`; a real task's policy and normalization
stages in `rlhf_sweeps/tasks.py`.

Concurrency: jobs that need the same missing stage at the same moment take an
exclusive file lock; one builds, the others wait and then reuse it. A stage is
built in a temporary folder and renamed into place, so nobody ever reads a
half-written artifact. Every build appends a line to `<cache_dir>/builds.log`,
which is how tests count builds.

Verified on every use: the last file a build writes is `manifest.json`, the
size and SHA-256 of every other file of the stage. A stage that does not match
it (a truncated weights file, a deleted `normalization.json`, a folder from
before manifests) is rebuilt under the same lock, with a warning and a
`rebuilt (...)` line in `builds.log`; a job never loads it half-written. The
check reads every byte of the stage once per job start: milliseconds for the
embedded world, seconds for a billion-parameter checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

STAGE_VERSION = 1
DONE_FILE = "stage.json"
MANIFEST = "manifest.json"  # {relative path: {"bytes", "sha256"}} of every other file; written last


class Busy(RuntimeError):
    """`file_lock(..., wait=False)` found the lock held by another process."""


def config_hash(spec: Any) -> str:
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@contextmanager
def file_lock(path: Path, wait: bool = True):
    """Hold an exclusive lock on `path` (flock: it dies with its process, so a killed holder frees it).

    `wait=False` raises `Busy` at once instead of waiting for the holder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise Busy(str(path)) from None
    try:
        yield
    finally:
        lock.release()


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))


def stage_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete stage, or None if every file matches its manifest."""
    if not folder.exists():
        return "missing"
    try:
        files = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST} (an interrupted copy, or built before manifests)"
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{rel} has {path.stat().st_size} bytes, {want['bytes']} were written"
        if _sha256(path) != want["sha256"]:
            return f"{rel} does not match its checksum"
    return None


def ensure_stage(cache_dir: str | Path, name: str, spec: dict, build: Callable[[Path], dict]) -> Path:
    """Return the folder of stage `name` for `spec`, building it once if missing or broken.

    `build(tmp_dir)` writes the stage into `tmp_dir` and returns metadata.
    """
    cache_dir = Path(cache_dir)
    spec = {"version": STAGE_VERSION, **spec}
    final = cache_dir / "stages" / f"{name}-{config_hash(spec)}"
    if stage_problem(final) is None:
        return final
    with file_lock(cache_dir / "stages" / f".{final.name}.lock"):
        problem = stage_problem(final)
        if problem is None:  # another job built it while we waited
            return final
        if problem != "missing":
            print(f"[rlhf-sweeps] warning: stage {final} is broken ({problem}): rebuilding it", file=sys.stderr,
                  flush=True)
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # builders killed mid-build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        t0 = time.time()
        meta = build(tmp)
        meta = {"stage": name, "spec": spec, "build_seconds": round(time.time() - t0, 1), **meta}
        (tmp / DONE_FILE).write_text(json.dumps(meta, indent=2, default=str))
        write_manifest(tmp)  # last: a stage without it is incomplete
        shutil.rmtree(final, ignore_errors=True)  # the broken folder
        os.replace(tmp, final)
        why = "" if problem == "missing" else f" rebuilt ({problem})"
        with open(cache_dir / "builds.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {final.name} pid={os.getpid()} "
                     f"host={socket.gethostname()}{why}\n")
        if problem != "missing":
            print(f"[rlhf-sweeps] stage {final.name} rebuilt", file=sys.stderr, flush=True)
    return final


def stage_meta(folder: Path) -> dict:
    return json.loads((folder / DONE_FILE).read_text())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: row {i} is not valid JSON ({e}); fix or delete that line") from e
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}: row {i} lacks column(s) {missing}; every row needs {list(required)}")
            rows.append(row)
    return rows
