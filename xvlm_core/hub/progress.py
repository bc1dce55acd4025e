"""Download progress for people: byte counts -> events with a smoothed speed and time left; sizes and durations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DownloadProgress:
    """Over all files: bytes on disk of the total, the file being fetched, speed (smoothed) and time left; or, with
    `retry_in_s`, a wait: the hub did not answer and is asked again in that many seconds."""

    done_bytes: int
    total_bytes: int
    current_file: str
    speed_bps: float
    eta_s: float | None
    retry_in_s: float | None = None


def waiting_to_retry(delay_s: float) -> DownloadProgress:
    """The event of a wait before the hub is asked again, while nothing is known of the bytes (the planning)."""
    return DownloadProgress(0, 0, "", 0.0, None, retry_in_s=delay_s)


def format_size(size: float) -> str:
    """Bytes for people, in decimal units as the hub shows them: '3.2 GB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 10 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def ignore_progress(progress: DownloadProgress) -> None:
    pass


class Meter:
    """Byte counts -> DownloadProgress events: speed smoothed over a few seconds, at most 20 events a second."""

    INTERVAL_S = 0.05
    SMOOTHING_S = 3.0
    WARMUP_S = 2.0  # no ETA before: the first seconds are small files and round trips, far slower than the rest

    def __init__(self, total: int, done: int, on_progress: Callable[[DownloadProgress], None],
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = done
        self.current = ""
        self._on_progress = on_progress
        self._clock = clock
        self._speed = self._average = self._weight = 0.0
        self._window = 0  # network bytes since the last speed sample
        self._started = self._sampled_at = self._emitted_at = clock()
        self._emit()

    def received(self, size: int, current: str) -> None:
        self.done += size
        self._window += size
        self.current = current
        if self._clock() - self._emitted_at >= self.INTERVAL_S:
            self._emit()

    def adjust(self, done_delta: int = 0, total_delta: int = 0) -> None:
        """Bytes that appeared or vanished without the network: discarded partials, skipped files."""
        self.done += done_delta
        self.total += total_delta

    def finish(self) -> None:
        self._emit()

    def retrying(self, delay_s: float) -> None:
        """The hub did not answer: the bytes so far, and the wait before it is asked again."""
        self._on_progress(DownloadProgress(self.done, self.total, self.current, 0.0, None, retry_in_s=delay_s))

    def _emit(self) -> None:
        now = self._clock()
        elapsed = now - self._sampled_at
        if elapsed > 0 and (self._window or elapsed >= self.INTERVAL_S):
            # An exponential average with its start-up bias divided out: the plain average over the first seconds,
            # then one that forgets the past within about SMOOTHING_S.
            weight = 1 - math.exp(-elapsed / self.SMOOTHING_S)
            self._average += weight * (self._window / elapsed - self._average)
            self._weight += weight * (1 - self._weight)
            self._speed = self._average / self._weight
            self._window, self._sampled_at = 0, now
        self._emitted_at = now
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            eta: float | None = 0.0
        elif self._speed > 0 and now - self._started >= self.WARMUP_S:
            eta = remaining / self._speed
        else:
            eta = None
        self._on_progress(DownloadProgress(self.done, self.total, self.current, self._speed, eta))
