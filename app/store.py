"""Chat history: one SQLite file with a folder of images beside it; crash-safe, searchable, exportable.

One process writes: the writer holds a lock file beside the database, and any other process opens the store
read-only. A store object is not thread-safe; use it from one thread (the UI thread).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import os
import re
import sqlite3
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Literal

import platformdirs
from PIL import Image
from xvlm_core.errors import ConversationError, XvlmError
from xvlm_core.images import FORMAT_SUFFIXES, open_image, read_image_bytes, to_rgb
from xvlm_core.prompt import read_conversation

from app import APP_NAME
from app.instance_lock import InstanceLock

SQLITE_HEADER = b"SQLite format 3\x00"
FINISHED_STATUSES = ("complete", "stopped", "interrupted", "failed")
STREAM_WRITE_INTERVAL_S = 1.0
TITLE_LENGTH = 60
THUMBNAIL_SIDE = 256
SNIPPET_CHARS = 160

Role = Literal["user", "assistant"]
Status = Literal["complete", "stopped", "interrupted", "failed", "streaming"]

# Each step takes the schema from version N to N + 1, in one transaction. A released step never changes:
# databases written by earlier versions of the app replay the steps they miss.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: chats, their messages, and images shared by content
        """CREATE TABLE chats (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            created REAL NOT NULL,
            updated REAL NOT NULL,
            model TEXT NOT NULL DEFAULT '',
            settings TEXT NOT NULL DEFAULT '{}',
            pinned INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'stopped', 'interrupted', 'failed', 'streaming')),
            stats TEXT NOT NULL DEFAULT '{}',
            created REAL NOT NULL,
            UNIQUE (chat_id, position)
        )""",
        """CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            file TEXT NOT NULL,
            thumbnail TEXT NOT NULL
        )""",
        """CREATE TABLE attachments (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            sha256 TEXT NOT NULL REFERENCES images(sha256),
            PRIMARY KEY (message_id, position)
        )""",
        "CREATE INDEX attachments_by_image ON attachments(sha256)",
    ),
    (  # 2: undoable delete; full-text search over messages
        "ALTER TABLE chats ADD COLUMN deleted_at REAL",
        # trigram: substring search that works for languages written without spaces (Chinese, Japanese).
        """CREATE VIRTUAL TABLE messages_fts USING fts5(
            text, content='messages', content_rowid='id', tokenize='trigram')""",
        """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
        """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
        END""",
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(XvlmError):
    """The chat history could not be opened, read or written; the message says why."""


class ReadOnlyStoreError(StoreError):
    """A change was asked of a store opened read-only."""


class StoreInUseError(StoreError):
    """Another process holds the chat history open for writing."""


class ConversationFileError(StoreError, ConversationError):
    """A conversation file to import is unreadable or not in the expected shape."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    role: Role
    text: str
    status: Status
    stats: dict[str, Any]
    created: datetime
    images: list[Path]  # the stored copies, in the order they were attached
    thumbnails: list[Path]  # one per image, same order


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created: datetime
    updated: datetime
    model: str
    settings: dict[str, Any]
    pinned: bool
    messages: list[StoredMessage]


@dataclass(frozen=True)
class ChatSummary:
    id: int
    title: str
    created: datetime
    updated: datetime
    pinned: bool
    message_count: int
    thumbnail: Path | None  # of the chat's first image


@dataclass(frozen=True)
class SearchHit:
    chat_id: int
    message_id: int
    chat_title: str
    role: Role
    snippet: str  # plain text, one line
    highlights: tuple[tuple[int, int], ...]  # [start, end) ranges of `snippet` that match the query

    def snippet_html(self) -> str:
        """The snippet as HTML with the matches in <b>, everything else escaped."""
        parts, done = [], 0
        for start, end in self.highlights:
            parts += [html.escape(self.snippet[done:start]), "<b>", html.escape(self.snippet[start:end]), "</b>"]
            done = end
        parts.append(html.escape(self.snippet[done:]))
        return "".join(parts)


@dataclass(frozen=True)
class _ImageFiles:
    sha256: str
    file: str  # names inside the images folder
    thumbnail: str


class _DamagedDatabase(Exception):
    """The database file is not a database, or fails its integrity check."""


def default_store_path() -> Path:
    """Where chats live: the platform's user data folder for the app."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "chats.sqlite3"


class ChatStore:
    """Chats, their messages and images; the one place chat history is kept.

    `recovered_from` is set when the database was unreadable at start-up: the old file was moved there and
    an empty history started, so the UI can tell the user where the old file is.
    """

    def __init__(self, path: Path | None = None, read_only: bool = False, *,
                 stream_write_interval: float = STREAM_WRITE_INTERVAL_S):
        self.path = Path(path) if path is not None else default_store_path()
        self.images_dir = self.path.parent / "images"
        self.read_only = read_only
        self.recovered_from: Path | None = None
        self._stream_write_interval = stream_write_interval
        self._pending: dict[int, str] = {}  # message id -> streamed text not yet written
        self._last_stream_write = float("-inf")
        self._lock = InstanceLock(self.path.with_name(self.path.name + ".lock"))
        self._db: sqlite3.Connection | None = None
        if read_only:
            self._db = self._open_reader()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._lock.acquire():
                raise StoreInUseError(
                    f"Another XVLM Chat window is using the chat history in {self.path.parent}. "
                    "Close it first, or open the history read-only."
                )
            self._db = self._open_writer()
        except OSError as exc:
            self._lock.release()
            raise StoreError(f"Could not open the chat history in {self.path.parent}: {exc.strerror or exc}.") from exc
        except BaseException:
            self._lock.release()
            raise

    # --- opening -----------------------------------------------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        if not _could_be_sqlite(self.path):
            # Opening it would make SQLite delete the -wal beside it, which may hold the last changes: keep both.
            self.recovered_from = self._move_aside()
            return self._connect_fresh()
        try:
            return self._connect_and_migrate()
        except _DamagedDatabase:
            self.recovered_from = self._move_aside()
            return self._connect_fresh()

    def _connect_fresh(self) -> sqlite3.Connection:
        try:
            return self._connect_and_migrate()
        except _DamagedDatabase as exc:
            raise StoreError(f"A new chat history at {self.path} could not be started: {exc}.") from exc

    def _connect_and_migrate(self) -> sqlite3.Connection:
        db = self._connect(self.path.absolute().as_uri())
        try:
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"The chat history at {self.path} cannot use write-ahead logging (mode {mode}).")
            # In WAL mode NORMAL survives a crash of the app (not of the machine) and keeps streaming writes cheap.
            db.execute("PRAGMA synchronous = NORMAL")
            self._check_integrity(db)
            version = self._schema_version(db)
            for step in range(version, SCHEMA_VERSION):
                with _transaction(db):
                    for statement in _MIGRATIONS[step]:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {step + 1}")
            with _transaction(db):
                # Only this process writes, so an answer still streaming was cut off when the app last stopped.
                db.execute("UPDATE messages SET status = 'interrupted' WHERE status = 'streaming'")
        except sqlite3.DatabaseError as exc:
            db.close()
            if _is_damage(exc):
                raise _DamagedDatabase(str(exc)) from exc
            raise StoreError(f"Could not open the chat history at {self.path}: {exc}.") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _open_reader(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(f"There is no chat history at {self.path} yet.")
        if not _could_be_sqlite(self.path):
            raise StoreError(f"The chat history at {self.path} cannot be read: it is not a database.")
        db = self._connect(self.path.absolute().as_uri() + "?mode=ro")
        try:
            db.execute("PRAGMA foreign_keys = ON")
            self._check_integrity(db)
            if self._schema_version(db) != SCHEMA_VERSION:
                raise StoreError(
                    f"The chat history at {self.path} has not been updated for this version of XVLM Chat yet; "
                    "close the other XVLM Chat window and start this one again."
                )
        except (sqlite3.DatabaseError, _DamagedDatabase) as exc:
            db.close()
            raise StoreError(f"The chat history at {self.path} cannot be read: {exc}.") from exc
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, uri: str) -> sqlite3.Connection:
        try:
            # Autocommit at the driver level: every write goes through `_transaction`, which says BEGIN itself.
            return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        except sqlite3.Error as exc:
            raise StoreError(f"Could not open the chat history at {self.path}: {exc}.") from exc

    @staticmethod
    def _check_integrity(db: sqlite3.Connection) -> None:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _DamagedDatabase("; ".join(problems[:3]))

    def _schema_version(self, db: sqlite3.Connection) -> int:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The chat history at {self.path} was written by a newer version of XVLM Chat "
                f"(schema {version}; this version knows up to {SCHEMA_VERSION}). Update the app to open it."
            )
        return version

    def _move_aside(self) -> Path:
        """Rename the damaged database (with its -wal and -shm) to `NAME.corrupt-YYYYMMDD-HHMMSS`."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 2
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{counter}")
            counter += 1
        for suffix in ("", "-wal", "-shm", "-journal"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{target}{suffix}"))
        return target

    def close(self) -> None:
        """Write what is pending and close; the store cannot be used afterwards."""
        if self._db is None:
            return
        try:
            if not self.read_only:
                self.flush()
        finally:
            self._db.close()
            self._db = None
            self._lock.release()

    def __enter__(self) -> ChatStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- chats -------------------------------------------------------------------------------------------------

    def create_chat(self, model: str = "", settings: dict[str, Any] | None = None) -> int:
        """A new, empty chat; returns its id."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO chats (created, updated, model, settings) VALUES (?, ?, ?, ?)",
                (now, now, model, json.dumps(settings or {}, ensure_ascii=False)),
            )
        return cursor.lastrowid

    def list_chats(self) -> list[ChatSummary]:
        """Chats not deleted: pinned ones first, then the most recently active."""
        rows = self._read().execute(
            """SELECT c.id, c.title, c.created, c.updated, c.pinned,
                      (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id),
                      (SELECT i.thumbnail FROM messages m
                          JOIN attachments a ON a.message_id = m.id
                          JOIN images i ON i.sha256 = a.sha256
                       WHERE m.chat_id = c.id ORDER BY m.position, a.position LIMIT 1)
               FROM chats c WHERE c.deleted_at IS NULL
               ORDER BY c.pinned DESC, c.updated DESC, c.id DESC"""
        )
        return [
            ChatSummary(chat_id, title, _datetime(created), _datetime(updated), bool(pinned), count,
                        self.images_dir / thumbnail if thumbnail else None)
            for chat_id, title, created, updated, pinned, count, thumbnail in rows
        ]

    def load_chat(self, chat_id: int) -> Chat:
        """A chat with all its messages in order (a deleted chat too, until it is purged)."""
        db = self._read()
        row = db.execute(
            "SELECT title, created, updated, model, settings, pinned FROM chats WHERE id = ?", (chat_id,)
        ).fetchone()
        if row is None:
            raise StoreError(f"There is no chat {chat_id} in the history.")
        title, created, updated, model, settings, pinned = row
        images: dict[int, list[tuple[str, str]]] = {}
        for message_id, file, thumbnail in db.execute(
            """SELECT a.message_id, i.file, i.thumbnail FROM attachments a
               JOIN messages m ON m.id = a.message_id JOIN images i ON i.sha256 = a.sha256
               WHERE m.chat_id = ? ORDER BY a.message_id, a.position""",
            (chat_id,),
        ):
            images.setdefault(message_id, []).append((file, thumbnail))
        messages = [
            StoredMessage(
                message_id, role, self._pending.get(message_id, text), status, json.loads(stats), _datetime(at),
                [self.images_dir / file for file, _ in images.get(message_id, [])],
                [self.images_dir / thumbnail for _, thumbnail in images.get(message_id, [])],
            )
            for message_id, role, text, status, stats, at in db.execute(
                "SELECT id, role, text, status, stats, created FROM messages WHERE chat_id = ? ORDER BY position",
                (chat_id,),
            )
        ]
        return Chat(chat_id, title, _datetime(created), _datetime(updated), model, json.loads(settings),
                    bool(pinned), messages)

    def rename_chat(self, chat_id: int, title: str) -> None:
        with self._write() as db:
            self._require_chat(db, chat_id)
            db.execute("UPDATE chats SET title = ? WHERE id = ?", (" ".join(title.split()), chat_id))

    def set_pinned(self, chat_id: int, pinned: bool) -> None:
        with self._write() as db:
            self._require_chat(db, chat_id)
            db.execute("UPDATE chats SET pinned = ? WHERE id = ?", (int(pinned), chat_id))

    def delete_chat(self, chat_id: int) -> None:
        """Hide a chat from the list and search; `restore_chat` undoes it until `purge_deleted` runs."""
        with self._write() as db:
            self._require_chat(db, chat_id)
            db.execute("UPDATE chats SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", (time.time(), chat_id))

    def restore_chat(self, chat_id: int) -> None:
        with self._write() as db:
            self._require_chat(db, chat_id)
            db.execute("UPDATE chats SET deleted_at = NULL WHERE id = ?", (chat_id,))

    def purge_deleted(self, older_than: timedelta = timedelta(0)) -> int:
        """Remove for good the chats deleted at least `older_than` ago, and images no message uses any more.

        Returns how many chats were removed.
        """
        cutoff = time.time() - older_than.total_seconds()
        with self._write() as db:
            purged = db.execute(
                "DELETE FROM chats WHERE deleted_at IS NOT NULL AND deleted_at <= ?", (cutoff,)
            ).rowcount
            unused = "FROM images WHERE sha256 NOT IN (SELECT sha256 FROM attachments)"
            files = db.execute(f"SELECT file, thumbnail {unused}").fetchall()
            db.execute(f"DELETE {unused}")
        # Files go only after the rows are gone for good: a crash in between leaves files, never broken rows.
        for names in files:
            for name in names:
                (self.images_dir / name).unlink(missing_ok=True)
        return purged

    # --- messages ----------------------------------------------------------------------------------------------

    def add_user_message(self, chat_id: int, text: str, images: Sequence[Path | bytes] = ()) -> int:
        """Save a question with copies of its images (paths or encoded bytes); returns the message id.

        The first question of an untitled chat becomes its title. Raises ImageError, saving nothing,
        when an image cannot be used.
        """
        self._require_writable()  # before any image is copied in
        stored = [self._store_image(image) for image in images]
        with self._write() as db:
            title = self._require_chat(db, chat_id)
            message_id = self._insert_message(db, chat_id, "user", text, "complete", stored)
            if not title:
                db.execute("UPDATE chats SET title = ? WHERE id = ?", (auto_title(text), chat_id))
        return message_id

    def begin_answer(self, chat_id: int) -> int:
        """An empty assistant message marked streaming; returns its id."""
        with self._write() as db:
            self._require_chat(db, chat_id)
            return self._insert_message(db, chat_id, "assistant", "", "streaming", [])

    def update_streaming(self, message_id: int, text: str) -> None:
        """The answer so far. Cheap to call for every token: it is written at most once per interval.

        Call `flush` (or `finish_answer`) when streaming pauses or ends.
        """
        self._require_writable()
        self._pending[message_id] = text
        if time.monotonic() - self._last_stream_write >= self._stream_write_interval:
            self.flush()

    def flush(self) -> None:
        """Write the streamed text that `update_streaming` has not written yet."""
        if not self._pending:
            return
        with self._write() as db:
            db.executemany(
                "UPDATE messages SET text = ? WHERE id = ? AND status = 'streaming'",
                [(text, message_id) for message_id, text in self._pending.items()],
            )
        self._pending.clear()
        self._last_stream_write = time.monotonic()

    def finish_answer(self, message_id: int, text: str, status: Status = "complete",
                      stats: dict[str, Any] | None = None) -> None:
        """The final text of an answer, how it ended, and its timing stats (plain JSON values)."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        with self._write() as db:
            chat_id = self._require_message(db, message_id)
            db.execute(
                "UPDATE messages SET text = ?, status = ?, stats = ? WHERE id = ?",
                (text, status, json.dumps(stats or {}, ensure_ascii=False), message_id),
            )
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat_id))
        self._pending.pop(message_id, None)

    def edit_message(self, message_id: int, text: str) -> None:
        """Replace a message's text (its images stay); pair with `truncate_after` for edit-and-resend."""
        with self._write() as db:
            chat_id = self._require_message(db, message_id)
            db.execute("UPDATE messages SET text = ? WHERE id = ?", (text, message_id))
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat_id))
        self._pending.pop(message_id, None)

    def truncate_after(self, message_id: int) -> None:
        """Delete every message that comes after this one in its chat (to regenerate or resend from it)."""
        with self._write() as db:
            chat_id = self._require_message(db, message_id)
            db.execute(
                "DELETE FROM messages WHERE chat_id = ? AND position > (SELECT position FROM messages WHERE id = ?)",
                (chat_id, message_id),
            )

    # --- search ------------------------------------------------------------------------------------------------

    def search(self, query: str, limit: int = 50) -> list[SearchHit]:
        """Messages of chats not deleted that contain every word of `query` (case-insensitive), newest first.

        Any text is a valid query: words are matched literally, "quoted words" as one phrase.
        """
        terms = search_terms(query)
        if not terms:
            return []
        # The trigram index answers terms of three or more characters; shorter ones are checked with LIKE.
        conditions, parameters = ["c.deleted_at IS NULL"], []
        indexed = [term for term in terms if len(term) >= 3]
        if indexed:
            conditions.append("m.id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)")
            parameters.append(" ".join('"' + term.replace('"', '""') + '"' for term in indexed))
        for term in terms:
            if len(term) < 3:
                conditions.append("m.text LIKE ? ESCAPE '\\'")
                parameters.append("%" + re.sub(r"([\\%_])", r"\\\1", term) + "%")
        rows = self._read().execute(
            f"""SELECT m.chat_id, m.id, c.title, m.role, m.text FROM messages m JOIN chats c ON c.id = m.chat_id
                WHERE {" AND ".join(conditions)} ORDER BY m.created DESC, m.id DESC LIMIT ?""",
            (*parameters, max(0, limit)),
        )
        pattern = re.compile("|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True)), re.I)
        hits = []
        for chat_id, message_id, title, role, text in rows:
            snippet, highlights = _snippet(self._pending.get(message_id, text), pattern)
            hits.append(SearchHit(chat_id, message_id, title, role, snippet, highlights))
        return hits

    # --- export and import -------------------------------------------------------------------------------------

    def export_markdown(self, chat_id: int, folder: Path) -> Path:
        """Write the chat as `TITLE.md` in `folder`, its images in `TITLE_images/` linked relatively."""
        chat = self.load_chat(chat_id)
        target = _free_path(Path(folder), _file_stem(chat), ".md")
        links = self._export_images(chat, target)
        title = chat.title or f"Chat of {chat.created.astimezone():%Y-%m-%d %H:%M}"
        about = f"Exported from XVLM Chat on {datetime.now():%Y-%m-%d %H:%M}"
        if chat.model:
            about += f", model {chat.model}"
        lines = [f"# {title}", "", f"*{about}*", ""]
        for message in chat.messages:
            lines += ["## " + ("You" if message.role == "user" else "Assistant"), ""]
            for number, image in enumerate(message.images, 1):
                lines += [f"![image {number}]({urllib.parse.quote(links[image])})", ""]
            if message.text:
                lines += [message.text, ""]
            if message.status != "complete":
                lines += [f"*(answer {message.status})*", ""]
        _write_atomic(target, "\n".join(lines).encode("utf-8"), shared=True)
        return target

    def export_json(self, chat_id: int, folder: Path) -> Path:
        """Write the chat as `TITLE.json` for `xvlm ask --conversation`, images copied to `TITLE_images/`.

        The shape is `[{"role", "content", "images"?}]`; answers without any text are left out.
        """
        chat = self.load_chat(chat_id)
        target = _free_path(Path(folder), _file_stem(chat), ".json")
        links = self._export_images(chat, target)
        items: list[dict[str, Any]] = []
        for message in chat.messages:
            if message.role == "assistant" and not message.text:
                continue
            item: dict[str, Any] = {"role": message.role, "content": message.text}
            if message.images:
                item["images"] = [links[image] for image in message.images]
            items.append(item)
        _write_atomic(target, json.dumps(items, ensure_ascii=False, indent=2).encode("utf-8"), shared=True)
        return target

    def import_json(self, path: Path) -> int:
        """A new chat from a conversation file in the `export_json` shape; returns its id.

        The file is untrusted: anything unexpected raises ConversationFileError (or ImageError), saving nothing.
        """
        self._require_writable()
        path = Path(path)
        turns = _read_conversation(path)
        stored = [[self._store_image(image) for image in images] for _, _, images in turns]
        now = time.time()
        first_question = next((text for role, text, _ in turns if role == "user" and text.strip()), "")
        with self._write() as db:
            chat_id = db.execute(
                "INSERT INTO chats (title, created, updated) VALUES (?, ?, ?)", (auto_title(first_question), now, now)
            ).lastrowid
            for (role, text, _), images in zip(turns, stored, strict=True):
                self._insert_message(db, chat_id, role, text, "complete", images)
        return chat_id

    # --- internals ---------------------------------------------------------------------------------------------

    def _read(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("The chat history is closed.")
        return self._db

    def _require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(
                "The chat history is open read-only here because another XVLM Chat window is using it; "
                "changes can be made in that window."
            )
        self._read()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._require_writable()
        with _transaction(self._read()) as db:
            yield db

    @staticmethod
    def _require_chat(db: sqlite3.Connection, chat_id: int) -> str:
        """The chat's title; StoreError when there is no such chat."""
        row = db.execute("SELECT title FROM chats WHERE id = ?", (chat_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no chat {chat_id} in the history.")
        return row[0]

    @staticmethod
    def _require_message(db: sqlite3.Connection, message_id: int) -> int:
        """The message's chat id; StoreError when there is no such message."""
        row = db.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(f"There is no message {message_id} in the history.")
        return row[0]

    @staticmethod
    def _insert_message(db: sqlite3.Connection, chat_id: int, role: Role, text: str, status: Status,
                        images: list[_ImageFiles]) -> int:
        now = time.time()
        message_id = db.execute(
            """INSERT INTO messages (chat_id, position, role, text, status, created)
               VALUES (?, (SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE chat_id = ?), ?, ?, ?, ?)""",
            (chat_id, chat_id, role, text, status, now),
        ).lastrowid
        for position, image in enumerate(images):
            db.execute("INSERT OR IGNORE INTO images (sha256, file, thumbnail) VALUES (?, ?, ?)",
                       (image.sha256, image.file, image.thumbnail))
            db.execute("INSERT INTO attachments (message_id, position, sha256) VALUES (?, ?, ?)",
                       (message_id, position, image.sha256))
        db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
        return message_id

    def prepare_image(self, source: Path | bytes) -> None:
        """Check an image and copy it into the images folder ahead of `add_user_message`.

        Safe on any thread (files only, no database): decoding a large photo and drawing its thumbnail is
        then done before the question is sent, not on the UI thread when it is. Raises ImageError.
        """
        self._store_image(source)

    def _store_image(self, source: Path | bytes) -> _ImageFiles:
        """Copy an image into the images folder under its SHA-256, with a thumbnail; once per distinct image.

        Files only, named by content: the same image from two threads writes the same bytes, atomically.
        """
        name = "the pasted image" if isinstance(source, bytes) else str(source)
        data = source if isinstance(source, bytes) else read_image_bytes(Path(source))
        sha256 = hashlib.sha256(data).hexdigest()
        thumbnail_name = sha256 + ".thumb.jpg"
        copies = [path.name for path in self.images_dir.glob(sha256 + ".*") if path.name != thumbnail_name]
        if len(copies) == 1 and (self.images_dir / thumbnail_name).is_file():
            return _ImageFiles(sha256, copies[0], thumbnail_name)
        thumbnail, suffix = _thumbnail(data, name)
        files = _ImageFiles(sha256, sha256 + suffix, sha256 + ".thumb.jpg")
        _write_atomic(self.images_dir / files.file, data)
        _write_atomic(self.images_dir / files.thumbnail, thumbnail)
        return files

    def _export_images(self, chat: Chat, target: Path) -> dict[Path, str]:
        """Copy the chat's images to `STEM_images/` beside `target`; stored path -> link relative to `target`."""
        folder = target.with_name(target.stem + "_images")
        links: dict[Path, str] = {}
        for message in chat.messages:
            for image in message.images:
                if image in links:
                    continue
                try:
                    data = image.read_bytes()
                except OSError as exc:
                    raise StoreError(f"An image of this chat is missing from {self.images_dir}: {exc}.") from exc
                # The stored name is the content's hash, so one name never stands for two different images.
                name = image.stem[:16] + image.suffix
                _write_atomic(folder / name, data, shared=True)
                links[image] = f"{folder.name}/{name}"
        return links


# --- helpers that need no store ------------------------------------------------------------------------------------


def auto_title(question: str) -> str:
    """A chat title from its first question: the first non-empty line, cut to about 60 characters at a word."""
    line = next((" ".join(line.split()) for line in question.splitlines() if line.strip()), "")
    if len(line) <= TITLE_LENGTH:
        return line
    cut = line[:TITLE_LENGTH + 1].rfind(" ")
    # Text without spaces (Chinese, a long URL) is cut at the length itself.
    head = line[:cut] if cut > TITLE_LENGTH // 2 else line[:TITLE_LENGTH]
    return head.rstrip(" ,.;:-") + "…"


def search_terms(query: str) -> list[str]:
    """The words of a search query, "quoted text" kept as one term; nothing in it is syntax beyond quotes."""
    # Lone surrogates cannot be sent to SQLite, and FTS5 reads a NUL as the end of the query.
    query = query.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    terms = []
    for phrase, word in re.findall(r'"([^"]+)"|(\S+)', query[:1000]):
        term = " ".join(phrase.split()) if phrase else word
        if term and term not in terms:
            terms.append(term)
    return terms[:16]


def _snippet(text: str, pattern: re.Pattern[str]) -> tuple[str, tuple[tuple[int, int], ...]]:
    first = pattern.search(text)
    start = max(0, first.start() - SNIPPET_CHARS // 4) if first else 0
    if start:
        # Begin at a word where there is one close by.
        space = text.find(" ", start, first.start())
        start = space + 1 if 0 <= space < start + 15 else start
    end = min(len(text), start + SNIPPET_CHARS)
    prefix, suffix = ("…" if start else ""), ("…" if end < len(text) else "")
    window = re.sub(r"\s", " ", text[start:end])  # one line; same length, so offsets hold
    highlights = tuple((m.start() + len(prefix), m.end() + len(prefix)) for m in pattern.finditer(window))
    return prefix + window + suffix, highlights


def _thumbnail(data: bytes, name: str) -> tuple[bytes, str]:
    """Check untrusted image bytes; the JPEG thumbnail of the upright image, and the suffix to store it under."""
    image, image_format = open_image(data, name)
    image = to_rgb(image)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue(), FORMAT_SUFFIXES[image_format]


def _read_conversation(path: Path) -> list[tuple[Role, str, list[Path]]]:
    """Validate an untrusted conversation file: (role, text, image paths inside its folder) per turn."""
    try:
        messages = read_conversation(path)
    except ConversationError as exc:
        raise ConversationFileError(str(exc)) from None
    folder = path.parent.resolve()
    return [(message.role, message.text, [_image_inside(folder, name, f"{path}: message {index}")
                                          for name in message.images])
            for index, message in enumerate(messages, 1)]


def _image_inside(folder: Path, name: str, where: str) -> Path:
    """The file an imported image name stands for; it must be a relative path that stays inside `folder`."""
    if not name or "\x00" in name or PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise ConversationFileError(f"{where}: image {name!r} must be a path relative to the conversation file.")
    resolved = (folder / name).resolve()  # follows links, so a link pointing outside is caught too
    if not resolved.is_relative_to(folder):
        raise ConversationFileError(f"{where}: image {name!r} is outside the conversation's folder.")
    if not resolved.is_file():
        raise ConversationFileError(f"{where}: image {name!r} does not exist.")
    return resolved


def _file_stem(chat: Chat) -> str:
    """A file name for a chat's export, safe on every system: the title without characters that paths reserve."""
    stem = re.sub(r'[\x00-\x1f\x7f<>:"/\\|?*]', " ", chat.title)
    stem = " ".join(stem.split())[:80].strip(" .…")
    # Windows reserves these names with any extension.
    if not stem or re.fullmatch(r"(con|prn|aux|nul|com\d|lpt\d)", stem, re.I):
        stem = f"chat-{chat.id}"
    return stem


def _free_path(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem.suffix`, or `stem-2.suffix`... when that exists: an export never overwrites a file."""
    folder.mkdir(parents=True, exist_ok=True)
    candidate, counter = folder / f"{stem}{suffix}", 2
    while candidate.exists():
        candidate, counter = folder / f"{stem}-{counter}{suffix}", counter + 1
    return candidate


def _write_atomic(path: Path, data: bytes, shared: bool = False) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.

    `shared` files (exports) are readable by others like any saved document; copies in the data folder are private.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if shared:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails half-way for want of it.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _could_be_sqlite(path: Path) -> bool:
    """False when a file is there but does not start as an SQLite database does (an empty file is a new one)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return True
    return header in (b"", SQLITE_HEADER)


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
