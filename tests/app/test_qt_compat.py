"""The work-around for PySide6 6.12.0's signal emit, which returns True without owning a reference to it."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from app.qt_compat import emit


class Source(QObject):
    changed = Signal(int)


def test_emitting_a_signal_many_times_leaves_true_alone(qapp):
    source = Source()
    received: list[int] = []
    source.changed.connect(received.append)
    before = sys.getrefcount(True)
    for value in range(5000):
        emit(source.changed, value)
    assert len(received) == 5000
    assert abs(sys.getrefcount(True) - before) < 50  # unpatched, 6.12.0 takes 5000 references
