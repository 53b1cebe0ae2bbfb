"""SIGTERM as an exception that never lands inside a store write.

`launch.py` turns SIGTERM (`kill`, `timeout`, scancel's first signal) into
`Terminated`, a SystemExit, so the run ends KILLED with its reason, as Ctrl-C
does. Python runs a signal handler between any two bytecodes, so a handler that
raised at once could land inside SQLite's INSERT: the interrupted connection then
keeps the database's write lock, and the next write, the run's own KILLED status
or another sweep member's metrics, waits on that lock until it gives up with
"database is locked" (seen: a SIGTERMed sweep member took its two siblings down
with it). `uninterrupted()` marks such a write: a SIGTERM that arrives inside it
is held, and raised the moment the write is over. Ctrl-C (SIGINT) is held the
same way, except that a second Ctrl-C does not wait.

Torch-free, and below `tracking.py`, which marks every store call with it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator, Optional


class Terminated(SystemExit):
    """SIGTERM arrived (kill, timeout, scancel). A SystemExit, so the job's run ends KILLED
    (not FAILED) and an uncaught one exits quietly with status 143 (128 + SIGTERM)."""

    def __init__(self, reason: str):
        super().__init__(143)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


_depth = 0  # how many `uninterrupted()` blocks the main thread is inside
_held: Optional[BaseException] = None  # what a signal that arrived inside one will raise


def raise_terminated(signum, frame) -> None:
    """SIGTERM handler (installed by launch.py): end the job through its normal KILLED path,
    after the store write in progress, if any."""
    global _held
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; a second must not cut the cleanup short
    err = Terminated(f"received {signal.Signals(signum).name} (kill, timeout or scancel)")
    if _depth:
        _held = err
        return
    raise err


def raise_interrupt(signum, frame) -> None:
    """SIGINT handler (installed by launch.py): Python's KeyboardInterrupt, after the store write
    in progress; a second Ctrl-C while one is held does not wait."""
    global _held
    if _depth and _held is None:
        _held = KeyboardInterrupt()
        return
    raise KeyboardInterrupt


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold a SIGTERM that arrives inside the block until the block ends (signal handlers
    run in the main thread only, so other threads' blocks need no holding)."""
    global _depth, _held
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _held is not None:
            err, _held = _held, None
            raise err
