"""Stand-ins for the model: a real session slowed down, a fake one, a fake load; and a UI-thread heartbeat."""

from __future__ import annotations

import http.server
import json
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QElapsedTimer, QObject, QTimer
from serving import LoopbackServer


class SlowAnswer:
    """The core's answer, with a pause before each delta: a model slow enough to stop mid-answer.

    `on_delta()` is called as each delta is produced, on the thread producing it.
    """

    def __init__(self, answer, delay_s: float, on_delta: Callable[[], None] | None = None):
        self._answer, self._delay, self._on_delta = answer, delay_s, on_delta

    def __iter__(self):
        for delta in self._answer:
            time.sleep(self._delay)
            if self._on_delta is not None:
                self._on_delta()
            yield delta

    @property
    def result(self):
        return self._answer.result


class SlowSession:
    """Wraps a real ChatSession (same answers) but sleeps `delay_s` before each delta it yields."""

    def __init__(self, loaded, delay_s: float = 0.05, on_delta: Callable[[], None] | None = None):
        from xvlm_core.engines.pytorch.session import ChatSession

        self.session = ChatSession(loaded)
        self.delay_s = delay_s
        self.on_delta = on_delta
        self.calls: list[list] = []

    def answer(self, messages, settings, system, cancel):
        self.calls.append(list(messages))
        return SlowAnswer(self.session.answer(messages, settings, system=system, cancel=cancel), self.delay_s,
                          self.on_delta)

    def look_at(self, images, cancel=None, before=(), system=""):
        return self.session.look_at(images, cancel, before, system)


@dataclass
class FakeStats:
    values: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.values)


@dataclass
class FakeResult:
    text: str
    stats: FakeStats


class FakeAnswer:
    def __init__(self, deltas: list[str], delay_s: float, cancel: threading.Event):
        self.deltas, self.delay_s, self.cancel = deltas, delay_s, cancel
        self.result = FakeResult("", FakeStats({"output_tokens": 0, "stop_reason": "", "ttft_s": 0.01,
                                                "decode_tok_s": 0.0}))

    def __iter__(self):
        stats = self.result.stats.values
        stats["stop_reason"] = "length"
        for delta in self.deltas:
            if self.cancel.is_set():
                stats["stop_reason"] = "cancelled"
                break
            time.sleep(self.delay_s)
            self.result.text += delta
            stats["output_tokens"] += 1
            yield delta


class FakeSession:
    """Says `deltas`, one every `delay_s`; records the conversations it was given."""

    def __init__(self, deltas: list[str] | None = None, delay_s: float = 0.0):
        self.deltas = deltas or [f"word{i} " for i in range(20)]
        self.delay_s = delay_s
        self.calls: list[list] = []
        self.looked_at: list[tuple] = []  # the images read ahead of their question
        self.looked_after: list[tuple] = []  # the chat before each of them

    def answer(self, messages, settings, system, cancel):
        self.calls.append(list(messages))
        return FakeAnswer(self.deltas, self.delay_s, cancel)

    def look_at(self, images, cancel=None, before=(), system=""):
        self.looked_at.append(tuple(images))
        self.looked_after.append(tuple(before))
        return len(images)


class FakeLoaded:
    def __init__(self, name: str = "fake-model", quantize: str = "none", engine: str = "pytorch"):
        self.name, self.quantize, self.engine = name, quantize, engine

    def summary(self) -> dict:
        return {"name": self.name, "device": "cpu", "dtype": "float32", "quantize": self.quantize,
                "engine": self.engine, "memory_mb": 12.0,
                "load_s": 0.0, "can_see_images": True, "context_length": 4096}


def fake_load(delay_s: float = 0.0, error: Exception | None = None) -> Callable:
    def load(request, on_stage):
        on_stage("Loading the vision tower…")
        time.sleep(delay_s)
        on_stage("Loading the language model…")
        if error is not None:
            raise error
        engine = "llama.cpp" if request.options.engine == "llama.cpp" else "pytorch"  # "auto" too: no llama.cpp
        return FakeLoaded(request.options.model, request.options.quantize, engine)

    return load


class Heartbeat:
    """A timer on the UI thread that records the longest gap between its ticks: a blocked UI thread shows up."""

    def __init__(self, interval_ms: int = 5):
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.clock = QElapsedTimer()
        self.max_gap_ms = 0
        self.ticks = 0
        self.gaps: list[tuple[int, int]] = []  # (gap, ms since the start when it ended)
        self._since_start = QElapsedTimer()

    def _tick(self) -> None:
        self.ticks += 1
        gap = self.clock.restart()
        self.gaps.append((gap, self._since_start.elapsed()))
        self.max_gap_ms = max(self.max_gap_ms, gap)

    def __enter__(self) -> Heartbeat:
        self.clock.start()
        self._since_start.start()
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()


class _Sink(QObject):
    def __init__(self, calls: list):
        super().__init__()
        self.calls = calls

    def take(self, *args) -> None:
        self.calls.append(args)


class Recorder:
    """Records signals on the UI thread. (A lambda connected to a worker's signal would run on the worker's
    thread; a QObject's method is called through the UI thread's event queue, as the app's own slots are.)"""

    def __init__(self, source: QObject, *names: str):
        self.calls: dict[str, list] = {name: [] for name in names}
        self._sinks = []
        for name in names:
            sink = _Sink(self.calls[name])
            getattr(source, name).connect(sink.take)
            self._sinks.append(sink)

    def __getitem__(self, name: str) -> list:
        return self.calls[name]


class FakeKeyring(types.ModuleType):
    """A system keyring in memory, put in `sys.modules["keyring"]` by a test."""

    def __init__(self):
        super().__init__("keyring")
        self.saved: dict[tuple[str, str], str] = {}
        self.read_on: list[threading.Thread] = []  # the thread of each read

    def set_password(self, service: str, name: str, password: str) -> None:
        self.saved[service, name] = password

    def get_password(self, service: str, name: str) -> str | None:
        self.read_on.append(threading.current_thread())
        return self.saved.get((service, name))

    def delete_password(self, service: str, name: str) -> None:
        del self.saved[service, name]


class SilentServer(LoopbackServer):
    """An OpenAI-compatible server on 127.0.0.1 that lists one model, then takes a chat request and says nothing.

    `requests` counts the chat requests it holds, `lists` the model lists asked for; with `hold_lists` a list
    waits for `released` too. Leaving the `with` block lets them all go.
    """

    def __init__(self, hold_lists: bool = False):
        self.requests = self.lists = 0
        self.released = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.lists += 1
                if hold_lists:
                    server.released.wait(60)
                body = json.dumps({"object": "list", "data": [{"id": "silent-model", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                server.released.wait(60)

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def __exit__(self, *exc) -> None:
        self.released.set()
        super().__exit__(*exc)
