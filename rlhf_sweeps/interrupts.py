"""SIGTERM as an exception that never lands inside a store write.

`launch.py` turns SIGTERM (`kill`, `timeout`, scancel's first signal) into
`Terminated`, a SystemExit, so the run ends KILLED with its reason, as Ctrl-C
does. Python runs a signal handler between any two bytecodes, so a handler that
raised at once could land inside SQLite's INSERT: the interrupted connection then
keeps the database's write lock, and the next write, the run's own KILLED status
or another sweep member's metrics, waits on that lock until it gives up with
"database is locked" (seen: a SIGTERMed sweep member took its two siblings down
with it). `uninterrupted()` marks such a write: a SIGTERM that arrives inside it
is held, and raised the moment the write is over.

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
_held: Optional[str] = None  # the reason of a SIGTERM that arrived inside one


def raise_terminated(signum, frame) -> None:
    """SIGTERM handler (installed by launch.py): end the job through its normal KILLED path,
    after the store write in progress, if any."""
    global _held
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; a second must not cut the cleanup short
    reason = f"received {signal.Signals(signum).name} (kill, timeout or scancel)"
    if _depth:
        _held = reason
        return
    raise Terminated(reason)


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
            reason, _held = _held, None
            raise Terminated(reason)
