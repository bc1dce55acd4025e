"""What the widgets and the controller use of the history: one owner of every store call and its errors.

A failed call is logged and reported once through `failed(message)`; the caller gets None (or False) and the
chat goes on. Conditions that last (the history could not be opened, is read-only, was set aside, holds damaged
rows) are a `Notice` that the window shows for as long as the history is open. Import and export run their file work
off the UI thread, with progress and cancel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import QT_TRANSLATE_NOOP, QObject, Signal
from xvlm_core.errors import XvlmError
from xvlm_core.messages import ImageRef

from app.history import exchange
from app.history.database import ChatStore, default_store_path
from app.history.records import (
    AnswerStats,
    Chat,
    ChatSummary,
    FolderNotWritableError,
    SearchHit,
    Status,
    StoreError,
    StoreInUseError,
    TransferCancelled,
)
from app.i18n import translate

log = logging.getLogger(__name__)
T = TypeVar("T")

LAST_OPEN_CHAT = "last open chat"  # a place (see `remembered`): the chat on screen, reopened at the next launch
NOT_SAVED = QT_TRANSLATE_NOOP("History", "Chats in this window are not saved.")
DAMAGED_CHATS_SHOWN = 3


@dataclass(frozen=True)
class Notice:
    """A condition of the history a person must know about while the window is open."""

    text: str
    saving: bool  # whether chats are saved all the same (then the person may dismiss it)
    folder: Path  # where the history is (and a file set aside went)


class History(QObject):
    failed = Signal(str)  # a store call failed: a message for a person
    notice_changed = Signal()  # `notice` has something new to say

    def __init__(self, store: ChatStore | None = None, notice: Notice | None = None):
        super().__init__()
        self.store = store
        self._condition = notice
        if notice is None and store is not None and store.recovered_from is not None:
            self._condition = Notice(translate("History", "The chat history could not be read, so a new one was "
                                                          "started. The old file was kept as {path}.")
                                     .format(path=store.recovered_from), True, store.path.parent)
        # Where the history is, for a notice of damaged chats (there are none to find without a store).
        self._folder = store.path.parent if store is not None else Path()
        self._damaged: dict[int, list[str]] = {}  # chat id -> what was wrong in its rows

    @property
    def notice(self) -> Notice | None:
        """What the person must know about the history now: its condition, and the chats found damaged."""
        if not self._damaged:
            return self._condition
        shown = list(self._damaged.items())[:DAMAGED_CHATS_SHOWN]
        chats = [translate("History", "chat {id}: {problems}").format(id=chat_id, problems=", ".join(problems))
                 for chat_id, problems in shown]
        if len(self._damaged) > len(shown):
            chats.append(translate("History", "{count} more").format(count=len(self._damaged) - len(shown)))
        damage = translate("History", "Some entries of the chat history are damaged ({details}). Those chats are "
                                      "shown with what could be read; the other chats are not affected.") \
            .format(details="; ".join(chats))
        if self._condition is None:
            return Notice(damage, True, self._folder)
        return Notice(f"{self._condition.text} {damage}", self._condition.saving, self._condition.folder)

    @property
    def available(self) -> bool:
        """Whether there is a history to show (possibly read-only)."""
        return self.store is not None

    @property
    def writable(self) -> bool:
        return self.store is not None and not self.store.read_only

    # -- reading -------------------------------------------------------------------------------------------

    def list_chats(self) -> list[ChatSummary]:
        chats = self._read(lambda store: store.list_chats()) or []
        self._note_damage(chats)
        return chats

    def search(self, query: str) -> list[SearchHit]:
        return self._read(lambda store: store.search(query)) or []

    def load_chat(self, chat_id: int) -> Chat | None:
        chat = self._read(lambda store: store.load_chat(chat_id))
        if chat is not None:
            self._note_damage([chat])
        return chat

    def remembered(self, key: str) -> str:
        """A place kept with `remember` ("" when there is none)."""
        return self._read(lambda store: store.remembered(key)) or ""

    def last_open_chat(self) -> int | None:
        """The chat on screen when the app last closed, if it is still there (not deleted)."""
        value = self.remembered(LAST_OPEN_CHAT)
        if not value.isascii() or not value.isdigit():
            return None
        return next((chat.id for chat in self.list_chats() if chat.id == int(value)), None)

    def _note_damage(self, chats: Sequence[Chat | ChatSummary]) -> None:
        """Add what is newly found damaged to the notice (and the log), once per problem."""
        found = False
        for chat in chats:
            new = [problem for problem in chat.damage if problem not in self._damaged.get(chat.id, ())]
            if new:
                log.warning("chat %s of the history is damaged: %s", chat.id, "; ".join(new))
                self._damaged.setdefault(chat.id, []).extend(new)
                found = True
        if found:
            self.notice_changed.emit()

    # -- writing (nothing happens when the history is read-only or missing: the notice says so) ------------

    def create_chat(self, model: str) -> int | None:
        return self._write(lambda store: store.create_chat(model))

    def add_user_message(self, chat_id: int, text: str, images: Sequence[ImageRef | Path | bytes]) -> int | None:
        return self._write(lambda store: store.add_user_message(chat_id, text, images))

    def begin_answer(self, chat_id: int) -> int | None:
        return self._write(lambda store: store.begin_answer(chat_id))

    def update_streaming(self, message_id: int, text: str) -> None:
        self._write(lambda store: store.update_streaming(message_id, text))

    def finish_answer(self, message_id: int, text: str, status: Status, stats: AnswerStats) -> None:
        self._write(lambda store: store.finish_answer(message_id, text, status, stats))

    def truncate_after(self, message_id: int) -> None:
        self._write(lambda store: store.truncate_after(message_id))

    def begin_version(self, message_id: int) -> None:
        self._write(lambda store: store.begin_version(message_id))

    def show_version(self, message_id: int, index: int) -> None:
        self._write(lambda store: store.show_version(message_id, index))

    def rename_chat(self, chat_id: int, title: str) -> None:
        self._write(lambda store: store.rename_chat(chat_id, title))

    def set_pinned(self, chat_id: int, pinned: bool) -> None:
        self._write(lambda store: store.set_pinned(chat_id, pinned))

    def delete_chat(self, chat_id: int) -> bool:
        return self._write(lambda store: store.delete_chat(chat_id) or True) is True

    def restore_chat(self, chat_id: int) -> bool:
        return self._write(lambda store: store.restore_chat(chat_id) or True) is True

    def remember(self, key: str, value: str) -> None:
        """Keep a place (the chat open, a folder last used) for the next launch."""
        self._write(lambda store: store.remember(key, value))

    def prepare_image(self, source: Path) -> ImageRef:
        """Check an image and copy it into the history ahead of `add_user_message`; safe on any thread.

        Decoding a large photo and drawing its thumbnail is then done before the question is sent, not on the
        UI thread when it is; the reference returned (to the history's copy, when chats are saved) is what the
        message holds from then on, so the file is not read again. Raises ImageError, for the composer to show.
        """
        if self.writable:
            return self.store.images.store(source)
        return ImageRef.from_file(source)

    def close(self) -> None:
        """Purge the chats deleted this session (Undo ends here), write what is pending, close."""
        if self.store is None:
            return
        store, self.store = self.store, None
        try:
            if not store.read_only:
                store.purge_deleted()
        except (XvlmError, OSError) as exc:
            log.error("purging deleted chats: %s", exc)
        finally:
            try:
                store.close()
            except (XvlmError, OSError) as exc:
                log.error("closing the chat history: %s", exc)

    # -- files ---------------------------------------------------------------------------------------------

    async def export_chat(self, chat_id: int, folder: Path, kind: str, progress: exchange.Progress,
                          cancel: threading.Event) -> Path | None:
        """Write a chat as Markdown (`kind` "md") or JSON into `folder`; None when it failed or was cancelled.

        `progress(done, total)` is called on the UI thread.
        """
        chat = self.load_chat(chat_id)
        if chat is None:
            return None
        write = exchange.write_markdown if kind == "md" else exchange.write_json
        return await self._off_thread(QT_TRANSLATE_NOOP("History", "The chat could not be exported"),
                                      lambda report: write(chat, folder, report, cancel), progress)

    async def import_chat(self, path: Path, progress: exchange.Progress, cancel: threading.Event) -> int | None:
        """A new chat from a conversation file; None when it failed, was cancelled, or cannot be saved here."""
        if not self.writable:
            self.failed.emit(translate("History", "The chat could not be imported: the chat history is not being "
                                                  "saved in this window."))
            return None
        images = self.store.images
        chat = await self._off_thread(QT_TRANSLATE_NOOP("History", "The chat could not be imported"),
                                      lambda report: exchange.read_chat_file(path, images, report, cancel), progress)
        if chat is None or not self.writable:
            return None
        return self._write(lambda store: store.add_imported_chat(chat))

    async def _off_thread(self, failure: str, work: Callable[[exchange.Progress], T],
                          progress: exchange.Progress) -> T | None:
        loop = asyncio.get_running_loop()

        def report(done: int, total: int) -> None:  # on the worker thread
            loop.call_soon_threadsafe(progress, done, total)

        try:
            return await loop.run_in_executor(None, work, report)
        except TransferCancelled:
            return None
        except (XvlmError, OSError) as exc:
            self._report(failure, exc)
            return None

    # -- the one place store errors are caught -------------------------------------------------------------

    def _read(self, call: Callable[[ChatStore], T]) -> T | None:
        if self.store is None:
            return None
        try:
            return call(self.store)
        except (XvlmError, OSError) as exc:
            self._report(QT_TRANSLATE_NOOP("History", "The chat history could not be read"), exc)
            return None

    def _write(self, call: Callable[[ChatStore], T]) -> T | None:
        if not self.writable:
            return None
        try:
            return call(self.store)
        except (XvlmError, OSError) as exc:
            self._report(QT_TRANSLATE_NOOP("History", "The chat history could not be saved"), exc)
            return None

    def _report(self, what: str, error: Exception) -> None:
        """Log the detail; tell the person in one message (a StoreError's message already says it all).

        `what` is an English sentence marked for translation: the log keeps it in English."""
        log.exception(what)
        self.failed.emit(str(error) if isinstance(error, StoreError)
                         else translate("History", "{what}: {error}").format(what=translate("History", what),
                                                                             error=error))


def open_history(path: Path | None = None) -> History:
    """The history for this window, with what to tell the person about it.

    Another process writing it, or a data folder this one cannot write, opens it read-only; when it cannot be
    opened at all, the app runs without one. Either way the notice says that chats are not saved.
    """
    folder = (path or default_store_path()).parent
    try:
        return History(ChatStore(path))
    except StoreInUseError:
        log.warning("chat history in use by another process; opening it read-only")
        reason = translate("History", "Another XVLM Chat is using the chat history.")
    except FolderNotWritableError as exc:
        log.error("chat history folder not writable: %s", exc)
        reason = str(exc)
    except StoreError as exc:
        log.error("chat history unavailable: %s", exc)
        return History(None, Notice(f"{exc} {translate('History', NOT_SAVED)}", False, folder))
    try:
        return History(ChatStore(path, read_only=True),
                       Notice(translate("History", "{reason} This window shows the history read-only. {not_saved}")
                              .format(reason=reason, not_saved=translate("History", NOT_SAVED)), False, folder))
    except StoreError as exc:
        log.error("chat history not readable either: %s", exc)
        return History(None, Notice(f"{reason} {translate('History', NOT_SAVED)} ({exc})", False, folder))

