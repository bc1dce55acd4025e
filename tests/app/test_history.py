"""Chats are kept: saved as they happen, listed, reopened with their images, searched, renamed, deleted, exported."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import sys
from pathlib import Path

import filelock
import pytest
from fakes import FakeSession, Heartbeat, fake_load
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from test_window import ask, drop_files, wait_answered, wait_image_checked, wait_ready

from app.chat.chat_list import CHAT_ID
from app.history import image_files
from app.history.database import ChatStore
from app.history.records import Status
from app.history.service import History, open_history
from app.model.worker import ModelWorker


def fake_worker(session: FakeSession | None = None) -> ModelWorker:
    session = session or FakeSession(["An ", "answer."])
    return ModelWorker(load=fake_load(), session_factory=lambda loaded: session)


def store_at(tmp_path: Path, **kwargs) -> ChatStore:
    return ChatStore(tmp_path / "history" / "chats.sqlite3", **kwargs)


def history_at(tmp_path: Path, **kwargs) -> History:
    return History(store_at(tmp_path, **kwargs))


def chat_with_image(qtbot, window, image: Path, question: str) -> None:
    drop_files(window, image)
    wait_image_checked(qtbot, window)
    ask(qtbot, window, question)
    wait_answered(qtbot, window)


def test_two_chats_survive_a_new_window_and_reopen_with_their_images(qtbot, make_window, tmp_path, images_dir):
    session = FakeSession(["An ", "answer."])
    first = make_window(fake_worker(session), history=history_at(tmp_path))
    chat_with_image(qtbot, first, images_dir / "gradient_square.png", "What colours are these?")
    qtbot.keyClick(first.composer.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    chat_with_image(qtbot, first, images_dir / "shapes_wide.png", "How many shapes?")
    assert [first.chat_list.list.item(row).text() for row in range(2)] == ["How many shapes?",
                                                                           "What colours are these?"]
    first.close()

    session = FakeSession(["Still ", "here."])
    second = make_window(fake_worker(session), history=history_at(tmp_path))
    titles = [second.chat_list.list.item(row).text() for row in range(second.chat_list.list.count())]
    assert titles == ["How many shapes?", "What colours are these?"]
    qtbot.mouseClick(second.chat_list.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=second.chat_list.list.visualItemRect(second.chat_list.list.item(1)).center())
    messages = second.controller.messages
    assert [(message.role, message.text) for message in messages] == [
        ("user", "What colours are these?"), ("assistant", "An answer.")]
    stored_image = Path(messages[0].images[0].path)
    assert stored_image.is_file() and stored_image.read_bytes() == (images_dir / "gradient_square.png").read_bytes()
    assert not second.view.widgets[0].thumbnails[0].pixmap().isNull()
    assert not second.chat_list.list.item(1).icon().isNull()  # the chat's first picture
    assert second.windowTitle().startswith("What colours are these?")

    ask(qtbot, second, "And now?")
    wait_answered(qtbot, second)
    assert [(message.text, [image.path for image in message.images]) for message in session.calls[-1]] == [
        ("What colours are these?", [str(stored_image)]), ("An answer.", []), ("And now?", [])]
    reopened = store_at(tmp_path, read_only=True).load_chat(second.controller.chat_id)
    assert [message.text for message in reopened.messages] == ["What colours are these?", "An answer.", "And now?",
                                                                "Still here."]


def test_the_question_is_saved_before_answering_and_the_answer_while_it_streams(qtbot, make_window, tmp_path):
    session = FakeSession([f"w{i} " for i in range(300)], delay_s=0.01)
    window = make_window(fake_worker(session), history=history_at(tmp_path, stream_write_interval=0.05))
    ask(qtbot, window, "Tell me a long story")
    chat_id = window.controller.chat_id
    reader = store_at(tmp_path, read_only=True)
    assert reader.load_chat(chat_id).messages[0].role == "user"
    qtbot.waitUntil(lambda: len(reader.load_chat(chat_id).messages[-1].text) > 20, timeout=5000)
    streaming = reader.load_chat(chat_id).messages[-1]
    assert streaming.status == "streaming" and window.controller.busy
    window.controller.stop()
    wait_answered(qtbot, window, Status.STOPPED)
    saved = reader.load_chat(chat_id).messages[-1]
    assert (saved.status, saved.text) == ("stopped", window.controller.messages[-1].text)
    reader.close()


def test_a_failed_answer_is_saved_as_failed(qtbot, make_window, tmp_path):
    window = make_window(ModelWorker(load=fake_load(error=RuntimeError("no"))), history=history_at(tmp_path))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=5000)
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window, Status.FAILED)
    chat_id = window.controller.chat_id
    window.close()
    chat = store_at(tmp_path).load_chat(chat_id)
    assert chat.messages[-1].status == "failed" and "No model is loaded" in chat.messages[-1].stats.error


def test_regenerate_and_edit_replace_what_is_saved(qtbot, make_window, tmp_path):
    session = FakeSession(["one"])
    window = make_window(fake_worker(session), history=history_at(tmp_path))
    ask(qtbot, window, "First question")
    wait_answered(qtbot, window)
    ask(qtbot, window, "Second question")
    wait_answered(qtbot, window)
    session.deltas = ["two"]
    window.controller.regenerate()
    wait_answered(qtbot, window)
    window.controller.edit(2, "Second question, edited", [])
    wait_answered(qtbot, window, Status.COMPLETE)
    chat_id = window.controller.chat_id
    window.close()
    saved = [(message.role, message.text) for message in store_at(tmp_path).load_chat(chat_id).messages]
    assert saved == [("user", "First question"), ("assistant", "one"), ("user", "Second question, edited"),
                     ("assistant", "two")]


def test_search_finds_a_message_and_jumps_to_it(qtbot, make_window, tmp_path):
    session = FakeSession(["Penguins ", "live ", "in ", "the ", "south."])
    window = make_window(fake_worker(session), history=history_at(tmp_path))
    ask(qtbot, window, "Where do penguins live?")
    wait_answered(qtbot, window)
    session.deltas = ["Another ", "answer."]
    window.new_chat()
    ask(qtbot, window, "Something else")
    wait_answered(qtbot, window)
    penguin_chat = window.chat_list.chat_ids()[1]

    qtbot.keyClicks(window.chat_list.search_edit, "south")
    qtbot.waitUntil(lambda: window.chat_list.list.count() == 1, timeout=2000)
    hit = window.chat_list.list.item(0)
    assert "south" in hit.text() and hit.data(CHAT_ID) == penguin_chat
    qtbot.mouseClick(window.chat_list.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=window.chat_list.list.visualItemRect(hit).center())
    assert window.controller.chat_id == penguin_chat
    assert window.view.revealed.message.text == "Penguins live in the south."


def test_rename_pin_and_delete_with_undo(qtbot, make_window, tmp_path):
    window = make_window(fake_worker(), history=history_at(tmp_path))
    for question in ("Alpha", "Beta", "Gamma"):
        window.new_chat()
        ask(qtbot, window, question)
        wait_answered(qtbot, window)
    chat_list = window.chat_list
    alpha, beta, gamma = reversed(chat_list.chat_ids())
    chat_list.rename(alpha, "  Alpha,   renamed ")
    chat_list.set_pinned(alpha, True)
    assert chat_list.chat_ids() == [alpha, gamma, beta]
    assert chat_list.list.item(0).text() == "Alpha, renamed"

    assert window.controller.chat_id == gamma
    chat_list.delete(gamma)
    assert chat_list.chat_ids() == [alpha, beta] and chat_list.undo_bar.isVisible()
    assert window.controller.messages == []  # the open chat was the one deleted
    qtbot.mouseClick(chat_list.undo_button, Qt.MouseButton.LeftButton)
    assert chat_list.chat_ids() == [alpha, gamma, beta]
    assert window.controller.chat_id == gamma and window.controller.messages[0].text == "Gamma"

    chat_list.delete(beta)
    window.close()
    listed = [chat.title for chat in store_at(tmp_path).list_chats()]
    assert listed == ["Alpha, renamed", "Gamma"]  # purged when the app closed


def test_export_and_import(qtbot, make_window, tmp_path, images_dir, monkeypatch):
    window = make_window(fake_worker(), history=history_at(tmp_path))
    chat_with_image(qtbot, window, images_dir / "gradient_square.png", "Export me")
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(exports))
    window.export_markdown_action.trigger()
    qtbot.waitUntil(lambda: not window.transfer_bar.running, timeout=5000)
    window.export_json_action.trigger()
    qtbot.waitUntil(lambda: not window.transfer_bar.running, timeout=5000)
    markdown = next(exports.glob("*.md"))
    assert "Export me" in markdown.read_text() and "An answer." in markdown.read_text()
    exported_json = next(exports.glob("*.json"))

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(exported_json), ""))
    before = window.controller.chat_id
    import_action = next(action for action in window.menuBar().actions()[0].menu().actions()
                         if action.text() == "&Import Chat…")
    import_action.trigger()
    qtbot.waitUntil(lambda: window.controller.chat_id != before, timeout=5000)
    assert [message.text for message in window.controller.messages] == ["Export me", "An answer."]
    assert Path(window.controller.messages[0].images[0].path).is_file()
    assert len(window.chat_list.chat_ids()) == 2
    assert not window.transfer_bar.isVisible() and import_action.isEnabled()


def test_import_runs_off_the_ui_thread_and_hashes_each_image_once(qtbot, make_window, tmp_path, monkeypatch):
    """A file with a thousand references to one large picture: the picture is read, checked and hashed once, on
    another thread, while the UI thread keeps handling its timer; the window shows progress until it is done."""
    import threading

    from PIL import Image

    folder = tmp_path / "to-import"
    folder.mkdir()
    Image.effect_noise((2000, 2000), 64).convert("RGB").save(folder / "large.png")  # noise: megabytes of PNG
    conversation = [{"role": "user", "content": f"Question {n}", "images": ["large.png"] * 10} for n in range(100)]
    path = folder / "chat.json"
    path.write_text(json.dumps(conversation), encoding="utf-8")

    hashing_threads = []
    real_digest = image_files.digest

    def counted_digest(data: bytes) -> str:
        hashing_threads.append(threading.current_thread())
        return real_digest(data)

    monkeypatch.setattr(image_files, "digest", counted_digest)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    window = make_window(fake_worker(), history=history_at(tmp_path), start=False)
    progress_seen = []
    window.transfer_bar.progress.valueChanged.connect(progress_seen.append)
    with Heartbeat() as heartbeat:
        window.import_action.trigger()
        assert window.transfer_bar.isVisible() and not window.import_action.isEnabled()
        ticks_at_start = heartbeat.ticks
        qtbot.waitUntil(lambda: window.controller.chat_id is not None, timeout=30_000)
        ticks_during = heartbeat.ticks - ticks_at_start
    assert [thread is threading.main_thread() for thread in hashing_threads] == [False]
    assert ticks_during > 0  # the UI thread ran its timer while the import worked
    assert progress_seen[-1] == 1 and not window.transfer_bar.isVisible()
    assert len(window.controller.messages) == 100
    assert {image.path for message in window.controller.messages for image in message.images} == {
        str(next(p for p in window.history.store.images_dir.iterdir() if p.suffix == ".png"))}


def test_a_cancelled_import_saves_nothing(qtbot, make_window, tmp_path, images_dir, monkeypatch):
    folder = tmp_path / "to-import"
    folder.mkdir()
    for number in range(3):
        (folder / f"{number}.png").write_bytes((images_dir / "gradient_square.png").read_bytes() + bytes([number]))
    path = folder / "chat.json"
    path.write_text(json.dumps([{"role": "user", "content": "x", "images": ["0.png", "1.png", "2.png"]}]))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(path), ""))
    window = make_window(fake_worker(), history=history_at(tmp_path), start=False)
    window.import_action.trigger()
    # Cancel before the loop has run anything: the worker thread sees it at its first image, deterministically.
    window.transfer_bar.cancel_button.click()
    qtbot.waitUntil(lambda: not window.transfer_bar.running, timeout=5000)
    assert window.history.list_chats() == [] and window.controller.chat_id is None
    assert not window.banner.isVisible()  # cancelling is not a failure
    assert window.import_action.isEnabled()


def test_a_history_that_fails_while_chatting_is_reported_and_the_chat_goes_on(qtbot, make_window, tmp_path):
    window = make_window(fake_worker(), history=history_at(tmp_path))
    wait_ready(qtbot, window)
    window.history.store._read().close()  # the database fails underneath, as a failing disk would make it
    ask(qtbot, window, "Still there?")
    wait_answered(qtbot, window)
    assert window.controller.messages[-1].text == "An answer."
    assert window.banner.isVisible() and "could not be" in window.banner.text.text()
    assert "Traceback" not in window.banner.text.text()


def test_an_answer_cut_by_a_crash_is_shown_as_interrupted(qtbot, make_window, tmp_path):
    with store_at(tmp_path) as store:
        chat_id = store.create_chat()
        store.add_user_message(chat_id, "Tell me a story")
        store.update_streaming(store.begin_answer(chat_id), "Once upon")
    # The app was killed here: reopening marks the answer interrupted.
    window = make_window(fake_worker(), history=history_at(tmp_path))
    window.open_chat(chat_id)
    footer = window.view.widgets[-1].footer.text()
    assert footer.startswith("Interrupted") and "Stopped" not in footer
    assert not window.view.widgets[-1].regenerate_button.isHidden()  # a finished answer: it can be asked again


def test_an_attached_image_is_copied_into_the_history_before_send(qtbot, make_window, tmp_path, images_dir,
                                                                  monkeypatch):
    history = history_at(tmp_path)
    window = make_window(fake_worker(), history=history)
    drop_files(window, images_dir / "shapes_wide.png")
    wait_image_checked(qtbot, window)
    assert len(list(history.store.images_dir.glob("*.thumb.jpg"))) == 1  # prepared off the UI thread while checked

    def no_reading_on_send(*args):
        raise AssertionError("the image was read again when the question was sent")

    monkeypatch.setattr(image_files, "make_thumbnail", no_reading_on_send)
    monkeypatch.setattr(image_files, "read_image_bytes", no_reading_on_send)
    ask(qtbot, window, "How many shapes?")
    wait_answered(qtbot, window)
    (saved,) = history.store.load_chat(window.controller.chat_id).messages[0].images
    assert Path(saved.path).read_bytes() == (images_dir / "shapes_wide.png").read_bytes()
    assert window.controller.messages[0].images == (saved,)  # the live chat holds the history's copy too


# -- conditions of the history that the person must see for as long as they hold --------------------------------


def start_with_history(qtbot, make_window, history: History):
    """A window on this history, asked one question after the model has loaded (which once hid every notice)."""
    window = make_window(fake_worker(), history=history)
    wait_ready(qtbot, window)
    ask(qtbot, window, "Is this saved?")
    wait_answered(qtbot, window)
    return window


def make_damaged(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a database" * 100)


def test_a_damaged_history_is_set_aside_and_the_notice_says_where(qtbot, make_window, tmp_path):
    path = tmp_path / "history" / "chats.sqlite3"
    make_damaged(path)
    window = start_with_history(qtbot, make_window, open_history(path))
    assert window.notice.isVisible()
    text = window.notice.text.text()
    assert "could not be read" in text and str(path.parent / "chats.sqlite3.corrupt-") in text
    assert window.notice.close_button.isVisible()  # chats are saved again: the person may dismiss it
    assert len(window.chat_list.chat_ids()) == 1


def deny_writing_as_root(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Root may write anywhere: refuse writes in `folder` the way the system refuses everyone else."""
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda where, mode, **kwargs: (
        False if Path(where) == folder and mode & os.W_OK else real_access(where, mode, **kwargs)))

    def refuse(lock, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(lock.lock_file))

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_a_read_only_data_folder_shows_the_history_and_says_nothing_is_saved(qtbot, make_window, tmp_path,
                                                                              monkeypatch):
    path = tmp_path / "history" / "chats.sqlite3"
    with ChatStore(path) as store:
        store.add_user_message(store.create_chat(), "An old chat")
    path.parent.chmod(0o555)
    if os.geteuid() == 0:
        deny_writing_as_root(monkeypatch, path.parent)
    try:
        window = start_with_history(qtbot, make_window, open_history(path))
        assert window.notice.isVisible() and not window.notice.close_button.isVisible()
        assert "cannot be written" in window.notice.text.text() and "not saved" in window.notice.text.text()
        titles = [window.chat_list.list.item(row).text() for row in range(window.chat_list.list.count())]
        assert titles == ["An old chat"]
        assert not window.import_action.isEnabled()
    finally:
        path.parent.chmod(0o755)


def test_a_history_that_is_not_a_file_is_named_in_a_lasting_notice(qtbot, make_window, tmp_path):
    path = tmp_path / "history" / "chats.sqlite3"
    path.mkdir(parents=True)
    window = start_with_history(qtbot, make_window, open_history(path))
    assert window.notice.isVisible() and not window.notice.close_button.isVisible()
    assert f"{path} is not a file" in window.notice.text.text() and "not saved" in window.notice.text.text()
    assert window.chat_list is None and window.controller.chat_id is None


def test_a_history_from_a_newer_app_is_left_alone_with_a_lasting_notice(qtbot, make_window, tmp_path):
    path = tmp_path / "history" / "chats.sqlite3"
    with ChatStore(path) as store:
        store.create_chat()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    window = start_with_history(qtbot, make_window, open_history(path))
    assert window.notice.isVisible() and not window.notice.close_button.isVisible()
    assert "newer version" in window.notice.text.text() and "not saved" in window.notice.text.text()


def test_a_second_window_shows_the_history_read_only_with_a_lasting_notice(qtbot, make_window, tmp_path):
    path = tmp_path / "history" / "chats.sqlite3"
    with ChatStore(path) as writer:
        writer.add_user_message(writer.create_chat(), "From the first window")
        window = start_with_history(qtbot, make_window, open_history(path))
        assert window.notice.isVisible() and not window.notice.close_button.isVisible()
        assert "read-only" in window.notice.text.text() and "not saved" in window.notice.text.text()
        assert window.chat_list.chat_ids() == [1]
