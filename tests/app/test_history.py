"""Chats are kept: saved as they happen, listed, reopened with their images, searched, renamed, deleted, exported."""

from __future__ import annotations

from pathlib import Path

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from test_window import ask, drop_files, wait_answered, wait_image_checked

from app.chat_controller import DONE, FAILED, STOPPED
from app.chat_list import CHAT_ID
from app.store import ChatStore
from app.worker import ModelWorker


def fake_worker(session: FakeSession | None = None) -> ModelWorker:
    session = session or FakeSession(["An ", "answer."])
    return ModelWorker(load=fake_load(), session_factory=lambda loaded: session)


def store_at(tmp_path: Path, **kwargs) -> ChatStore:
    return ChatStore(tmp_path / "history" / "chats.sqlite3", **kwargs)


def chat_with_image(qtbot, window, image: Path, question: str) -> None:
    drop_files(window, image)
    wait_image_checked(qtbot, window)
    ask(qtbot, window, question)
    wait_answered(qtbot, window)


def test_two_chats_survive_a_new_window_and_reopen_with_their_images(qtbot, make_window, tmp_path, images_dir):
    session = FakeSession(["An ", "answer."])
    first = make_window(fake_worker(session), store=store_at(tmp_path))
    chat_with_image(qtbot, first, images_dir / "gradient_square.png", "What colours are these?")
    qtbot.keyClick(first.composer.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    chat_with_image(qtbot, first, images_dir / "shapes_wide.png", "How many shapes?")
    assert [first.chat_list.list.item(row).text() for row in range(2)] == ["How many shapes?",
                                                                           "What colours are these?"]
    first.close()

    session = FakeSession(["Still ", "here."])
    second = make_window(fake_worker(session), store=store_at(tmp_path))
    titles = [second.chat_list.list.item(row).text() for row in range(second.chat_list.list.count())]
    assert titles == ["How many shapes?", "What colours are these?"]
    qtbot.mouseClick(second.chat_list.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=second.chat_list.list.visualItemRect(second.chat_list.list.item(1)).center())
    messages = second.controller.messages
    assert [(message.role, message.text) for message in messages] == [
        ("user", "What colours are these?"), ("assistant", "An answer.")]
    stored_image = Path(messages[0].image)
    assert stored_image.is_file() and stored_image.read_bytes() == (images_dir / "gradient_square.png").read_bytes()
    assert not second.view.widgets[0].thumbnail.pixmap().isNull()
    assert second.windowTitle().startswith("What colours are these?")

    ask(qtbot, second, "And now?")
    wait_answered(qtbot, second)
    assert [(message.text, message.images) for message in session.calls[-1]] == [
        ("What colours are these?", [str(stored_image)]), ("An answer.", []), ("And now?", [])]
    reopened = store_at(tmp_path, read_only=True).load_chat(second.controller.chat_id)
    assert [message.text for message in reopened.messages] == ["What colours are these?", "An answer.", "And now?",
                                                                "Still here."]


def test_the_question_is_saved_before_answering_and_the_answer_while_it_streams(qtbot, make_window, tmp_path):
    session = FakeSession([f"w{i} " for i in range(300)], delay_s=0.01)
    window = make_window(fake_worker(session), store=store_at(tmp_path, stream_write_interval=0.05))
    ask(qtbot, window, "Tell me a long story")
    chat_id = window.controller.chat_id
    reader = store_at(tmp_path, read_only=True)
    assert reader.load_chat(chat_id).messages[0].role == "user"
    qtbot.waitUntil(lambda: len(reader.load_chat(chat_id).messages[-1].text) > 20, timeout=5000)
    streaming = reader.load_chat(chat_id).messages[-1]
    assert streaming.status == "streaming" and window.controller.busy
    window.controller.stop()
    wait_answered(qtbot, window, STOPPED)
    saved = reader.load_chat(chat_id).messages[-1]
    assert (saved.status, saved.text) == ("stopped", window.controller.messages[-1].text)
    reader.close()


def test_a_failed_answer_is_saved_as_failed(qtbot, make_window, tmp_path):
    window = make_window(ModelWorker(load=fake_load(error=RuntimeError("no"))), store=store_at(tmp_path))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=5000)
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window, FAILED)
    chat_id = window.controller.chat_id
    window.close()
    chat = store_at(tmp_path).load_chat(chat_id)
    assert chat.messages[-1].status == "failed" and "No model is loaded" in chat.messages[-1].stats["error"]


def test_regenerate_and_edit_replace_what_is_saved(qtbot, make_window, tmp_path):
    session = FakeSession(["one"])
    window = make_window(fake_worker(session), store=store_at(tmp_path))
    ask(qtbot, window, "First question")
    wait_answered(qtbot, window)
    ask(qtbot, window, "Second question")
    wait_answered(qtbot, window)
    session.deltas = ["two"]
    window.controller.regenerate()
    wait_answered(qtbot, window)
    window.controller.edit(2, "Second question, edited", None)
    wait_answered(qtbot, window, DONE)
    chat_id = window.controller.chat_id
    window.close()
    saved = [(message.role, message.text) for message in store_at(tmp_path).load_chat(chat_id).messages]
    assert saved == [("user", "First question"), ("assistant", "one"), ("user", "Second question, edited"),
                     ("assistant", "two")]


def test_search_finds_a_message_and_jumps_to_it(qtbot, make_window, tmp_path):
    session = FakeSession(["Penguins ", "live ", "in ", "the ", "south."])
    window = make_window(fake_worker(session), store=store_at(tmp_path))
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
    window = make_window(fake_worker(), store=store_at(tmp_path))
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
    window = make_window(fake_worker(), store=store_at(tmp_path))
    chat_with_image(qtbot, window, images_dir / "gradient_square.png", "Export me")
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(exports))
    window.export_markdown_action.trigger()
    window.export_json_action.trigger()
    markdown = next(exports.glob("*.md"))
    assert "Export me" in markdown.read_text() and "An answer." in markdown.read_text()
    exported_json = next(exports.glob("*.json"))

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(exported_json), ""))
    before = window.controller.chat_id
    import_action = next(action for action in window.menuBar().actions()[0].menu().actions()
                         if action.text() == "&Import Chat…")
    import_action.trigger()
    assert window.controller.chat_id != before
    assert [message.text for message in window.controller.messages] == ["Export me", "An answer."]
    assert Path(window.controller.messages[0].image).is_file()
    assert len(window.chat_list.chat_ids()) == 2


def test_a_damaged_history_is_set_aside_with_a_notice(qtbot, make_window, tmp_path):
    path = tmp_path / "history" / "chats.sqlite3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    window = make_window(fake_worker(), store=ChatStore(path))
    assert window.banner.isVisible()
    assert "could not be read" in window.banner.text.text() and ".corrupt-" in window.banner.text.text()
    ask(qtbot, window, "Still works?")
    wait_answered(qtbot, window)
    assert len(window.chat_list.chat_ids()) == 1


def test_an_attached_image_is_copied_into_the_history_before_send(qtbot, make_window, tmp_path, images_dir,
                                                                  monkeypatch):
    import app.store as store_module

    store = store_at(tmp_path)
    window = make_window(fake_worker(), store=store)
    drop_files(window, images_dir / "shapes_wide.png")
    wait_image_checked(qtbot, window)
    assert len(list(store.images_dir.glob("*.thumb.jpg"))) == 1  # prepared off the UI thread while checked

    def no_decoding_on_send(data, name):
        raise AssertionError("the image was decoded again when the question was sent")

    monkeypatch.setattr(store_module, "_thumbnail", no_decoding_on_send)
    ask(qtbot, window, "How many shapes?")
    wait_answered(qtbot, window)
    (saved,) = store.load_chat(window.controller.chat_id).messages[0].images
    assert saved.read_bytes() == (images_dir / "shapes_wide.png").read_bytes()
