"""The conversation's state machine, without widgets: what is said, what the model is doing, what to ask it.

The model: no model -> loading -> ready (or failed). The conversation: idle, or one answer in flight,
which is "waiting" while the model loads, then "streaming", then "done", "stopped" or "failed".
Widgets call the verbs (`send`, `stop`, `regenerate`, `edit`, `new_chat`, `load_model`) and redraw on
the signals; the worker is reached only through `load_requested` / `answer_requested`.
"""

from __future__ import annotations

import enum
import itertools
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QObject, Signal
from xvlm_core.errors import XvlmError

from app.settings import Settings
from app.store import auto_title
from app.worker import AnswerRequest, LoadRequest, ModelWorker, Turn

if TYPE_CHECKING:
    from app.store import ChatStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelPhase(enum.Enum):
    NONE = "none"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


# Assistant message statuses; only "waiting" and "streaming" belong to an answer in flight.
WAITING, STREAMING, DONE, STOPPED, FAILED = "waiting", "streaming", "done", "stopped", "failed"
# How the store names them, and back ("interrupted": the app stopped while it streamed).
STORE_STATUS = {DONE: "complete", STOPPED: "stopped", FAILED: "failed"}
FROM_STORE_STATUS = {"complete": DONE, "stopped": STOPPED, "failed": FAILED, "interrupted": STOPPED,
                     "streaming": STOPPED}


@dataclass
class ChatMessage:
    role: str  # "user" or "assistant"
    text: str = ""
    image: str | None = None  # a path; user messages only
    status: str = DONE
    error: str = ""  # for status "failed": a message for a person
    stats: dict = field(default_factory=dict)
    message_id: int | None = None  # the store's id, once saved

    @property
    def in_flight(self) -> bool:
        return self.status in (WAITING, STREAMING)


class ChatController(QObject):
    model_phase_changed = Signal(object)  # ModelPhase
    load_stage_changed = Signal(str)
    model_loaded = Signal(dict)  # the model's summary: name, device, dtype, memory_mb, ...
    model_failed = Signal(str)
    conversation_replaced = Signal()  # a new chat, or messages removed: draw everything again
    message_added = Signal(int)  # index into `messages`
    message_changed = Signal(int)  # text grew, or status changed
    busy_changed = Signal(bool)  # an answer is in flight (waiting or streaming)
    chat_changed = Signal()  # another chat is shown, or this one was saved for the first time or retitled
    store_failed = Signal(str)  # the history could not be saved: a message for a person


    load_requested = Signal(object)  # LoadRequest, to the worker's thread
    answer_requested = Signal(object)  # AnswerRequest, to the worker's thread

    def __init__(self, settings: Settings, store: ChatStore | None = None):
        super().__init__()
        self.settings = settings
        self.store = store
        self.chat_id: int | None = None  # in the store; None until the first question of a new chat
        self.chat_title = ""  # as the person renamed it; "" = made from the first question
        self.messages: list[ChatMessage] = []
        self.phase = ModelPhase.NONE
        self.load_stage = ""
        self.model_summary: dict = {}
        self.model_error = ""
        self._request_ids = itertools.count(1)
        self._active: AnswerRequest | None = None

    def connect_worker(self, worker: ModelWorker) -> None:
        """Requests go out as queued signals; the cancel event is set directly (see app/worker.py)."""
        self.load_requested.connect(worker.load)
        self.answer_requested.connect(worker.generate)
        worker.stage_changed.connect(self._on_stage)
        worker.loaded.connect(self._on_loaded)
        worker.load_failed.connect(self._on_load_failed)
        worker.chunk_ready.connect(self._on_chunk)
        worker.answer_finished.connect(self._on_finished)
        worker.answer_failed.connect(self._on_failed)

    # -- state people ask about --------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self.messages) and self.messages[-1].in_flight

    @property
    def title(self) -> str:
        """The chat's name: as renamed, else made from its first question the way the store makes it."""
        first = next((message.text for message in self.messages if message.role == "user"), "")
        return self.chat_title or auto_title(first) or "New chat"

    def rename(self, title: str) -> None:
        self.chat_title = " ".join(title.split())
        if self.chat_id is not None:
            chat_id, new_title = self.chat_id, self.chat_title
            self._persist(lambda: self.store.rename_chat(chat_id, new_title))
        self.chat_changed.emit()

    # -- verbs ---------------------------------------------------------------------------------------------

    def load_model(self, request: LoadRequest) -> None:
        """Load (or reload) in the background; an answer in flight is stopped first, a question waits."""
        if self._active is not None:
            self._active.cancel.set()
        self.model_summary, self.model_error = {}, ""
        self._set_phase(ModelPhase.LOADING)
        self.load_requested.emit(request)

    def send(self, text: str, image: str | None = None) -> bool:
        """Ask a question; False (and nothing happens) while another answer is in flight or it is empty."""
        text = text.strip()
        if self.busy or not (text or image):
            return False
        message = ChatMessage("user", text, image)
        # Saved before anything is asked: a crash while answering loses no question.
        new_chat = self.chat_id is None
        if new_chat:
            sampling = asdict(self.settings.sampling())
            self.chat_id = self._persist(lambda: self.store.create_chat(self.settings_model(), sampling))
        if self.chat_id is not None:
            images = [Path(image)] if image else []
            message.message_id = self._persist(lambda: self.store.add_user_message(self.chat_id, text, images))
        self.messages.append(message)
        self.message_added.emit(len(self.messages) - 1)
        if new_chat and self.chat_id is not None:
            self.chat_changed.emit()
        self._begin_answer()
        return True

    def settings_model(self) -> str:
        return self.model_summary.get("name", "") or self.settings.model

    def stop(self) -> None:
        """Stop the answer in flight; the text so far stays, marked stopped."""
        if not self.busy:
            return
        message = self.messages[-1]
        if self._active is not None:
            self._active.cancel.set()  # the worker finishes the answer with stop_reason "cancelled"
        else:  # still waiting for the model: nothing was asked yet
            self._finish(message, STOPPED)

    def regenerate(self) -> bool:
        """Answer the last question again, replacing the last answer."""
        if self.busy or not self.messages or self.messages[-1].role != "assistant":
            return False
        self.messages.pop()
        self._truncate_store_after(len(self.messages) - 1)
        self.conversation_replaced.emit()
        self._begin_answer()
        return True

    def edit(self, index: int, text: str, image: str | None) -> bool:
        """Replace the user message at `index` and everything after it, and ask again."""
        if self.busy or not 0 <= index < len(self.messages) or self.messages[index].role != "user":
            return False
        if not (text.strip() or image):
            return False
        if index == 0 and self.store is not None and self.chat_id is not None:
            # The store cannot drop a chat's first message: the edited conversation becomes a new chat.
            old_chat = self.chat_id
            self.chat_id, self.chat_title = None, ""
            self._persist(lambda: self.store.delete_chat(old_chat))
        else:
            self._truncate_store_after(index - 1)
        del self.messages[index:]
        self.conversation_replaced.emit()
        return self.send(text, image)

    def new_chat(self) -> None:
        """Leave this chat (an answer in flight is stopped and saved as it is); the next question starts another."""
        self._abandon_answer()
        self.chat_id, self.chat_title = None, ""
        self.messages = []
        self.conversation_replaced.emit()
        self.chat_changed.emit()
        self.busy_changed.emit(False)

    def open_chat(self, chat_id: int) -> None:
        """Show a saved chat; the next question continues it."""
        if self.store is None:
            return
        chat = self._persist(lambda: self.store.load_chat(chat_id))
        if chat is None:
            return
        self._abandon_answer()
        self.chat_id, self.chat_title = chat.id, chat.title
        self.messages = [
            ChatMessage(stored.role, stored.text, str(stored.images[0]) if stored.images else None,
                        FROM_STORE_STATUS.get(stored.status, DONE) if stored.role == "assistant" else DONE,
                        stored.stats.get("error", ""), stored.stats, stored.id)
            for stored in chat.messages
        ]
        self.conversation_replaced.emit()
        self.chat_changed.emit()
        self.busy_changed.emit(False)

    def _abandon_answer(self) -> None:
        if self.busy:
            message = self.messages[-1]
            if self._active is not None:
                self._active.cancel.set()
            self._save_finished(message, STOPPED)
        self._active = None

    # -- saving --------------------------------------------------------------------------------------------

    def _persist(self, call: Callable[[], T]) -> T | None:
        """Run a store call; a failure is logged and reported, and the chat goes on unsaved."""
        if self.store is None or self.store.read_only:
            return None
        try:
            return call()
        except (XvlmError, OSError, sqlite3.Error) as exc:
            log.exception("saving the chat failed")
            self.store_failed.emit(f"The chat history could not be saved: {exc}")
            return None

    def _truncate_store_after(self, index: int) -> None:
        """Drop from the store every message after `messages[index]` (the messages list is cut by the caller)."""
        if index >= 0 and self.messages[index].message_id is not None:
            message_id = self.messages[index].message_id
            self._persist(lambda: self.store.truncate_after(message_id))

    def _save_finished(self, message: ChatMessage, status: str, error: str = "") -> None:
        if message.message_id is not None:
            stats: dict[str, Any] = {**message.stats, "error": error} if error else dict(message.stats)
            message_id, text = message.message_id, message.text
            self._persist(lambda: self.store.finish_answer(message_id, text, STORE_STATUS[status], stats))

    # -- the answer's life ---------------------------------------------------------------------------------

    def _begin_answer(self) -> None:
        answer = ChatMessage("assistant", status=WAITING)
        if self.chat_id is not None:
            answer.message_id = self._persist(lambda: self.store.begin_answer(self.chat_id))
        self.messages.append(answer)
        self.message_added.emit(len(self.messages) - 1)
        self.busy_changed.emit(True)
        if self.phase is ModelPhase.READY:
            self._ask()
        elif self.phase is ModelPhase.FAILED:
            self._finish(self.messages[-1], FAILED, self._no_model_message())

    def _ask(self) -> None:
        answer = self.messages[-1]
        turns = tuple(
            Turn(message.role, message.text, (message.image,) if message.image else ())
            for message in self.messages[:-1]
            if message.role == "user" or message.text  # an answer that failed before any text is left out
        )
        self._active = AnswerRequest(
            request_id=next(self._request_ids), turns=turns,
            sampling=self.settings.sampling(), system=self.settings.system_prompt,
        )
        answer.status = STREAMING
        self.message_changed.emit(len(self.messages) - 1)
        self.answer_requested.emit(self._active)

    def _finish(self, message: ChatMessage, status: str, error: str = "") -> None:
        message.status, message.error = status, error
        self._save_finished(message, status, error)
        self._active = None
        self.message_changed.emit(self.messages.index(message))
        self.busy_changed.emit(False)

    def _current(self, request_id: int) -> ChatMessage | None:
        """The message a worker signal is about, or None for an answer that was replaced meanwhile."""
        if self._active is None or self._active.request_id != request_id:
            return None
        return self.messages[-1]

    def _on_chunk(self, request_id: int, text: str) -> None:
        message = self._current(request_id)
        if message is not None:
            message.text += text
            if message.message_id is not None:
                message_id, so_far = message.message_id, message.text
                self._persist(lambda: self.store.update_streaming(message_id, so_far))
            self.message_changed.emit(len(self.messages) - 1)

    def _on_finished(self, request_id: int, text: str, stats: dict) -> None:
        message = self._current(request_id)
        if message is None:
            return
        message.text, message.stats = text, stats
        if "memory_mb" in stats and self.model_summary:
            self.model_summary["memory_mb"] = stats["memory_mb"]
        self._finish(message, STOPPED if stats.get("stop_reason") == "cancelled" else DONE)

    def _on_failed(self, request_id: int, error: str) -> None:
        message = self._current(request_id)
        if message is not None:
            self._finish(message, FAILED, error)

    # -- the model's life ----------------------------------------------------------------------------------

    def _set_phase(self, phase: ModelPhase) -> None:
        self.phase = phase
        self.model_phase_changed.emit(phase)

    def _on_stage(self, stage: str) -> None:
        self.load_stage = stage
        self.load_stage_changed.emit(stage)

    def _on_loaded(self, summary: dict) -> None:
        self.model_summary, self.load_stage = summary, ""
        self._set_phase(ModelPhase.READY)
        self.model_loaded.emit(summary)
        if self.busy and self.messages[-1].status == WAITING:
            self._ask()

    def _on_load_failed(self, error: str) -> None:
        self.model_error, self.load_stage = error, ""
        self._set_phase(ModelPhase.FAILED)
        self.model_failed.emit(error)
        if self.busy and self._active is None:
            self._finish(self.messages[-1], FAILED, self._no_model_message())

    def _no_model_message(self) -> str:
        return f"No model is loaded, so there is no answer. {self.model_error}".strip()
