"""Work-arounds for bugs in the Qt binding, each detected at import and applied only where it is present."""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


class _Probe(QObject):
    fired = Signal()


def _emit_returns_a_borrowed_reference() -> bool:
    """PySide6 6.12.0's `SignalInstance.emit` returns True without owning a reference to it, so every
    Python-side emit takes one reference from True; on Python 3.11 (where True is not immortal) the
    interpreter aborts with "bool_dealloc" after some tens of thousands of signals, an hour of streaming."""
    probe = _Probe()
    before = sys.getrefcount(True)
    results = [probe.fired.emit() for _ in range(8)]
    lost = before - sys.getrefcount(True) + len(results)  # the list holds its references fairly
    for result in results[:lost] if lost > 0 else ():
        _incref(result)  # give back what the probe took
    return lost >= len(results)


_REPAY = _emit_returns_a_borrowed_reference()


def emit(signal: SignalInstance, *args: Any) -> None:
    """`signal.emit(*args)`, without the binding's reference leak (see above) where it has it."""
    result = signal.emit(*args)
    if _REPAY:
        _incref(result)
