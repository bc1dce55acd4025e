"""The conversation's state machine, without widgets: what is said, what the model is doing, what to ask it.

The model: no model -> loading -> ready (or failed). The conversation: a list of the history's `ChatMessage`, idle, or
one answer in flight, which is "waiting" while the model loads, then "streaming", then "complete", "stopped" or
"failed" (`Status`).
Opening another chat mid-answer leaves the answer running for its own chat, saved there as it streams; going
back to that chat shows it still going.
Regenerate keeps the answers it replaces: the last answer has `versions`, one of them shown (`version`), which is
the one the chat continues from; asking the next question leaves the others behind.
Widgets call the verbs (`send`, `stop`, `regenerate`, `show_version`, `edit`, `new_chat`, `load_model`) and redraw on
the signals; the worker is reached only through `load_requested` / `answer_requested`.
"""

from __future__ import annotations

import enum
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PySide6.QtCore import QObject, Signal
from xvlm_core.errors import Problem  # torch-free
from xvlm_core.messages import ImageRef, Message
from xvlm_core.sampling import SamplingSettings

from app.error_text import error_text
from app.history.records import AnswerStats, ChatMessage, Status, auto_title
from app.history.service import LAST_OPEN_CHAT, History
from app.i18n import translate
from app.model.worker import AnswerRequest, LoadRequest, LookRequest, ModelWorker
from app.settings import AppSettings, Settings


class ModelPhase(enum.Enum):
    NONE = "none"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"



# Regenerating at temperature 0 (greedy) would give the same answer word for word: it samples with these instead.
REGENERATE_TEMPERATURE = 0.7
REGENERATE_TOP_P = 0.9


def regenerate_sampling(settings: Settings) -> SamplingSettings:
    """The sampling for Regenerate: the one in Settings (as for every answer), with a new seed; at temperature 0,
    sampled at REGENERATE_TEMPERATURE and REGENERATE_TOP_P, so that the answer can differ. Normal answers stay
    greedy."""
    sampling = replace(settings.sampling(), seed=random.randrange(2**31))
    if sampling.greedy:
        sampling = replace(sampling, temperature=REGENERATE_TEMPERATURE, top_p=min(sampling.top_p, REGENERATE_TOP_P))
    return sampling


@dataclass
class BackgroundAnswer:
    """An answer still being written for a chat that is no longer on screen."""

    request: AnswerRequest
    message: ChatMessage
    chat_id: int
    title: str


class ChatController(QObject):
    model_phase_changed = Signal(object)  # ModelPhase
    load_stage_changed = Signal(str)
    model_loaded = Signal(dict)  # the model's summary: name, device, dtype, memory_mb, ...
    model_failed = Signal(object)  # Problem, as the worker gave it
    conversation_replaced = Signal()  # a new chat, or messages removed: draw everything again
    message_added = Signal(int)  # index into `messages`
    message_changed = Signal(int)  # text grew, or status changed
    busy_changed = Signal(bool)  # an answer is in flight (waiting or streaming)
    chat_changed = Signal()  # another chat is shown, or this one was saved for the first time or retitled
    answer_left_running = Signal(str)  # another chat was opened mid-answer: the answer goes on for (title)
    background_answer_finished = Signal(int, str, str)  # chat id, title, status: an answer left running ended

    load_requested = Signal(object)  # LoadRequest, to the worker's thread
    answer_requested = Signal(object)  # AnswerRequest, to the worker's thread
    look_requested = Signal(object)  # LookRequest, to the worker's thread

    def __init__(self, settings: AppSettings, history: History | None = None):
        super().__init__()
        self._settings = settings
        self.history = history if history is not None else History()
        self.chat_id: int | None = None  # in the store; None until the first question of a new chat
        self.chat_title = ""  # as the person renamed it; "" = made from the first question
        self.messages: list[ChatMessage] = []
        # Every version Regenerate wrote of the last answer, in order, `messages[-1]` itself at `version`; [] for one.
        self.versions: list[ChatMessage] = []
        self.version = 0
        self.phase = ModelPhase.NONE
        self.load_stage = ""
        self.model_summary: dict = {}
        self.model_error = ""
        self._request_ids = itertools.count(1)
        self._active: AnswerRequest | None = None
        # Answers going on for chats no longer shown, by request id: they are saved as they stream and when done.
        self._background: dict[int, BackgroundAnswer] = {}
        self._sampling: SamplingSettings | None = None  # the answer's own sampling (Regenerate), else the settings'
        self._look: LookRequest | None = None  # the images attached now, being read ahead of their question

    def connect_worker(self, worker: ModelWorker) -> None:
        """Requests go out as queued signals; the cancel event is set directly (see app/model/worker.py)."""
        self.load_requested.connect(worker.load)
        self.answer_requested.connect(worker.generate)
        self.look_requested.connect(worker.look_at)
        worker.stage_changed.connect(self._on_stage)
        worker.loaded.connect(self._on_loaded)
        worker.load_failed.connect(self.fail_load)
        worker.chunk_ready.connect(self._on_chunk)
        worker.answer_finished.connect(self._on_finished)
        worker.answer_failed.connect(self._on_failed)

    # -- state people ask about --------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings.current

    @property
    def busy(self) -> bool:
        return bool(self.messages) and self.messages[-1].in_flight

    @property
    def title(self) -> str:
        """The chat's name: as renamed, else made from its first question the way the store makes it."""
        first = next((message.text for message in self.messages if message.role == "user"), "")
        return self.chat_title or auto_title(first) or translate("ChatController", "New chat")

    @property
    def answering_elsewhere(self) -> set[int]:
        """The chats, not on screen, whose answer is still being written."""
        return {answer.chat_id for answer in self._background.values()}

    def latest_images(self) -> tuple[ImageRef, ...]:
        """The images of the latest question that had any: what a chat continued elsewhere is about."""
        return next((message.images for message in reversed(self.messages) if message.images), ())

    def rename(self, title: str) -> None:
        self.chat_title = " ".join(title.split())
        if self.chat_id is not None:
            chat_id, new_title = self.chat_id, self.chat_title
            self.history.rename_chat(chat_id, new_title)
        self.chat_changed.emit()

    # -- verbs ---------------------------------------------------------------------------------------------

    def load_model(self, request: LoadRequest) -> None:
        """Load (or reload) in the background; answers in flight are stopped first, a question waits."""
        for answer in [self._active, *(running.request for running in self._background.values())]:
            if answer is not None:
                answer.cancel.set()
        self.model_summary, self.model_error = {}, ""
        self._set_phase(ModelPhase.LOADING)
        self.load_requested.emit(request)

    def look_ahead(self, images: Sequence[ImageRef]) -> None:
        """Another image is ready in the message being written: the model reads them all now, while the question
        is typed, so that its answer starts with the prompt (the model thread skips those it has read). A model
        still loading reads them with the answer."""
        if self._look is not None:
            self._look.cancel.set()  # what it had not read yet is in the new request
        # While an answer streams, the chat it would follow is not known yet: the images are only encoded.
        before = None if self.busy else self._model_messages(self.messages)
        self._look = (
            LookRequest(tuple(images), before, self.settings.system_prompt)
            if images and self.phase is ModelPhase.READY else None
        )
        if self._look is not None:
            self.look_requested.emit(self._look)

    def send(self, text: str, images: Sequence[ImageRef] = ()) -> bool:
        """Ask a question about `images` (in order); False (and nothing happens) while another answer is in
        flight or it is empty."""
        text = text.strip()
        if self.busy or not (text or images):
            return False
        message = ChatMessage("user", text, tuple(images))
        self.versions, self.version = [], 0  # the chat goes on from the answer shown
        # Saved before anything is asked: a crash while answering loses no question.
        new_chat = self.chat_id is None
        if new_chat:
            self.chat_id = self.history.create_chat(self.settings_model())
        if self.chat_id is not None:
            message.id = self.history.add_user_message(self.chat_id, text, message.images)
        self.messages.append(message)
        self.message_added.emit(len(self.messages) - 1)
        if new_chat and self.chat_id is not None:
            self._remember_chat()
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
            self._finish(message, Status.STOPPED)

    def regenerate(self) -> bool:
        """Answer the last question again. The answer shown is kept as one of its versions (unless it has no text,
        nothing to go back to); the new one is the last version, and shown."""
        if self.busy or not self.messages or self.messages[-1].role != "assistant":
            return False
        answer = self.messages[-1]
        earlier = [replace(version) if version is answer else version for version in self.versions or [answer]
                   if version is not answer or answer.text]
        if answer.id is not None:
            self.history.begin_version(answer.id)
        answer.text, answer.status, answer.stats = "", Status.WAITING, AnswerStats()
        self.versions, self.version = ([*earlier, answer] if earlier else []), len(earlier)
        self.message_changed.emit(len(self.messages) - 1)
        self._request_answer(regenerate_sampling(self.settings))
        return True

    def show_version(self, index: int) -> bool:
        """Show the last answer's version at `index` instead of the one shown; the chat continues from it."""
        if self.busy or not 0 <= index < len(self.versions) or index == self.version:
            return False
        answer, chosen = self.messages[-1], self.versions[index]
        if answer.id is not None:
            self.history.show_version(answer.id, index)
        if answer.text:
            self.versions[self.version] = replace(answer)
        else:  # an answer with no text (one that failed at once) is nothing to come back to
            del self.versions[self.version]
            index -= index > self.version
        answer.text, answer.status, answer.stats = chosen.text, chosen.status, chosen.stats
        self.versions[index], self.version = answer, index
        if len(self.versions) == 1:
            self.versions, self.version = [], 0
        self.message_changed.emit(len(self.messages) - 1)
        return True

    def edit(self, index: int, text: str, images: Sequence[ImageRef]) -> bool:
        """Replace the user message at `index` and everything after it, and ask again."""
        if self.busy or not 0 <= index < len(self.messages) or self.messages[index].role != "user":
            return False
        if not (text.strip() or images):
            return False
        if index == 0 and self.chat_id is not None:
            # The store cannot drop a chat's first message: the edited conversation becomes a new chat.
            old_chat = self.chat_id
            self.chat_id, self.chat_title = None, ""
            self.history.delete_chat(old_chat)
        else:
            self._truncate_store_after(index - 1)
        del self.messages[index:]
        self.versions, self.version = [], 0
        self.conversation_replaced.emit()
        return self.send(text, images)

    def new_chat(self) -> None:
        """Leave this chat (an answer in flight goes on for it, see `_leave_chat`); the next question starts
        another."""
        self._leave_chat()
        self.chat_id, self.chat_title = None, ""
        self.messages, self.versions, self.version = [], [], 0
        self._remember_chat()
        self.conversation_replaced.emit()
        self.chat_changed.emit()
        self.busy_changed.emit(False)

    def open_chat(self, chat_id: int) -> None:
        """Show a saved chat; the next question continues it."""
        chat = self.history.load_chat(chat_id)
        if chat is None:
            return
        self._leave_chat()
        self.chat_id, self.chat_title = chat.id, chat.title
        self.messages = chat.messages
        self.versions = list(chat.versions)
        self.version = next((index for index, version in enumerate(self.versions) if version is self.messages[-1]), 0)
        self._remember_chat()
        for message in self.messages:
            # An answer another window is still writing (this one reads the history read-only) shows as it stands.
            if message.status is Status.STREAMING:
                message.status = Status.INTERRUPTED
        # Back to a chat whose answer is still being written: show it going on, as it was.
        running = next((answer for answer in self._background.values() if answer.chat_id == chat.id), None)
        if running is not None and self.messages and self.messages[-1].id == running.message.id:
            del self._background[running.request.request_id]
            self.messages[-1], self._active = running.message, running.request
            if self.versions:
                self.versions[self.version] = running.message
        self.conversation_replaced.emit()
        self.chat_changed.emit()
        self.busy_changed.emit(self.busy)

    def reopen_last_chat(self) -> None:
        """At launch: the chat that was on screen when the app last closed, if it is still there."""
        chat_id = self.history.last_open_chat()
        if chat_id is not None:
            self.open_chat(chat_id)

    def _remember_chat(self) -> None:
        self.history.remember(LAST_OPEN_CHAT, "" if self.chat_id is None else str(self.chat_id))

    def _leave_chat(self) -> None:
        """Another chat is about to be shown. An answer being written goes on for its own chat and is saved there,
        as in other chat apps; one still waiting for the model (nothing asked yet), or one that cannot be saved,
        is stopped."""
        if self.busy:
            message = self.messages[-1]
            if self._active is not None and self.chat_id is not None and message.id is not None:
                self._background[self._active.request_id] = BackgroundAnswer(self._active, message, self.chat_id,
                                                                             self.title)
                self.answer_left_running.emit(self.title)  # before the next chat is shown: the list marks it
            else:
                if self._active is not None:
                    self._active.cancel.set()
                message.status = Status.STOPPED
                self._save_finished(message)
        self._active = None

    def close(self) -> None:
        """The app is closing: stop every answer being written and save each as it stands."""
        running = [(self._active, self.messages[-1])] if self.busy else []
        running += [(answer.request, answer.message) for answer in self._background.values()]
        for request, message in running:
            if request is not None:
                request.cancel.set()
            message.status = Status.STOPPED
            self._save_finished(message)
        self._active = None
        self._background.clear()

    # -- saving --------------------------------------------------------------------------------------------

    def _truncate_store_after(self, index: int) -> None:
        """Drop from the store every message after `messages[index]` (the messages list is cut by the caller)."""
        if index >= 0 and self.messages[index].id is not None:
            self.history.truncate_after(self.messages[index].id)

    def _save_finished(self, message: ChatMessage) -> None:
        if message.id is not None:
            self.history.finish_answer(message.id, message.text, message.status, message.stats)

    # -- the answer's life ---------------------------------------------------------------------------------

    def _begin_answer(self) -> None:
        """Ask for the next answer, with the chat's settings, once the model is ready."""
        answer = ChatMessage("assistant", status=Status.WAITING)
        if self.chat_id is not None:
            answer.id = self.history.begin_answer(self.chat_id)
        self.messages.append(answer)
        self.message_added.emit(len(self.messages) - 1)
        self._request_answer()

    def _request_answer(self, sampling: SamplingSettings | None = None) -> None:
        """Write the last message, an answer waiting, with `sampling` (default: the chat's settings)."""
        self._sampling = sampling
        self.busy_changed.emit(True)
        if self.phase is ModelPhase.READY:
            self._ask()
        elif self.phase is ModelPhase.FAILED:
            self._finish(self.messages[-1], Status.FAILED, self._no_model_message())

    @staticmethod
    def _model_messages(messages: Sequence[ChatMessage]) -> tuple[Message, ...]:
        """The core's frozen messages, which the worker's thread reads while this one goes on changing its own."""
        return tuple(
            message.message for message in messages
            if message.role == "user" or message.text  # an answer that failed before any text is left out
        )

    def _ask(self) -> None:
        answer = self.messages[-1]
        self._active = AnswerRequest(
            request_id=next(self._request_ids), messages=self._model_messages(self.messages[:-1]),
            sampling=self._sampling or self.settings.sampling(), system=self.settings.system_prompt,
        )
        answer.status = Status.STREAMING
        self.message_changed.emit(len(self.messages) - 1)
        self.answer_requested.emit(self._active)

    def _finish(self, message: ChatMessage, status: Status, error: str = "", code: str = "") -> None:
        _end(message, status, error, code)
        self._save_finished(message)
        self._active = None
        # by identity: unsaved messages (id None) with the same text and stats compare equal
        self.message_changed.emit(next(index for index, other in enumerate(self.messages) if other is message))
        self.busy_changed.emit(False)

    def _current(self, request_id: int) -> ChatMessage | None:
        """The message a worker signal is about, or None for an answer that was replaced meanwhile."""
        if self._active is None or self._active.request_id != request_id:
            return None
        return self.messages[-1]

    def _on_chunk(self, request_id: int, text: str) -> None:
        background = self._background.get(request_id)
        message = background.message if background is not None else self._current(request_id)
        if message is not None:
            message.text += text
            if message.id is not None:
                self.history.update_streaming(message.id, message.text)
            if background is None:
                self.message_changed.emit(len(self.messages) - 1)

    def _on_finished(self, request_id: int, text: str, stats: dict) -> None:
        background = self._background.pop(request_id, None)
        message = background.message if background is not None else self._current(request_id)
        if message is None:
            return
        message.text, message.stats = text, AnswerStats.from_dict(stats)
        if "memory_mb" in stats and self.model_summary:
            self.model_summary["memory_mb"] = stats["memory_mb"]
        status = Status.STOPPED if message.stats.stop_reason == "cancelled" else Status.COMPLETE
        if background is not None:
            self._finish_background(background, status)
        else:
            self._finish(message, status)

    def _on_failed(self, request_id: int, problem: Problem) -> None:
        """The answer failed: it keeps the problem's code and details, worded when shown (app/error_text.py)."""
        error, code = problem.details, problem.code.value
        background = self._background.pop(request_id, None)
        if background is not None:
            self._finish_background(background, Status.FAILED, error, code)
            return
        message = self._current(request_id)
        if message is not None:
            self._finish(message, Status.FAILED, error, code)

    def _finish_background(self, answer: BackgroundAnswer, status: Status, error: str = "", code: str = "") -> None:
        _end(answer.message, status, error, code)
        self._save_finished(answer.message)
        self.background_answer_finished.emit(answer.chat_id, answer.title, status)

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
        if self.busy and self.messages[-1].status is Status.WAITING:
            self._ask()

    def fail_load(self, problem: Problem) -> None:
        """The model could not be loaded (or even looked for): say why, and fail a question waiting for it.
        `model_failed` carries the problem; the answer's line says it in the window's words (app/error_text.py)."""
        self.model_error, self.load_stage = error_text(problem).sentence(), ""
        self._set_phase(ModelPhase.FAILED)
        self.model_failed.emit(problem)
        if self.busy and self._active is None:
            self._finish(self.messages[-1], Status.FAILED, self._no_model_message())

    def _no_model_message(self) -> str:
        return translate("ChatController", "No model is loaded, so there is no answer. {reason}").format(
            reason=self.model_error).strip()



def _end(message: ChatMessage, status: Status, error: str = "", code: str = "") -> None:
    """An answer's last status; a failed one keeps its reason in its stats, as the history does: a problem's
    details with its code, or (no code) a sentence for a person."""
    message.status = status
    if error:
        message.stats = replace(message.stats, error=error, error_code=code)
