"""The model's side of `xvlm serve`: one thread answers jobs in arrival order; each job reports to the event loop.

The worker thread is the only code that calls the session. A job's events (text, done, failed) reach the event
loop through `PendingAnswer`, which also enforces the request's deadline and cancels the job when it passes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from xvlm_core.answers import Answer
from xvlm_core.errors import XvlmError
from xvlm_core.openai_compat.protocol import ApiError, ChatRequest, Completion
from xvlm_core.openai_compat.stops import StopMatcher
from xvlm_core.sampling import SamplingSettings

if TYPE_CHECKING:
    from xvlm_core.engines.pytorch.loading import LoadedModel

log = logging.getLogger("xvlm.serve")

SHUTDOWN_WAIT_S = 10.0


# --- The model side: the only code that calls the session ------------------------------------------------


class ModelRunner:
    """One chat session on the loaded model, shared by every request so that common prefixes reuse the cache."""

    def __init__(self, loaded: LoadedModel):
        from xvlm_core.engines.pytorch.session import ChatSession

        self.session = ChatSession(loaded)

    def answer(self, request: ChatRequest, cancel: threading.Event) -> Answer:
        """The session's answer to `request`. Raises XvlmError for a request it cannot answer."""
        settings = SamplingSettings(
            max_new_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p, seed=request.seed
        )
        return self.session.answer(request.messages, settings, system=request.system, cancel=cancel)


# --- The worker thread -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Done:
    completion: Completion
    stop_reason: str


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Delta | Done | Failed


@dataclass
class Job:
    request: ChatRequest
    deliver: Callable[[Event], None]  # called from the worker thread
    cancel: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)  # the worker has taken it


class Worker:
    """The thread that owns the model: takes jobs in arrival order, one at a time."""

    def __init__(self, answer: Callable[[ChatRequest, threading.Event], Answer],
                 max_waiting: int):
        self._answer = answer
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=max_waiting)
        self._current: Job | None = None
        self._thread = threading.Thread(target=self._run, name="xvlm-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued behind the one being answered."""
        return self._jobs.qsize()

    def submit(self, job: Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(
                429, f"The server is busy: {self._jobs.maxsize} requests are already waiting. Try again shortly.",
                code="queue_full", kind="rate_limit_error",
            ) from None

    def stop(self) -> None:
        """Cancel what runs and what waits, then end the thread."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.cancel.set()
        if self._current is not None:
            self._current.cancel.set()
        self._jobs.put(None)
        self._thread.join(SHUTDOWN_WAIT_S)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._current = job
            self._serve(job)
            self._current = None

    def _serve(self, job: Job) -> None:
        job.started.set()
        if job.cancel.is_set():  # its client left, or its time ran out, while it waited
            job.deliver(Failed(ApiError(499, "The request was cancelled before it started.", code="cancelled")))
            return
        stops = StopMatcher(job.request.stop)
        try:
            answer = self._answer(job.request, job.cancel)
            for delta in answer:
                shown = stops.push(delta)
                if shown:
                    job.deliver(Delta(shown))
                if stops.stopped:
                    job.cancel.set()  # the session stops after this token
            tail = stops.finish()
            if tail:
                job.deliver(Delta(tail))
            generated = answer.result.stats
        except XvlmError as exc:
            job.deliver(Failed(ApiError(400, str(exc))))
            return
        except Exception:  # the one catch-all at the worker's edge: the detail goes to the log, not the client
            log.exception("answering a request failed")
            job.deliver(Failed(ApiError(500, "The model failed to answer; the server log has the details.",
                                        kind="server_error", code="model_error")))
            return
        finish = "length" if generated.stop_reason == "length" and not stops.stopped else "stop"
        completion = Completion(stops.text, finish, generated.prompt_tokens, generated.output_tokens,
                                generated.reused_tokens)
        stop_reason = "stop_sequence" if stops.stopped else generated.stop_reason
        job.deliver(Done(completion, stop_reason))


class PendingAnswer:
    """The event loop's side of one job: what the worker reports, within the request's deadline."""

    def __init__(self, request: ChatRequest, deadline: float, timeout_s: float):
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self.job = Job(request, self._deliver)
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.outcome: Done | Failed | None = None

    def _deliver(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.job.cancel.set()

    async def next_event(self) -> Event:
        """The next event, or ApiError 503 once the deadline passes (the generation is then cancelled)."""
        try:
            event = await asyncio.wait_for(self._events.get(), max(self.deadline - time.monotonic(), 0.0))
        except TimeoutError:
            self.job.cancel.set()
            raise too_slow(self.timeout_s) from None
        if isinstance(event, Done | Failed):
            self.outcome = event
        return event

    async def settle(self) -> None:
        """Cancel the job; if the worker has taken it, wait (briefly) for its end, so the log line has its counts."""
        self.job.cancel.set()
        if not self.job.started.is_set():
            return  # the worker will skip it
        with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_WAIT_S):
            while self.outcome is None:
                event = await self._events.get()
                if isinstance(event, Done | Failed):
                    self.outcome = event


def too_slow(timeout_s: float) -> ApiError:
    """The error for a request that ran out of time: its generation is stopped."""
    return ApiError(
        503, f"The answer took longer than this server's limit of {timeout_s:g} s and was stopped. "
        "Ask for fewer tokens, or try again when the server is less busy.",
        code="timeout", kind="server_error",
    )
