"""The chat history's database: one SQLite file (WAL) with the images folder beside it; crash-safe, searchable.

One process writes: the writer holds a lock file beside the database, and any other process opens the store
read-only. A store object is not thread-safe; use it from one thread (the UI thread). Every failure leaves here
as a StoreError (or ImageError for an image that cannot be used), never as sqlite3's own errors.

The file is outside input like any other: every value read back is checked by `rows.RowCheck` (a bad one is
replaced and noted in the chat's `damage`), and every file name goes through `ImageFolder.path`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar

import filelock
import platformdirs
from xvlm_core.messages import ImageRef, Role
from xvlm_core.safepath import UnsafePathError

from app import APP_NAME
from app.history.image_files import ImageFolder, is_digest, names_image, thumbnail_name
from app.history.records import (
    AnswerStats,
    Chat,
    ChatMessage,
    ChatSummary,
    FolderNotWritableError,
    ImportedChat,
    NewerHistoryError,
    ReadOnlyStoreError,
    SearchHit,
    Status,
    StoreError,
    StoreInUseError,
    auto_title,
)
from app.history.rows import RowCheck
from app.i18n import translate

SQLITE_HEADER = b"SQLite format 3\x00"
STREAM_WRITE_INTERVAL_S = 1.0
LIKE = "LIKE ? ESCAPE '\\'"  # with _like_pattern: the term, literally
SNIPPET_CHARS = 160
MAX_PLACE_CHARS = 4096  # a remembered folder or chat id; longer is not what the app wrote
FINISHED_STATUSES = (Status.COMPLETE, Status.STOPPED, Status.INTERRUPTED, Status.FAILED)

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
            settings TEXT NOT NULL DEFAULT '{}',  -- written by schema 1 to 4 apps, never read; now '{}'
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
    (  # 3: where the person was (the chat open last, the folder a file dialog showed last), for the next launch
        "CREATE TABLE places (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (  # 4: the other versions of a regenerated answer; the message row holds the one shown, at `version`
        "ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE answer_versions (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            text TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL CHECK (status IN ('complete', 'stopped', 'interrupted', 'failed')),
            stats TEXT NOT NULL DEFAULT '{}',
            PRIMARY KEY (message_id, position)
        )""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
# What quick_check says of a value that breaks a column's constraint, as opposed to a broken file.
_VALUE_PROBLEM = re.compile(r"(NULL value in|CHECK constraint failed in) ")


class _DamagedDatabase(Exception):
    """The database file is not a database, or fails its integrity check."""


P = ParamSpec("P")
T = TypeVar("T")


def _translated(method: Callable[P, T]) -> Callable[P, T]:
    """A read of the database whose SQLite errors (a disk failing, a file changed underneath) become StoreError."""

    @functools.wraps(method)
    def read(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store = args[0]
            raise StoreError(translate("ChatStore", "The chat history at {path} could not be read: {reason}.")
                             .format(path=store.path, reason=_reason(exc))) from exc

    return read


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
        self.images = ImageFolder(self.path.parent / "images")
        self.read_only = read_only
        self.recovered_from: Path | None = None
        self._stream_write_interval = stream_write_interval
        self._pending: dict[int, str] = {}  # message id -> streamed text not yet written
        self._last_stream_write = float("-inf")
        # The lock lives on the open file: a crashed holder never leaves a stale lock behind.
        self._lock = filelock.FileLock(self.path.with_name(self.path.name + ".lock"), thread_local=False)
        self._db: sqlite3.Connection | None = None
        if read_only:
            self._db = self._open_reader()
            return
        try:
            if self.path.exists() and not self.path.is_file():
                raise StoreError(translate("ChatStore", "The chat history at {path} is not a file; move it away and "
                                                       "start the app again to begin a new history.")
                                 .format(path=self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._lock.acquire(timeout=0)
            except filelock.Timeout:
                raise StoreInUseError(translate(
                    "ChatStore", "Another XVLM Chat window is using the chat history in {folder}. Close it first, "
                                 "or open the history read-only.").format(folder=self.path.parent)) from None
            self._db = self._open_writer()
        except OSError as exc:
            self._lock.release()
            if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
                raise FolderNotWritableError(translate("ChatStore", "The folder {folder} cannot be written ({reason}).")
                                             .format(folder=self.path.parent, reason=exc.strerror or exc)) from exc
            raise StoreError(translate("ChatStore", "Could not open the chat history in {folder}: {reason}.")
                             .format(folder=self.path.parent, reason=exc.strerror or exc)) from exc
        except BaseException:
            self._lock.release()
            raise

    @property
    def images_dir(self) -> Path:
        return self.images.folder

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
            raise StoreError(translate("ChatStore", "A new chat history at {path} could not be started: {reason}.")
                             .format(path=self.path, reason=_reason(exc))) from exc

    def _connect_and_migrate(self) -> sqlite3.Connection:
        db = self._connect(self.path.absolute().as_uri())
        try:
            db.execute("PRAGMA foreign_keys = ON")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(translate("ChatStore", "The chat history at {path} cannot use write-ahead logging "
                                                       "(mode {mode}).").format(path=self.path, mode=mode))
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
            raise StoreError(translate("ChatStore", "Could not open the chat history at {path}: {reason}.")
                             .format(path=self.path, reason=_reason(exc))) from exc
        except BaseException:
            db.close()
            raise
        return db

    def _open_reader(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreError(translate("ChatStore", "There is no chat history at {path} yet.").format(path=self.path))
        if not _could_be_sqlite(self.path):
            raise StoreError(translate("ChatStore", "The chat history at {path} cannot be read: it is not a "
                                                   "database.").format(path=self.path))
        uri = self.path.absolute().as_uri() + "?mode=ro"
        if not os.access(self.path.parent, os.W_OK) and not Path(f"{self.path}-wal").exists():
            # Nobody can be writing it, and SQLite could not create the shared-memory file a reader of a WAL
            # database needs: read the file as it stands.
            uri += "&immutable=1"
        db = self._connect(uri)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            self._check_integrity(db)
            if self._schema_version(db) != SCHEMA_VERSION:
                raise StoreError(translate(
                    "ChatStore", "The chat history at {path} has not been updated for this version of XVLM Chat "
                                 "yet; close the other XVLM Chat window and start this one again.")
                    .format(path=self.path))
        except (sqlite3.DatabaseError, _DamagedDatabase) as exc:
            db.close()
            raise StoreError(translate("ChatStore", "The chat history at {path} cannot be read: {reason}.")
                             .format(path=self.path, reason=_reason(exc))) from exc
        except BaseException:
            db.close()
            raise
        return db

    def _connect(self, uri: str) -> sqlite3.Connection:
        try:
            # Autocommit at the driver level: every write goes through `_transaction`, which says BEGIN itself.
            db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
        except sqlite3.Error as exc:
            raise StoreError(translate("ChatStore", "Could not open the chat history at {path}: {reason}.")
                             .format(path=self.path, reason=_reason(exc))) from exc
        # Bytes that are not UTF-8 in one text cell would otherwise fail every read of its table.
        db.text_factory = _text
        return db

    @staticmethod
    def _check_integrity(db: sqlite3.Connection) -> None:
        # A value the schema forbids (a NULL, a role outside its CHECK) is damage to one row, which reading it
        # checks and replaces; setting the whole history aside for it would hide every other chat.
        problems = [row[0] for row in db.execute("PRAGMA quick_check") if not _VALUE_PROBLEM.match(row[0])]
        if problems not in ([], ["ok"]):
            raise _DamagedDatabase("; ".join(problems[:3]))

    def _schema_version(self, db: sqlite3.Connection) -> int:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise NewerHistoryError(translate(
                "ChatStore", "The chat history at {path} was written by a newer version of XVLM Chat (schema "
                             "{version}; this version knows up to {known}). Update the app to open it.")
                .format(path=self.path, version=version, known=SCHEMA_VERSION))
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

    def create_chat(self, model: str = "") -> int:
        """A new, empty chat; returns its id."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute("INSERT INTO chats (created, updated, model) VALUES (?, ?, ?)", (now, now, model))
        return cursor.lastrowid

    @_translated
    def list_chats(self) -> list[ChatSummary]:
        """Chats not deleted: pinned ones first, then the most recently active."""
        rows = self._read().execute(
            """SELECT c.id, c.title, c.created, c.updated, c.pinned,
                      (SELECT COUNT(*) FROM messages m WHERE m.chat_id = c.id),
                      (SELECT a.sha256 FROM messages m JOIN attachments a ON a.message_id = m.id
                       WHERE m.chat_id = c.id ORDER BY m.position, a.position LIMIT 1)
               FROM chats c WHERE c.deleted_at IS NULL
               ORDER BY c.pinned DESC, c.updated DESC, c.id DESC"""
        )
        chats = []
        for chat_id, title, created, updated, pinned, count, first_image in rows:
            check = RowCheck()
            thumbnail = None if first_image is None else self._image_file(check, first_image,
                                                                           thumbnail_name(str(first_image)))
            chats.append(ChatSummary(chat_id, check.text("title", title), check.time("created", created),
                                     check.time("updated", updated), check.flag("pinned", pinned), count, thumbnail,
                                     tuple(check.problems)))
        return chats

    @_translated
    def load_chat(self, chat_id: int) -> Chat:
        """A chat with all its messages in order (a deleted chat too, until it is purged)."""
        db = self._read()
        row = db.execute(
            "SELECT title, created, updated, model, pinned FROM chats WHERE id = ?", (chat_id,)
        ).fetchone()
        if row is None:
            raise StoreError(translate("ChatStore", "There is no chat {id} in the history.").format(id=chat_id))
        title, created, updated, model, pinned = row
        check = RowCheck()
        images: dict[int, list[ImageRef]] = {}
        for message_id, sha256, file in db.execute(
            """SELECT m.id, a.sha256, i.file FROM attachments a
               JOIN messages m ON m.id = a.message_id LEFT JOIN images i ON i.sha256 = a.sha256
               WHERE m.chat_id = ? ORDER BY m.id, a.position""",
            (chat_id,),
        ):
            check.where = f"message {message_id}"
            path = self._image_file(check, sha256, file)
            if path is not None:
                images.setdefault(message_id, []).append(ImageRef(sha256, str(path)))
        messages = []
        for message_id, role, text, status, stats in db.execute(
            "SELECT id, role, text, status, stats FROM messages WHERE chat_id = ? ORDER BY position", (chat_id,)
        ):
            check.where = f"message {message_id}"
            role = check.role(role)
            if role is not None:
                messages.append(ChatMessage(role, self._pending.get(message_id, check.text("text", text)),
                                        tuple(images.get(message_id, ())), check.status(status, role),
                                        check.stats(stats), message_id))
        versions = self._versions(db, check, messages[-1]) if messages and messages[-1].role == "assistant" else ()
        check.where = ""
        return Chat(chat_id, check.text("title", title), check.time("created", created),
                    check.time("updated", updated), check.text("model", model),
                    check.flag("pinned", pinned), messages, tuple(check.problems), versions)

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
            files = db.execute(f"SELECT sha256, file {unused}").fetchall()
            db.execute(f"DELETE {unused}")
        # Files go only after the rows are gone for good: a crash in between leaves files, never broken rows.
        for sha256, file in files:
            # Only the files named for this image: a damaged row naming another image's file deletes nothing.
            if is_digest(sha256):
                self.images.remove(*(name for name in (file, thumbnail_name(sha256)) if names_image(sha256, name)))
        return purged

    # --- places ------------------------------------------------------------------------------------------------

    @_translated
    def remembered(self, key: str) -> str:
        """What `remember` kept under `key` ("" if nothing, or something that is not text)."""
        row = self._read().execute("SELECT value FROM places WHERE key = ?", (key,)).fetchone()
        return row[0] if row is not None and isinstance(row[0], str) and len(row[0]) <= MAX_PLACE_CHARS else ""

    def remember(self, key: str, value: str) -> None:
        """Keep `value` under `key` for the next launch."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO places (key, value) VALUES (?, ?)", (key, value[:MAX_PLACE_CHARS]))

    # --- messages ----------------------------------------------------------------------------------------------

    def add_user_message(self, chat_id: int, text: str, images: Sequence[ImageRef | Path | bytes] = ()) -> int:
        """Save a question with copies of its images (already stored ImageRefs, paths or encoded bytes); returns
        the message id.

        The first question of an untitled chat becomes its title. Raises ImageError, saving nothing,
        when an image cannot be used.
        """
        self._require_writable()  # before any image is copied in
        stored = [self.images.store(image) for image in images]
        with self._write() as db:
            title = self._require_chat(db, chat_id)
            # The chat goes on from the answers shown: the other versions of its latest answer are left behind.
            db.execute("DELETE FROM answer_versions WHERE message_id IN (SELECT id FROM messages WHERE chat_id = ?)",
                       (chat_id,))
            message_id = self._insert_message(db, chat_id, "user", text, Status.COMPLETE, stored)
            if not title:
                db.execute("UPDATE chats SET title = ? WHERE id = ?", (auto_title(text), chat_id))
        return message_id

    def begin_answer(self, chat_id: int) -> int:
        """An empty assistant message marked streaming; returns its id."""
        with self._write() as db:
            self._require_chat(db, chat_id)
            return self._insert_message(db, chat_id, "assistant", "", Status.STREAMING, [])

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

    def finish_answer(self, message_id: int, text: str, status: Status = Status.COMPLETE,
                      stats: AnswerStats | None = None) -> None:
        """The final text of an answer, how it ended, and what it cost."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, not {status!r}")
        with self._write() as db:
            chat_id = self._require_message(db, message_id)
            db.execute(
                "UPDATE messages SET text = ?, status = ?, stats = ? WHERE id = ?",
                (text, status, _stats_json(stats), message_id),
            )
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (time.time(), chat_id))
        self._pending.pop(message_id, None)

    def add_imported_chat(self, chat: ImportedChat) -> int:
        """A new chat of finished messages (with their stats, and the last answer's other versions) whose images are
        already in the images folder; returns its id. A title a listed chat has is numbered: "title (2)"."""
        now = time.time()
        first_question = next((turn.text for turn in chat.messages if turn.role == "user" and turn.text.strip()), "")
        with self._write() as db:
            title = self._free_title(db, auto_title(first_question))
            chat_id = db.execute(
                "INSERT INTO chats (title, created, updated) VALUES (?, ?, ?)", (title, now, now)
            ).lastrowid
            message_id = 0
            for turn in chat.messages:
                message_id = self._insert_message(db, chat_id, turn.role, turn.text, Status.COMPLETE, turn.images,
                                                  turn.stats)
            if chat.versions:
                # Version i at position i; the message row holds the one shown.
                shown = next(index for index, version in enumerate(chat.versions) if version is chat.messages[-1])
                db.executemany("INSERT INTO answer_versions (message_id, position, text, status, stats) "
                               "VALUES (?, ?, ?, 'complete', ?)",
                               [(message_id, position, version.text, _stats_json(version.stats))
                                for position, version in enumerate(chat.versions) if position != shown])
                db.execute("UPDATE messages SET version = ? WHERE id = ?", (shown, message_id))
        return chat_id

    @staticmethod
    def _free_title(db: sqlite3.Connection, title: str) -> str:
        """`title`, or "title (2)", "title (3)"... when a chat in the list has it: an import is told apart."""
        if not title:
            return title
        taken = {row[0] for row in db.execute("SELECT title FROM chats WHERE deleted_at IS NULL AND (title = ? OR "
                                              "substr(title, 1, ?) = ?)", (title, len(title) + 2, title + " ("))}
        number = 2
        candidate = title
        while candidate in taken:
            candidate, number = f"{title} ({number})", number + 1
        return candidate

    def truncate_after(self, message_id: int) -> None:
        """Delete every message that comes after this one in its chat (to regenerate or resend from it)."""
        with self._write() as db:
            chat_id = self._require_message(db, message_id)
            db.execute(
                "DELETE FROM messages WHERE chat_id = ? AND position > (SELECT position FROM messages WHERE id = ?)",
                (chat_id, message_id),
            )

    # --- versions of an answer ---------------------------------------------------------------------------------

    def begin_version(self, message_id: int) -> None:
        """Regenerate: the answer shown becomes one of its other versions (unless it has no text, which is nothing
        to go back to), and the message an empty answer being written, its newest version."""
        with self._write() as db:
            self._require_message(db, message_id)
            db.execute("""INSERT OR REPLACE INTO answer_versions (message_id, position, text, status, stats)
                          SELECT id, version, text, status, stats FROM messages WHERE id = ? AND text != ''""",
                       (message_id,))
            db.execute(
                """UPDATE messages SET text = '', status = 'streaming', stats = '{}',
                   version = MAX(version, COALESCE((SELECT MAX(position) FROM answer_versions WHERE message_id = ?),
                                                   0)) + 1
                   WHERE id = ?""", (message_id, message_id))

    def show_version(self, message_id: int, index: int) -> None:
        """Show the answer's version at `index` (in the order `load_chat` gives them); the one shown so far becomes
        one of the others, unless it has no text. The chat continues from the version shown."""
        with self._write() as db:
            self._require_message(db, message_id)
            others = [row[0] for row in db.execute(
                "SELECT position FROM answer_versions WHERE message_id = ? ORDER BY position", (message_id,))]
            shown = self._shown_version(db, message_id)
            if not 0 <= index <= len(others):
                raise ValueError(f"answer {message_id} has {len(others) + 1} versions, not {index + 1}")
            if index == shown:
                return
            position = others[index if index < shown else index - 1]
            db.execute("""INSERT OR REPLACE INTO answer_versions (message_id, position, text, status, stats)
                          SELECT id, version, text, status, stats FROM messages WHERE id = ? AND text != ''""",
                       (message_id,))
            db.execute("""UPDATE messages SET (text, status, stats, version) =
                          (SELECT text, status, stats, position FROM answer_versions
                           WHERE message_id = ? AND position = ?) WHERE id = ?""", (message_id, position, message_id))
            db.execute("DELETE FROM answer_versions WHERE message_id = ? AND position = ?", (message_id, position))

    @staticmethod
    def _shown_version(db: sqlite3.Connection, message_id: int) -> int:
        """Where the version the message shows sits among its other versions."""
        return db.execute("""SELECT COUNT(*) FROM answer_versions WHERE message_id = ?
                             AND position < (SELECT version FROM messages WHERE id = ?)""",
                          (message_id, message_id)).fetchone()[0]

    def _versions(self, db: sqlite3.Connection, check: RowCheck, answer: ChatMessage) -> tuple[ChatMessage, ...]:
        """Every version of `answer` in order, `answer` itself among them; () when it was written once."""
        check.where = f"message {answer.id} version"
        others = [ChatMessage("assistant", check.text("text", text), (), check.status(status, "assistant"),
                          check.stats(stats), answer.id)
                  for text, status, stats in db.execute(
                      "SELECT text, status, stats FROM answer_versions WHERE message_id = ? ORDER BY position",
                      (answer.id,))]
        if not others:
            return ()
        shown = self._shown_version(db, answer.id)
        return (*others[:shown], answer, *others[shown:])

    # --- search ------------------------------------------------------------------------------------------------

    @_translated
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
                conditions.append(f"m.text {LIKE}")
                parameters.append(_like_pattern(term))
        db = self._read()
        rows = db.execute(
            f"""SELECT m.created, c.id, m.id, c.title, m.role, m.text, NULL FROM messages m
                JOIN chats c ON c.id = m.chat_id
                WHERE {" AND ".join(conditions)} ORDER BY m.created DESC, m.id DESC LIMIT ?""",
            (*parameters, max(0, limit)),
        ).fetchall()
        # The other versions of regenerated answers: few (one answer per chat has them), so not indexed.
        rows += db.execute(
            f"""SELECT m.created, c.id, m.id, c.title, m.role, v.text, v.position FROM answer_versions v
                JOIN messages m ON m.id = v.message_id JOIN chats c ON c.id = m.chat_id
                WHERE c.deleted_at IS NULL AND {" AND ".join([f"v.text {LIKE}"] * len(terms))}
                ORDER BY m.created DESC, m.id DESC LIMIT ?""",
            (*map(_like_pattern, terms), max(0, limit)),
        ).fetchall()
        # Newest message first, as each query gave them; a message's own text before its other versions.
        rows.sort(key=lambda row: (row[0] if isinstance(row[0], int | float) else 0, row[2],
                                   1 if row[6] is None else -row[6]), reverse=True)
        pattern = re.compile("|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True)), re.I)
        hits = []
        for _created, chat_id, message_id, title, role, text, position in rows[: max(0, limit)]:
            check = RowCheck()  # what is damaged shows where the chat is listed and opened
            role = check.role(role)
            if role is not None:
                shown = self._pending.get(message_id, check.text("text", text)) if position is None else \
                    check.text("text", text)
                snippet, highlights = _snippet(shown, pattern)
                version = None if position is None else self._version_index(db, message_id, position)
                hits.append(SearchHit(chat_id, message_id, check.text("title", title), role, snippet, highlights,
                                      version))
        return hits

    def _version_index(self, db: sqlite3.Connection, message_id: int, position: int) -> int:
        """Where the other version at `position` sits in the order `load_chat` gives the answer's versions."""
        before = db.execute("SELECT COUNT(*) FROM answer_versions WHERE message_id = ? AND position < ?",
                            (message_id, position)).fetchone()[0]
        return before if before < self._shown_version(db, message_id) else before + 1

    # --- internals ---------------------------------------------------------------------------------------------

    def _image_file(self, check: RowCheck, sha256: object, name: object) -> Path | None:
        """An image's copy or thumbnail, or None (noted) when the row does not name its own file in the folder."""
        if not is_digest(sha256):
            return check.bad("image hash", sha256, None)
        if names_image(sha256, name):
            try:
                return self.images.path(name)
            except UnsafePathError:
                pass
        return check.bad("image file", name, None)

    def _read(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(translate("ChatStore", "The chat history is closed."))
        return self._db

    def _require_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(translate("ChatStore", "The chat history at {path} is open read-only in this "
                                                         "window; changes are not saved.").format(path=self.path))
        self._read()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._require_writable()
        try:
            with _transaction(self._read()) as db:
                yield db
        except sqlite3.Error as exc:
            raise StoreError(translate("ChatStore", "The chat history at {path} could not be written: {reason}.")
                             .format(path=self.path, reason=_reason(exc))) from exc

    @staticmethod
    def _require_chat(db: sqlite3.Connection, chat_id: int) -> str:
        """The chat's title; StoreError when there is no such chat."""
        row = db.execute("SELECT title FROM chats WHERE id = ?", (chat_id,)).fetchone()
        if row is None:
            raise StoreError(translate("ChatStore", "There is no chat {id} in the history.").format(id=chat_id))
        return row[0]

    @staticmethod
    def _require_message(db: sqlite3.Connection, message_id: int) -> int:
        """The message's chat id; StoreError when there is no such message."""
        row = db.execute("SELECT chat_id FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise StoreError(translate("ChatStore", "There is no message {id} in the history.").format(id=message_id))
        return row[0]

    @staticmethod
    def _insert_message(db: sqlite3.Connection, chat_id: int, role: Role, text: str, status: Status,
                        images: Sequence[ImageRef], stats: AnswerStats | None = None) -> int:
        now = time.time()
        message_id = db.execute(
            """INSERT INTO messages (chat_id, position, role, text, status, stats, created)
               VALUES (?, (SELECT COALESCE(MAX(position) + 1, 0) FROM messages WHERE chat_id = ?), ?, ?, ?, ?, ?)""",
            (chat_id, chat_id, role, text, status, _stats_json(stats), now),
        ).lastrowid
        for position, image in enumerate(images):
            db.execute("INSERT OR IGNORE INTO images (sha256, file, thumbnail) VALUES (?, ?, ?)",
                       (image.sha256, Path(image.path).name, thumbnail_name(image.sha256)))
            db.execute("INSERT INTO attachments (message_id, position, sha256) VALUES (?, ?, ?)",
                       (message_id, position, image.sha256))
        db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
        return message_id


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


def _reason(error: Exception) -> str:
    """SQLite's message for an error, to end a sentence of ours (some of its messages end in a full stop)."""
    return str(error).rstrip(".")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _stats_json(stats: AnswerStats | None) -> str:
    return json.dumps(stats.as_dict() if stats is not None else {}, ensure_ascii=False)


def _like_pattern(term: str) -> str:
    """A LIKE pattern that matches `term` literally, anywhere in the text."""
    return "%" + re.sub(r"([\\%_])", r"\\\1", term) + "%"
