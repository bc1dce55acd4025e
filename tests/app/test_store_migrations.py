"""A history written by an earlier version of the app opens, keeps everything, and gains what came later."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from pathlib import Path

from PIL import Image

from app.history.database import SCHEMA_VERSION, ChatStore
from app.history.records import AnswerStats

# Schema version 1 exactly as that version created it, written out here so the test does not depend on
# the store's own migration code.
SCHEMA_V1 = """
CREATE TABLE chats (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    pinned INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE messages (
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
);
CREATE TABLE images (sha256 TEXT PRIMARY KEY, file TEXT NOT NULL, thumbnail TEXT NOT NULL);
CREATE TABLE attachments (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    sha256 TEXT NOT NULL REFERENCES images(sha256),
    PRIMARY KEY (message_id, position)
);
CREATE INDEX attachments_by_image ON attachments(sha256);
PRAGMA user_version = 1;
"""

# The name the app gives an image: its SHA-256 (of these test bytes or any other: it is not read back).
PURPLE = hashlib.sha256(b"purple").hexdigest()


def write_v1_history(path: Path) -> None:
    path.parent.mkdir(parents=True)
    images = path.parent / "images"
    images.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "purple").save(buffer, "PNG")
    (images / f"{PURPLE}.png").write_bytes(buffer.getvalue())
    (images / f"{PURPLE}.thumb.jpg").write_bytes(buffer.getvalue())
    db = sqlite3.connect(path)
    try:
        db.executescript(SCHEMA_V1)
        db.executescript(
            """
            INSERT INTO chats VALUES (1, 'Old chat', 100.0, 200.0, 'Xmodel_VLM', '{"temperature": 0.2}', 1);
            INSERT INTO chats VALUES (2, 'Older chat', 50.0, 60.0, '', '{}', 0);
            INSERT INTO messages VALUES (1, 1, 0, 'user', 'What colour is the aubergine?', 'complete', '{}', 150.0);
            INSERT INTO messages VALUES (2, 1, 1, 'assistant', 'It is purple.', 'complete', '{"tokens": 4}', 160.0);
            INSERT INTO messages VALUES (3, 1, 2, 'user', '那是茄子吗', 'complete', '{}', 170.0);
            INSERT INTO messages VALUES (4, 1, 3, 'assistant', 'Half writ', 'streaming', '{}', 180.0);
            INSERT INTO images VALUES ('{PURPLE}', '{PURPLE}.png', '{PURPLE}.thumb.jpg');
            INSERT INTO attachments VALUES (1, 0, '{PURPLE}');
            """.replace("{PURPLE}", PURPLE)
        )
    finally:
        db.close()


def test_version_1_history_is_upgraded_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "data" / "chats.sqlite3"
    write_v1_history(path)

    with ChatStore(path) as store:
        chat = store.load_chat(1)
        assert [chat.id for chat in store.list_chats()] == [1, 2]
        # What the old version wrote is all there.
        assert (chat.title, chat.model, chat.pinned) == ("Old chat", "Xmodel_VLM", True)
        assert [(m.role, m.text, m.status) for m in chat.messages] == [
            ("user", "What colour is the aubergine?", "complete"),
            ("assistant", "It is purple.", "complete"),
            ("user", "那是茄子吗", "complete"),
            ("assistant", "Half writ", "interrupted"),
        ]
        assert [image.path for image in chat.messages[0].images] == [str(path.parent / "images" / f"{PURPLE}.png")]
        assert chat.messages[1].stats == AnswerStats()  # "tokens" is not a stat this app reads
        # What version 2 added works on the old messages: search (the index is filled) and undoable delete.
        assert [hit.message_id for hit in store.search("aubergine")] == [1]
        assert [hit.message_id for hit in store.search("茄子")] == [3]
        store.delete_chat(2)
        assert [chat.id for chat in store.list_chats()] == [1]
        store.restore_chat(2)
        # What version 3 added: places kept for the next launch (the chat open, a folder).
        assert store.remembered("last open chat") == ""
        store.remember("last open chat", "1")
        assert store.remembered("last open chat") == "1"
        # What version 4 added: Regenerate keeps the answer it replaces as another version, to go back to.
        store.begin_version(4)
        store.finish_answer(4, "Written whole")
        store.show_version(4, 0)
        chat = store.load_chat(1)
        assert [(version.text, version.status) for version in chat.versions] == [
            ("Half writ", "interrupted"), ("Written whole", "complete")]
        assert chat.versions[0] is chat.messages[-1]
        # And the old chat goes on, from the version shown.
        store.add_user_message(1, "And the stem?")
        assert [hit.message_id for hit in store.search("stem")] == [5]
        assert store.load_chat(1).messages[3].text == "Half writ"

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    finally:
        db.close()

