"""What the history holds and hands out: chats of `ChatMessage`s, search hits; and the errors it raises."""

from __future__ import annotations

import enum
import html
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from xvlm_core.errors import ConversationError, XvlmError
from xvlm_core.messages import ImageRef, Message, Role

TITLE_LENGTH = 60


class StoreError(XvlmError):
    """The chat history could not be opened, read or written; the message says why."""


class ReadOnlyStoreError(StoreError):
    """A change was asked of a store opened read-only."""


class StoreInUseError(StoreError):
    """Another process holds the chat history open for writing."""


class FolderNotWritableError(StoreError):
    """The data folder cannot be written (permissions, a read-only disk); the history may still be read."""


class NewerHistoryError(StoreError):
    """The history was written by a newer version of the app, whose schema this one does not know."""


class ConversationFileError(StoreError, ConversationError):
    """A conversation file to import is unreadable or not in the expected shape."""


class TransferCancelled(Exception):
    """An import or export was cancelled by the person; nothing of it was saved."""


class Status(enum.StrEnum):
    """How far a message has got. User messages are always complete."""

    WAITING = "waiting"  # asked while the model loads; never stored
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"  # the app stopped (a crash, a kill) while the answer streamed
    FAILED = "failed"

    @property
    def in_flight(self) -> bool:
        return self in (Status.WAITING, Status.STREAMING)


@dataclass(frozen=True)
class AnswerStats:
    """What an answer cost and how it ended, as the window shows it and the history stores it (a JSON object).

    The core's `GenerationStats` plus the memory in use after it, and the error's sentence for a failed answer.
    Times in seconds; values read from a file are checked before they get here (`rows.py`).
    """

    image_encode_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    decode_tok_s: float = 0.0
    memory_mb: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    output_tokens: int = 0
    images_encoded: int = 0
    dropped_messages: int = 0
    stop_reason: str = ""  # "eos", "stop_string", "length", "cancelled"
    # A failed answer's problem: its code (a Remedy value) and the model stack's details, worded when shown, in the
    # language of the moment (app/error_text.failure_text). Without a code, `error` is a sentence as it was shown
    # (no model loaded; chats saved before codes were kept).
    error: str = ""
    error_code: str = ""

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AnswerStats:
        """The known entries of `values`, which must already be of the right kinds (`rows.known_stats`)."""
        return cls(**{item.name: values[item.name] for item in fields(cls) if item.name in values})

    def as_dict(self) -> dict[str, Any]:
        """The entries that say something: what is stored and exported."""
        return {name: value for name, value in asdict(self).items() if value not in (0, 0.0, "")}


@dataclass
class ChatMessage:
    """A message as the history keeps it and the window shows it: the core's fields, plus its id in the history,
    how far it got and what it cost. It lives on the UI thread; the model thread is handed `.message`, frozen."""

    role: Role
    text: str = ""
    images: tuple[ImageRef, ...] = ()
    status: Status = Status.COMPLETE
    stats: AnswerStats = field(default_factory=AnswerStats)
    id: int | None = None  # the history's id, once saved

    def __post_init__(self) -> None:
        self.images = tuple(self.images)

    @property
    def message(self) -> Message:
        return Message(self.role, self.text, self.images)

    @property
    def in_flight(self) -> bool:
        return self.status.in_flight


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created: datetime
    updated: datetime
    model: str
    pinned: bool
    messages: list[ChatMessage]  # images: the history's own copies, in the order they were attached
    damage: tuple[str, ...] = ()  # values of its rows that were not what the app writes, and were replaced
    # Every version Regenerate wrote of the last answer, in order, `messages[-1]` itself among them; () for one.
    versions: tuple[ChatMessage, ...] = ()


@dataclass(frozen=True)
class ImportedChat:
    """A chat read from a file, its images already in the history's folder: what `add_imported_chat` writes."""

    messages: list[ChatMessage]
    versions: tuple[ChatMessage, ...] = ()  # as Chat.versions: of the last answer, in order, itself among them


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str
    created: datetime
    updated: datetime
    pinned: bool
    message_count: int
    thumbnail: Path | None  # of the chat's first image
    damage: tuple[str, ...] = ()  # values of its row that were not what the app writes, and were replaced


@dataclass(frozen=True)
class SearchHit:
    chat_id: int
    message_id: int
    chat_title: str
    role: Role
    snippet: str  # plain text, one line
    highlights: tuple[tuple[int, int], ...]  # [start, end) ranges of `snippet` that match the query
    version: int | None = None  # an answer's other version that matched: its index in `Chat.versions`

    def snippet_html(self, before: str = "<b>", after: str = "</b>") -> str:
        """The snippet as HTML with each match between `before` and `after`, everything else escaped."""
        parts, done = [], 0
        for start, end in self.highlights:
            parts += [html.escape(self.snippet[done:start]), before, html.escape(self.snippet[start:end]), after]
            done = end
        parts.append(html.escape(self.snippet[done:]))
        return "".join(parts)


def auto_title(question: str) -> str:
    """A chat title from its first question: the first non-empty line, cut to about 60 characters at a word."""
    line = next((" ".join(line.split()) for line in question.splitlines() if line.strip()), "")
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[:TITLE_LENGTH + 1].rfind(" ")
    # Text without spaces (Chinese, a long URL) is cut at the length itself.
    head = line[:cut] if cut > TITLE_LENGTH // 2 else line[:TITLE_LENGTH]
    return head.rstrip(" ,.;:-") + "…"
