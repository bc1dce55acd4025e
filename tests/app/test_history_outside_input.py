"""The history's database and the files imported into it are outside input: a damaged row changes its own chat
only, no name from the database reaches outside the images folder, and a hostile chat file is refused in a sentence.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes import FakeSession, fake_load
from PIL import Image

from app.history.database import ChatStore
from app.history.image_files import digest
from app.history.records import AnswerStats, Status
from app.history.service import History
from app.model.worker import ModelWorker
from xvlm_core.messages import image_limit


def png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


def tamper(path: Path, sql: str, parameters: tuple = ()) -> None:
    """Change the database as another program could, past the checks the app's schema declares."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute(sql, parameters)
        db.commit()
    finally:
        db.close()


def recorded(history: History) -> list[str]:
    failures: list[str] = []
    history.failed.connect(failures.append)
    return failures


STATS = {"ttft_s": 0.25, "decode_tok_s": 12.5, "output_tokens": 7, "stop_reason": "eos"}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chats.sqlite3"


@pytest.fixture
def chats(db_path: Path) -> dict[str, int]:
    """A chat to damage (a question with an image, an answer with stats) and a healthy one, written by the app."""
    with ChatStore(db_path) as store:
        ids = {}
        for name, color in (("damaged", "red"), ("healthy", "blue")):
            ids[name] = store.create_chat(model="Xmodel_VLM")
            store.add_user_message(ids[name], f"What colour, {name}?", [png_bytes(color)])
            store.finish_answer(store.begin_answer(ids[name]), f"It is {color}.", Status.COMPLETE, AnswerStats(**STATS))
            ids[f"{name} answer"] = store.load_chat(ids[name]).messages[1].id
    return ids


# -- names: nothing outside the images folder is read or deleted ---------------------------------------------------


def test_purging_never_deletes_a_file_that_a_damaged_row_names(db_path: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not the app's", encoding="utf-8")
    with ChatStore(db_path) as store:
        doomed = [store.create_chat() for _ in range(3)]
        for chat_id, color in zip(doomed, ("red", "green", "yellow"), strict=True):
            store.add_user_message(chat_id, color, [png_bytes(color)])
        kept = store.create_chat()
        store.add_user_message(kept, "blue", [png_bytes("blue")])
        (kept_image,) = store.load_chat(kept).messages[0].images
    tamper(db_path, "UPDATE images SET file = '../../victim.txt' WHERE sha256 = ?", (digest(png_bytes("red")),))
    tamper(db_path, "UPDATE images SET file = ? WHERE sha256 = ?",  # another image's file, still in use
           (Path(kept_image.path).name, digest(png_bytes("green"))))
    tamper(db_path, "UPDATE images SET file = ? WHERE sha256 = ?", (str(victim), digest(png_bytes("yellow"))))

    history = History(ChatStore(db_path))
    for chat_id in doomed:
        assert history.delete_chat(chat_id)
    history.close()  # purges what was deleted

    assert victim.read_text(encoding="utf-8") == "not the app's"
    assert Path(kept_image.path).read_bytes() == png_bytes("blue")
    images = db_path.parent / "images"
    # The files named for the purged images themselves (their thumbnails here) went as before.
    assert sorted(path.name for path in images.glob("*.thumb.jpg")) == [f"{digest(png_bytes('blue'))}.thumb.jpg"]
    with ChatStore(db_path) as store:
        assert [chat.id for chat in store.list_chats()] == [kept]


def test_an_opened_chat_never_points_outside_the_images_folder(db_path: Path, chats: dict[str, int],
                                                               tmp_path: Path) -> None:
    (tmp_path / "victim.png").write_bytes(png_bytes("white"))
    tamper(db_path, "UPDATE images SET file = '../../victim.png' WHERE sha256 = ?", (digest(png_bytes("red")),))
    history = History(ChatStore(db_path))
    failures = recorded(history)
    chat = history.load_chat(chats["damaged"])
    assert chat is not None and [message.text for message in chat.messages] == ["What colour, damaged?", "It is red."]
    assert chat.messages[0].images == ()  # left out, and said so
    assert f"chat {chats['damaged']}" in history.notice.text and "victim.png" in history.notice.text
    assert failures == []
    history.close()


# -- values: a bad one in one row degrades that chat, never the app or the other chats ----------------------------

BIG_NUMBER = "9" * (sys.get_int_max_str_digits() + 1)
# name: (the damage, as SQL on the damaged chat's rows; what the damaged chat shows instead)
BAD_VALUES: dict[str, tuple[str, Callable]] = {
    "created as text": ("UPDATE chats SET created = 'yesterday' WHERE id = :chat",
                        lambda chat: chat.created == datetime.fromtimestamp(0, UTC)),
    "updated as bytes": ("UPDATE chats SET updated = x'00ff' WHERE id = :chat",
                         lambda chat: chat.updated == datetime.fromtimestamp(0, UTC)),
    "created past year 9999": ("UPDATE chats SET created = 1e300 WHERE id = :chat",
                               lambda chat: chat.created == datetime.fromtimestamp(0, UTC)),
    "updated infinite": ("UPDATE chats SET updated = 1e999 WHERE id = :chat",
                         lambda chat: chat.updated == datetime.fromtimestamp(0, UTC)),
    "title as bytes": ("UPDATE chats SET title = x'00ff' WHERE id = :chat", lambda chat: chat.title == ""),
    "model as bytes": ("UPDATE chats SET model = x'00' WHERE id = :chat", lambda chat: chat.model == ""),
    "pinned as text": ("UPDATE chats SET pinned = 'yes' WHERE id = :chat", lambda chat: chat.pinned is False),
    "stats not JSON": ("UPDATE messages SET stats = 'fast' WHERE id = :answer",
                       lambda chat: chat.messages[1].stats == AnswerStats()),
    "stats of the wrong kinds": ("""UPDATE messages SET stats = '{"ttft_s": "fast", "output_tokens": -3,
                                    "dropped_messages": 1e999, "error": 5, "decode_tok_s": 2.5}' WHERE id = :answer""",
                                 lambda chat: chat.messages[1].stats == AnswerStats(decode_tok_s=2.5)),
    "an unknown role": ("UPDATE messages SET role = 'system' WHERE id = :answer",
                        lambda chat: [message.role for message in chat.messages] == ["user"]),
    "an unknown status": ("UPDATE messages SET status = 'bogus' WHERE id = :answer",
                          lambda chat: chat.messages[1].status is Status.INTERRUPTED),
    "text as bytes": ("UPDATE messages SET text = x'00ff' WHERE id = :answer",
                      lambda chat: chat.messages[1].text == ""),
    "an image hash that is no hash": ("UPDATE attachments SET sha256 = 'abc' WHERE sha256 = :red_hash",
                                      lambda chat: chat.messages[0].images == ()),
    "an image without its row": ("UPDATE images SET sha256 = 'abc' WHERE sha256 = :red_hash",
                                 lambda chat: chat.messages[0].images == ()),
    "an image named for another image": ("UPDATE images SET file = :blue WHERE file LIKE :red",
                                         lambda chat: chat.messages[0].images == ()),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_a_bad_value_degrades_its_own_chat_with_a_notice(db_path: Path, chats: dict[str, int], case: str) -> None:
    damage, shown_instead = BAD_VALUES[case]
    red, blue = digest(png_bytes("red")), digest(png_bytes("blue"))
    tamper(db_path, damage, {"chat": chats["damaged"], "answer": chats["damaged answer"], "red": f"{red}.%",
                             "red_hash": red, "blue": f"{blue}.png"})
    history = History(ChatStore(db_path))
    failures = recorded(history)

    assert sorted(chat.id for chat in history.list_chats()) == sorted((chats["damaged"], chats["healthy"]))
    damaged = history.load_chat(chats["damaged"])
    assert damaged is not None and shown_instead(damaged)
    assert f"chat {chats['damaged']}" in history.notice.text and history.notice.saving
    healthy = history.load_chat(chats["healthy"])
    assert healthy.title == "What colour, healthy?"
    assert healthy.messages[1].stats == AnswerStats(**STATS) and Path(healthy.messages[0].images[0].path).is_file()
    assert f"chat {chats['healthy']}" not in history.notice.text
    assert history.search("colour") and failures == []
    history.close()


def test_the_notice_names_three_damaged_chats_and_counts_the_rest(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        ids = [store.create_chat() for _ in range(5)]
    tamper(db_path, "UPDATE chats SET created = 'yesterday'")
    history = History(ChatStore(db_path))
    changes = []
    history.notice_changed.connect(lambda: changes.append(history.notice.text))
    assert len(history.list_chats()) == 5
    assert len(changes) == 1 and "; 2 more)" in changes[0]
    assert sum(f"chat {chat_id}:" in changes[0] for chat_id in ids) == 3
    history.list_chats()  # found again: nothing new to say
    assert len(changes) == 1
    history.close()


def test_text_that_is_not_utf8_is_read_with_replacement_characters(db_path: Path, chats: dict[str, int]) -> None:
    tamper(db_path, "UPDATE chats SET title = CAST(x'4f6bff' AS TEXT) WHERE id = ?", (chats["damaged"],))
    tamper(db_path, "UPDATE messages SET text = CAST(x'ff4e6f' AS TEXT) WHERE id = ?", (chats["damaged answer"],))
    history = History(ChatStore(db_path))
    failures = recorded(history)
    assert "Ok\ufffd" in [chat.title for chat in history.list_chats()]
    assert history.load_chat(chats["damaged"]).messages[1].text == "\ufffdNo"
    assert failures == []
    history.close()


def fake_worker() -> ModelWorker:
    return ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession(["An ", "answer."]))


def test_the_app_starts_and_opens_every_chat_with_a_damaged_row(qtbot, make_window, db_path: Path,
                                                               chats: dict[str, int]) -> None:
    tamper(db_path, "UPDATE chats SET created = 'yesterday', updated = 'today' WHERE id = ?", (chats["damaged"],))
    tamper(db_path, """UPDATE messages SET stats = '{"output_tokens": 5, "ttft_s": "fast"}' WHERE id = ?""",
           (chats["damaged answer"],))
    window = make_window(fake_worker(), history=History(ChatStore(db_path)), start=False)
    assert sorted(window.chat_list.chat_ids()) == sorted((chats["damaged"], chats["healthy"]))
    assert window.notice.isVisible() and f"chat {chats['damaged']}" in window.notice.text.text()
    window.open_chat(chats["damaged"])
    assert [message.text for message in window.controller.messages] == ["What colour, damaged?", "It is red."]
    assert "5 tokens" in window.view.widgets[-1].footer.text()
    assert "stats ttft_s" in window.notice.text.text()  # found when the chat was opened, and added
    window.open_chat(chats["healthy"])
    assert window.controller.messages[-1].stats == AnswerStats(**STATS)
    assert not window.banner.isVisible()


# -- imports: a hostile file is refused with the import's own sentence ------------------------------------------


def import_through_history(qtbot, history: History, path: Path) -> tuple[int | None, list[str]]:
    """Import as the window does; the chat's id (None when refused) and what the person was told."""
    failures = recorded(history)
    task = asyncio.ensure_future(history.import_chat(path, lambda done, total: None, threading.Event()))
    qtbot.waitUntil(task.done, timeout=10_000)
    return task.result(), failures


def chat_file(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pic.png").write_bytes(png_bytes("blue"))
    path = folder / "chat.json"
    path.write_text(text, encoding="utf-8")
    return path


HOSTILE_FILES: dict[str, tuple[str, str]] = {
    "a lone surrogate in the text": ('[{"role": "user", "content": "hi"}, '
                                     '{"role": "assistant", "content": "a\\ud800"}]',
                                     r"message 2 holds a broken character \(a lone surrogate such as \\ud800\)"),
    "a lone surrogate in an image name": ('[{"role": "user", "content": "x", "images": ["pic\\udc00.png"]}]',
                                          "message 1 holds a broken character"),
    "an over-long number": (f'[{{"role": "user", "content": "x"}}, {BIG_NUMBER}]',
                            f"a number in it has more than {sys.get_int_max_str_digits()} digits"),
    "more images than the model reads": (
        json.dumps([{"role": "user", "content": "x", "images": ["pic.png"]},
                    {"role": "user", "content": "y", "images": ["pic.png"] * (image_limit() + 1)}]),
        f"message 2 has {image_limit() + 1} images, and the model reads at most {image_limit()} in one message"),
    "a million tiny values": ("[" + "[]," * 300_000 + "[]]", "too many JSON values"),
}


@pytest.mark.parametrize("case", list(HOSTILE_FILES))
def test_import_refuses_a_hostile_file_in_a_sentence(qtbot, event_loop, db_path: Path, tmp_path: Path,
                                                     case: str) -> None:
    text, reason = HOSTILE_FILES[case]
    path = chat_file(tmp_path / "in", text)
    history = History(ChatStore(db_path))
    chat_id, failures = import_through_history(qtbot, history, path)
    assert chat_id is None and len(failures) == 1
    assert failures[0].startswith(f"{path} is not a valid chat export: ")
    assert re.search(reason, failures[0])
    assert "Traceback" not in failures[0] and "unexpected" not in failures[0].lower()
    assert history.list_chats() == [] and not any((db_path.parent / "images").glob("*"))
    history.close()


def test_import_of_as_many_images_as_the_model_reads(qtbot, event_loop, db_path: Path, tmp_path: Path) -> None:
    path = chat_file(tmp_path / "in", json.dumps([{"role": "user", "content": "x",
                                                    "images": ["pic.png"] * image_limit()}]))
    history = History(ChatStore(db_path))
    chat_id, failures = import_through_history(qtbot, history, path)
    assert failures == [] and len(history.load_chat(chat_id).messages[0].images) == image_limit()
    history.close()


def test_the_settings_column_of_older_apps_is_never_read(db_path: Path, chats: dict[str, int]) -> None:
    """Apps of schema 1 to 4 wrote each chat's sampling there; nothing reads it, so nothing in it can hurt."""
    tamper(db_path, f"UPDATE chats SET settings = '{'[' * 30_000}' WHERE id = :chat", {"chat": chats["damaged"]})
    history = History(ChatStore(db_path))

    damaged = history.load_chat(chats["damaged"])
    assert damaged is not None and damaged.damage == () and len(damaged.messages) == 2
    assert history.notice is None
