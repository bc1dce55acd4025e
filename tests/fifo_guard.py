"""Calling code that might wait forever on a FIFO, so that a hang fails the test instead of blocking the run."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

# Long enough for a loaded machine to refuse the file; a hang on a FIFO lasts forever.
HANG_GUARD_S = 60


def outcome_without_hanging(call: Callable[[], object], fifos: list[Path]) -> tuple[object, BaseException | None]:
    """(what `call` returned, what it raised), run in a thread. Should it still wait after HANG_GUARD_S, a writer
    opens and closes each FIFO so that the thread ends, and the test fails."""
    outcome: list[tuple[object, BaseException | None]] = []

    def run() -> None:
        try:
            outcome.append((call(), None))
        except BaseException as exc:  # handed to the test, which judges it
            outcome.append((None, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(HANG_GUARD_S)
        pytest.fail(f"still waiting on {', '.join(map(str, fifos))} after {HANG_GUARD_S} s")
    return outcome[0]
