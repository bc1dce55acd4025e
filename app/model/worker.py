"""The model's own thread: `ModelWorker` owns the model stack and turns what xvlm_core yields into signals.

Nothing else in the app touches the model. xvlm_core (and with it torch) is imported here lazily, on the
worker's thread, so the window shows before any of it is loaded.

Thread lifecycle, as `ModelThread` does it:
  - the worker is created on the UI thread, then `moveToThread(thread)`; `thread.finished` -> `worker.deleteLater`;
  - work arrives through queued signals connected to the slots `load`, `generate`, `list_devices`;
  - cancel is *not* a slot: the thread is busy generating, so the UI thread sets the answer's
    `threading.Event` directly (`AnswerRequest.cancel`, or `ModelWorker.cancel()`), and the core checks it
    once per token;
  - on window close: `cancel()`, `thread.quit()` (the event loop ends after the running slot returns),
    `thread.wait(timeout)`.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot
from xvlm_core.answers import AnsweringSession, LoadedEngine  # torch-free
from xvlm_core.errors import Cancelled, Problem, Remedy, problem_of  # torch-free
from xvlm_core.load_options import LoadOptions  # torch-free
from xvlm_core.messages import ImageRef, Message  # torch-free
from xvlm_core.sampling import SamplingSettings  # torch-free

from app.i18n import translate

log = logging.getLogger(__name__)

CHUNKS_PER_SECOND = 30
_IMPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadRequest:
    """Load a model here with `options`, or use one on a model server (`options.model` is then its name there)."""

    options: LoadOptions
    server: str = ""  # an OpenAI-compatible server's address
    api_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class AnswerRequest:
    """Answer the last of `messages` (the whole conversation). Set `cancel` from any thread to stop."""

    request_id: int
    messages: tuple[Message, ...]
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    system: str = ""  # "" = the prompt the model was trained with
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class LookRequest:
    """Read these images ahead of the question that will carry them, after `before` (the chat so far, as an
    AnswerRequest's messages; None while an answer is in flight). Set `cancel` when they are no longer wanted."""

    images: tuple[ImageRef, ...]
    before: tuple[Message, ...] | None = ()
    system: str = ""  # "" = the prompt the model was trained with
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


def import_core(module: str) -> Any:
    """Import an xvlm_core module, one thread at a time.

    transformers resolves its names lazily and not thread-safely: the model thread loading the model while
    another thread checks a dropped image (xvlm_core.model.vision) could otherwise fail with an ImportError.
    """
    with _IMPORT_LOCK:
        return importlib.import_module(module)


def _default_load(request: LoadRequest, on_stage: Callable[[str], None]) -> LoadedEngine:
    if request.server:
        from app.model.remote_model import connect

        return connect(request.server, request.api_key, request.options.model, on_stage)
    options = request.options.with_defaults()
    load_on_engine = import_core("xvlm_core.engines.choice").load_on_engine
    return load_on_engine(options.model, options.vision_tower or None, options.device, options.dtype, on_stage=on_stage,
                          quantize=options.quantize, engine=options.engine)


def _default_session(loaded: LoadedEngine) -> AnsweringSession:
    from app.model.remote_model import RemoteModel, RemoteSession

    if isinstance(loaded, RemoteModel):
        return RemoteSession(loaded)
    return import_core("xvlm_core.engines.pytorch.session").ChatSession(loaded)


class ModelWorker(QObject):
    """Loads the model and answers, one job at a time, on the thread it was moved to."""

    stage_changed = Signal(str)  # "Loading the vision tower…"
    loaded = Signal(dict)  # LoadedModel.summary()
    load_failed = Signal(object)  # Problem: what a person can do (its code), and what happened
    devices_found = Signal(list)  # [(value, label)]
    chunk_ready = Signal(int, str)  # request id, the text added since the last chunk
    answer_finished = Signal(int, str, dict)  # request id, the whole answer, stats (+ "memory_mb")
    answer_failed = Signal(int, object)  # request id, Problem

    def __init__(
        self,
        load: Callable[[LoadRequest, Callable[[str], None]], LoadedEngine] = _default_load,
        session_factory: Callable[[LoadedEngine], AnsweringSession] = _default_session,
        chunks_per_second: float = CHUNKS_PER_SECOND,
    ):
        super().__init__()
        self._load = load
        self._session_factory = session_factory
        self._chunk_interval = 1.0 / chunks_per_second
        self._loaded: LoadedEngine | None = None
        self._session: AnsweringSession | None = None
        self._current_cancel: threading.Event | None = None

    def cancel(self) -> None:
        """Stop the answer being generated; safe to call from any thread."""
        event = self._current_cancel
        if event is not None:
            event.set()

    @Slot(object)
    def load(self, request: LoadRequest) -> None:
        self._drop_model()  # free the old model's memory before the new one takes its own
        try:
            if request.server:  # the keyring is read here, off the UI thread: it may wait on the system
                from app.model.remote_model import server_key

                request = replace(request, api_key=server_key(request.server, request.api_key))
            loaded = self._load(request, self.stage_changed.emit)
            session = self._session_factory(loaded)
            summary = dict(loaded.summary())
        except Exception as exc:  # the worker's edge: everything below speaks in specific errors
            log.exception("loading %s failed", request.options.model)
            self.load_failed.emit(problem_of(exc))
            return
        self._loaded, self._session = loaded, session
        log.info("model loaded: %s", summary)
        self.loaded.emit(summary)

    @Slot(object)
    def generate(self, request: AnswerRequest) -> None:
        if self._session is None:
            self.answer_failed.emit(request.request_id,
                                    Problem(Remedy.NONE, translate("ModelWorker", "No model is loaded yet.")))
            return
        self._current_cancel = request.cancel
        try:
            text, stats = self._stream(request)
            stats["memory_mb"] = self._loaded.summary()["memory_mb"]
        except Exception as exc:  # the worker's edge
            log.exception("answer %d failed", request.request_id)
            self.answer_failed.emit(request.request_id, problem_of(exc))
        else:
            self.answer_finished.emit(request.request_id, text, stats)
        finally:
            self._current_cancel = None

    def _stream(self, request: AnswerRequest) -> tuple[str, dict]:
        """Drive the core's generator, batching its deltas into at most CHUNKS_PER_SECOND signals."""
        answer = self._session.answer(
            list(request.messages), request.sampling, system=_system_prompt(request.system), cancel=request.cancel
        )
        pending: list[str] = []
        last_emit = 0.0
        for delta in answer:
            pending.append(delta)
            now = time.monotonic()
            if now - last_emit >= self._chunk_interval:
                self.chunk_ready.emit(request.request_id, "".join(pending))
                pending.clear()
                last_emit = now
        if pending:
            self.chunk_ready.emit(request.request_id, "".join(pending))
        result = answer.result
        return result.text, dict(result.stats.as_dict())

    @Slot(object)
    def look_at(self, request: LookRequest) -> None:
        """Read images while their question is typed (encoded, and the chat up to them prefilled): its answer then
        starts with the question's own words. Queued like every job, so an answer asked for meanwhile waits for
        it, which costs nothing when it carries these images."""
        if self._session is None or request.cancel.is_set():
            return
        try:
            count = self._session.look_at(request.images, request.cancel, request.before,
                                          _system_prompt(request.system))
        except Cancelled:  # taken off, or another image came: a newer request reads what is attached now
            return
        except Exception:  # the worker's edge: the answer that carries them meets the same problem and says it
            log.warning("reading attached images ahead failed", exc_info=True)
            return
        if count:
            log.info("read %d attached image(s) ahead of the question", count)

    @Slot()
    def list_devices(self) -> None:
        try:
            devices = import_core("xvlm_core.engines.pytorch.device").available_devices()
        except Exception:  # the worker's edge: the settings dialog falls back to auto and CPU
            log.exception("listing devices failed")
            devices = []
        self.devices_found.emit(devices)

    def _drop_model(self) -> None:
        if self._loaded is not None:
            self._session = self._loaded = None
            gc.collect()


class ModelThread:
    """Runs a `ModelWorker` on a QThread of its own, with the lifecycle written in this module's docstring."""

    def __init__(self, worker: ModelWorker):
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName("model")
        worker.moveToThread(self.thread)
        self.thread.finished.connect(worker.deleteLater)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_ms: int = 5000) -> bool:
        """Cancel what runs, end the thread's loop and wait; False if it was still busy (a load) at the timeout."""
        self.worker.cancel()
        self.thread.quit()
        stopped = self.thread.wait(timeout_ms)
        if not stopped:
            log.warning("the model thread did not stop within %d ms", timeout_ms)
        return stopped


def _system_prompt(text: str) -> str:
    """A request's system prompt: "" is the one the model was trained with."""
    return text or import_core("xvlm_core.model.prompt").SYSTEM_V1
