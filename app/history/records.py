"""What the history holds and hands out: chats (of xvlm_core's Message), search hits; and the errors it raises."""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from xvlm_core.errors import ConversationError, XvlmError
from xvlm_core.messages import Message, Role

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


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created: datetime
    updated: datetime
    model: str
    settings: dict[str, Any]
    pinned: bool
    messages: list[Message]  # images: the history's own copies, in the order they were attached
    damage: tuple[str, ...] = ()  # values of its rows that were not what the app writes, and were replaced
    # Every version Regenerate wrote of the last answer, in order, `messages[-1]` itself among them; () for one.
    versions: tuple[Message, ...] = ()


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
