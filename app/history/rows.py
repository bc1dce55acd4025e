"""Values read back from the history's database, checked: the file is outside input like any other.

A column may hold anything a tool or a damaged disk left there: text in a time column, JSON that is not JSON, a
role or status nobody writes. A bad value is replaced by a sane one and noted, so one damaged row changes how its
own chat looks, and the app still starts and every other chat still opens. Ids need no check as long as each
one handed out is read from an INTEGER PRIMARY KEY (`chats.id`, `messages.id`), which SQLite keeps an integer.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, TypeVar, get_args

from xvlm_core.messages import Role
from xvlm_core.model.prompt import clean_text

from app.history.records import AnswerStats, Status

T = TypeVar("T")

# Settings and stats take a few hundred characters; longer is not what the app wrote, and is not parsed.
MAX_JSON_CHARS = 64 * 1024
UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)
LATEST_TIME = datetime(9999, 12, 31, tzinfo=UTC).timestamp()  # beyond it datetime cannot hold the time
ROLES: tuple[Role, ...] = get_args(Role)
STORED_STATUSES = frozenset(Status) - {Status.WAITING}
# The stats the app reads (to show under an answer, to count what the model left out), by what they must be.
STAT_KINDS: dict[str, type] = {item.name: {"float": float, "int": int, "str": str}[item.type]
                               for item in fields(AnswerStats)}
SHOWN_CHARS = 40
MAX_STAT_CHARS = 2_000  # a stop reason or an error's sentence; longer is not what the app wrote


class RowCheck:
    """Checks the columns of the rows of one chat; `problems` says what was replaced, for the log and the notice."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.where = ""  # the row being read, when it is not the chat's own ("message 12")

    def bad(self, column: str, value: object, fallback: T) -> T:
        shown = repr(value)
        if len(shown) > SHOWN_CHARS:
            shown = shown[:SHOWN_CHARS] + "…"
        self.problems.append(f"{self.where} {column} {shown}".lstrip())
        return fallback

    def text(self, column: str, value: object) -> str:
        return value if isinstance(value, str) else self.bad(column, value, "")

    def time(self, column: str, value: object) -> datetime:
        # bool is not a time; NaN fails both comparisons.
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= LATEST_TIME:
            return datetime.fromtimestamp(value, UTC)
        return self.bad(column, value, UNKNOWN_TIME)

    def flag(self, column: str, value: object) -> bool:
        return bool(value) if value in (0, 1) and not isinstance(value, float) else self.bad(column, value, False)

    def json_object(self, column: str, value: object) -> dict[str, Any]:
        if isinstance(value, str) and len(value) <= MAX_JSON_CHARS:
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):  # not JSON; a number longer than Python reads; nested too deep
                decoded = None
            if isinstance(decoded, dict):
                return decoded
        return self.bad(column, value, {})

    def stats(self, value: object) -> AnswerStats:
        """An answer's stats, without the entries the app reads that are not what they must be."""
        stats = self.json_object("stats", value)
        for key, kind in STAT_KINDS.items():
            if key in stats and not _is_kind(stats[key], kind):
                self.bad(f"stats {key}", stats.pop(key), None)
        return AnswerStats.from_dict(stats)

    def role(self, value: object) -> Role | None:
        """The message's role; None (leave the message out) for any other: what it says cannot be placed."""
        return value if value in ROLES else self.bad("role", value, None)

    def status(self, value: object, role: Role) -> Status:
        if isinstance(value, str) and value in STORED_STATUSES:
            return Status(value)
        # An answer whose end is unknown is shown as cut off; a question is always complete.
        return self.bad("status", value, Status.INTERRUPTED if role == "assistant" else Status.COMPLETE)


def known_stats(stats: dict[str, Any]) -> AnswerStats:
    """Of an answer's stats from outside (an imported file), only those the app reads, each what it must be."""
    return AnswerStats.from_dict({key: value for key, value in stats.items()
                                  if key in STAT_KINDS and _is_kind(value, STAT_KINDS[key])
                                  and not (isinstance(value, str) and len(value) > MAX_STAT_CHARS)})


def _is_kind(value: object, kind: type) -> bool:
    if kind is str:
        return isinstance(value, str) and clean_text(value) == value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if kind is int:
        return isinstance(value, int) and value >= 0
    return math.isfinite(value) and value >= 0
