"""The chat window driven as a person would: drop or paste an image, type, Enter, watch, stop, redo, edit."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from fakes import FakeSession, Heartbeat, SlowSession, fake_load
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage
from PySide6.QtWidgets import QApplication, QLabel

from app.chat.controller import ModelPhase
from app.history.records import Status
from app.model.worker import CHUNKS_PER_SECOND, ModelWorker, import_core
from xvlm_core.load_options import LoadOptions


def drop_files(window, *paths: Path) -> bool:
    """Drag files over the window and let go, as a file manager would; True if the window took the drag."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    return drop_mime(window, mime)


def drop_mime(window, mime: QMimeData) -> bool:
    point = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(QPointF(point), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)
    return True


def ask(qtbot, window, text: str) -> None:
    """Type into the message box and press Enter."""
    window.composer.input.setFocus()
    qtbot.keyClicks(window.composer.input, text)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_Return)


def wait_ready(qtbot, window) -> None:
    qtbot.waitUntil(lambda: window.controller.phase is ModelPhase.READY, timeout=20_000)


def wait_answered(qtbot, window, status: str = Status.COMPLETE) -> None:
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=20_000)
    assert window.controller.messages[-1].status == status


def wait_image_checked(qtbot, window, count: int = 1) -> None:
    """Until the composer holds `count` images, all checked."""
    qtbot.waitUntil(lambda: len(window.composer.images) == count == len(window.composer.chips), timeout=20_000)


def sent_bytes(message) -> list[bytes]:
    """The bytes of a message's images (the history's copies), in order."""
    return [Path(image.path).read_bytes() for image in message.images]


def core_answer(model_dir: Path, tower_dir: Path, conversation: list[tuple[str, str, list[str]]], max_new_tokens=24):
    """What xvlm_core answers for the same conversation, without the app."""
    from xvlm_core.engines.pytorch.loading import load_model
    from xvlm_core.engines.pytorch.session import ChatSession
    from xvlm_core.model.prompt import Message
    from xvlm_core.sampling import SamplingSettings

    session = ChatSession(load_model(str(model_dir), str(tower_dir), dtype="float32"))
    messages = [Message(role, text, images) for role, text, images in conversation]
    answer = session.answer(messages, SamplingSettings(max_new_tokens=max_new_tokens))
    return "".join(answer)


def test_drop_an_image_ask_and_the_answer_streams_in_as_the_core_says(
        qtbot, make_window, images_dir, tiny_model_dir, tiny_tower_dir):
    window = make_window(ModelWorker(session_factory=lambda loaded: SlowSession(loaded, delay_s=0.02)))
    image = images_dir / "gradient_square.png"
    assert drop_files(window, image)
    wait_image_checked(qtbot, window)
    assert [chip.path for chip in window.composer.chips] == [str(image)]

    answer_widget_texts: list[str] = []
    window.controller.message_changed.connect(
        lambda index: answer_widget_texts.append(window.controller.messages[index].text))
    ask(qtbot, window, "What is in this picture?")
    assert window.composer.text == "" and not window.composer.chips and not window.composer.chip_bar.isVisible()
    wait_answered(qtbot, window)

    user, answer = window.controller.messages
    assert (user.text, sent_bytes(user)) == ("What is in this picture?", [image.read_bytes()])
    expected = core_answer(tiny_model_dir, tiny_tower_dir, [("user", "What is in this picture?", [str(image)])])
    assert answer.text == expected
    partials = [text for text in dict.fromkeys(answer_widget_texts) if text and text != expected]
    assert len(partials) >= 3 and all(expected.startswith(text) for text in partials)
    bubble = window.view.widgets[-1]
    assert bubble.body.markdown_source == expected
    assert "to first token" in bubble.footer.text() and "tokens/s" in bubble.footer.text()
    assert not window.view.widgets[0].thumbnails[0].pixmap().isNull()  # the picture itself is shown
    assert window.windowTitle().startswith("What is in this picture?")


def test_a_follow_up_sends_the_whole_conversation(qtbot, make_window, images_dir, tiny_model_dir, tiny_tower_dir):
    window = make_window()
    image = str(images_dir / "shapes_wide.png")
    drop_files(window, Path(image))
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "Describe it.")
    wait_answered(qtbot, window)
    first = window.controller.messages[1].text
    ask(qtbot, window, "And the colours?")
    wait_answered(qtbot, window)
    expected = core_answer(tiny_model_dir, tiny_tower_dir, [
        ("user", "Describe it.", [image]), ("assistant", first, []), ("user", "And the colours?", [])])
    assert window.controller.messages[-1].text == expected
    assert [widget.message.role for widget in window.view.widgets] == ["user", "assistant"] * 2


def test_paste_an_image_from_the_clipboard(qtbot, make_window, images_dir):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()))
    QGuiApplication.clipboard().setImage(QImage(str(images_dir / "shapes_wide.png")))
    window.composer.input.setFocus()
    qtbot.keyClick(window.composer.input, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    wait_image_checked(qtbot, window)
    pasted = Path(window.composer.chips[0].path)
    assert pasted.suffix == ".png" and QImage(str(pasted)).size() == QImage(str(images_dir / "shapes_wide.png")).size()
    assert window.composer.text == ""  # the image went to a chip, not into the text
    ask(qtbot, window, "What shapes?")
    wait_answered(qtbot, window)
    assert sent_bytes(window.controller.messages[0]) == [pasted.read_bytes()]


def test_image_data_dragged_from_a_browser_is_saved_to_a_file(qtbot, make_window, images_dir):
    window = make_window(start=False)
    mime = QMimeData()
    mime.setImageData(QImage(str(images_dir / "gradient_square.png")))
    mime.setUrls([QUrl("https://example.org/cat.png")])
    assert drop_mime(window, mime)
    wait_image_checked(qtbot, window)
    assert Path(window.composer.chips[0].path).is_file()


def test_a_removed_chip_is_not_sent(qtbot, make_window, images_dir):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()))
    drop_files(window, images_dir / "gradient_square.png")
    wait_image_checked(qtbot, window)
    qtbot.mouseClick(window.composer.chips[0].remove_button, Qt.MouseButton.LeftButton)
    assert not window.composer.chips and not window.composer.chip_bar.isVisible()
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window)
    assert window.controller.messages[0].images == ()


def test_dropping_a_text_file_says_so_inline(qtbot, make_window, tmp_path):
    window = make_window(start=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    drop_files(window, notes)
    assert window.composer.notice.isVisible()
    assert "notes.txt" in window.composer.notice.text() and "not an image" in window.composer.notice.text()
    assert not window.composer.chips
    assert QApplication.activeModalWidget() is None


def test_dropping_a_truncated_png_says_so_inline(qtbot, make_window, tmp_path, images_dir):
    window = make_window(start=False)
    whole = (images_dir / "gradient_square.png").read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(whole[: len(whole) // 2])
    drop_files(window, broken)
    qtbot.waitUntil(lambda: window.composer.notice.isVisible(), timeout=20_000)
    assert "broken.png" in window.composer.notice.text() and "truncated" in window.composer.notice.text()
    assert not window.composer.chips and not window.composer.chip_bar.isVisible()
    assert QApplication.activeModalWidget() is None


def test_stop_mid_answer_keeps_the_text_so_far(qtbot, make_window):
    session = FakeSession([f"word{i} " for i in range(400)], delay_s=0.02)  # 8 s if not stopped
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: session))
    wait_ready(qtbot, window)
    ask(qtbot, window, "Talk for a long time")
    qtbot.waitUntil(lambda: len(window.controller.messages[-1].text) > 20)
    assert window.composer.send_button.accessibleName() == "Stop"
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=500)
    answer = window.controller.messages[-1]
    assert answer.status == Status.STOPPED
    assert answer.text and answer.text in "".join(session.deltas) and len(answer.text) < 400 * 6
    assert window.view.widgets[-1].footer.text().startswith("Stopped")
    assert window.composer.send_button.accessibleName() == "Send"


def test_escape_stops_the_answer(qtbot, make_window):
    session = FakeSession([f"word{i} " for i in range(400)], delay_s=0.02)
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: session))
    wait_ready(qtbot, window)
    ask(qtbot, window, "Talk")
    qtbot.waitUntil(lambda: bool(window.controller.messages[-1].text))
    qtbot.keyClick(window.composer.input, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=500)
    assert window.controller.messages[-1].status == Status.STOPPED


def test_regenerate_replaces_the_last_answer(qtbot, make_window):
    sessions: list[FakeSession] = []

    def new_session(_loaded):
        sessions.append(FakeSession(["first ", "answer"]))
        return sessions[-1]

    window = make_window(ModelWorker(load=fake_load(), session_factory=new_session))
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    sessions[0].deltas = ["second ", "answer"]
    regenerate = window.view.widgets[-1].regenerate_button
    assert regenerate.isVisible()
    qtbot.mouseClick(regenerate, Qt.MouseButton.LeftButton)
    wait_answered(qtbot, window)
    assert [message.text for message in window.controller.messages] == ["Hi", "second answer"]
    assert len(window.view.widgets) == 2
    assert [[message.text for message in call] for call in sessions[0].calls] == [["Hi"], ["Hi"]]


def test_edit_an_earlier_message_and_resend_replaces_what_followed(qtbot, make_window, images_dir):
    session = FakeSession(["an ", "answer"])
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: session))
    image = str(images_dir / "gradient_square.png")
    drop_files(window, Path(image))
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "What colour is it?")
    wait_answered(qtbot, window)
    ask(qtbot, window, "Are you sure?")
    wait_answered(qtbot, window)

    qtbot.mouseClick(window.view.widgets[0].edit_button, Qt.MouseButton.LeftButton)
    assert window.composer.text == "What colour is it?" and window.composer.edit_bar.isVisible()
    wait_image_checked(qtbot, window)
    window.composer.input.selectAll()
    ask(qtbot, window, "Which colours are in it?")
    wait_answered(qtbot, window)

    assert [(message.role, message.text) for message in window.controller.messages] == [
        ("user", "Which colours are in it?"), ("assistant", "an answer")]
    (sent,) = session.calls[-1]
    assert sent == window.controller.messages[0].message  # the core gets the edited message, frozen
    assert (sent.text, sent_bytes(sent)) == ("Which colours are in it?", [Path(image).read_bytes()])
    assert len(window.view.widgets) == 2 and not window.composer.edit_bar.isVisible()


def test_a_question_sent_while_loading_waits_visibly_then_is_answered(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(delay_s=0.6), session_factory=lambda loaded: FakeSession()))
    qtbot.waitUntil(lambda: window.controller.phase is ModelPhase.LOADING)
    ask(qtbot, window, "Are you there?")
    answer_view = window.view.widgets[-1]
    assert "Waiting for the model" in answer_view.body.toPlainText()
    assert window.load_progress.isVisible()
    wait_answered(qtbot, window)
    assert window.controller.messages[-1].text.startswith("word0")
    assert not window.load_progress.isVisible() and window.model_label.text() == "xmodel-vlm-tiny"


def test_a_model_that_fails_to_load_shows_a_banner(qtbot, make_window, tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama"}')
    window = make_window(model=str(bad))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "could not be loaded" in window.banner.text.text() and str(bad) in window.banner.text.text()
    assert "Traceback" not in window.banner.text.text()
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window, Status.FAILED)
    assert "No model is loaded" in window.view.widgets[-1].footer.text()


def test_the_ui_thread_never_blocks_on_model_work(qtbot, make_window, images_dir, tiny_model_dir):
    """Load the real tiny model and stream a slow answer (24 tokens, 50 ms each) while a 5 ms heartbeat runs on
    the UI thread. Counted, not timed: every piece of model work records the thread it ran on, and none may be
    the UI thread; and the heartbeat must keep ticking while the model loads and while the answer streams (work
    done on the UI thread would hold the timer back until it ended)."""
    # Importing torch holds the interpreter lock for up to ~0.2 s at a time, whichever thread imports it;
    # that happens once per process, before the model loads, and is not what this test is about.
    import_core("xvlm_core.engines.pytorch.loading")
    work: list[tuple[str, threading.Thread, int]] = []  # (what, thread, heartbeat ticks when it happened)
    heartbeat = Heartbeat()

    def record(what: str) -> None:
        work.append((what, threading.current_thread(), heartbeat.ticks))

    def session_factory(loaded):  # called by the worker as its load ends
        record("loaded")
        return SlowSession(loaded, delay_s=0.05, on_delta=lambda: record("delta"))

    window = make_window(ModelWorker(session_factory=session_factory), start=False)
    with heartbeat:
        record("started")
        window.start_task = asyncio.ensure_future(window.start(LoadOptions(str(tiny_model_dir))))
        drop_files(window, images_dir / "gradient_square.png")
        wait_image_checked(qtbot, window)
        wait_ready(qtbot, window)
        ask(qtbot, window, "What is it?")
        wait_answered(qtbot, window)
    assert len(window.controller.messages[-1].text) > 0
    deltas = [ticks for what, _thread, ticks in work if what == "delta"]
    assert len(deltas) >= 10
    assert [thread is threading.main_thread() for what, thread, _ticks in work if what != "started"] == [False] * (
        len(deltas) + 1)
    started, loaded = (ticks for what, _thread, ticks in work if what in ("started", "loaded"))
    assert loaded > started, "the UI thread stood still while the model loaded"
    assert deltas[-1] > deltas[0], "the UI thread stood still while the answer streamed"
    print(f"UI heartbeat: {heartbeat.ticks} ticks, {loaded - started} during the load, "
          f"{deltas[-1] - deltas[0]} during {len(deltas)} deltas; longest gap {heartbeat.max_gap_ms} ms")


def test_the_view_follows_new_text_only_when_at_the_bottom(qtbot, make_window):
    lines = [f"line {i}\n\n" for i in range(120)]
    session = FakeSession(lines, delay_s=0.01)
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: session))
    bar = window.view.verticalScrollBar()
    ask(qtbot, window, "Count")
    qtbot.waitUntil(lambda: bar.maximum() > 200, timeout=5000)
    qtbot.waitUntil(lambda: bar.value() == bar.maximum() and bar.maximum() > 400, timeout=5000)
    bar.setValue(0)  # the person scrolls up to read
    assert not window.view.following
    wait_answered(qtbot, window)
    assert bar.value() == 0 and bar.maximum() > 1000


def test_new_chat_clears_the_conversation(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()))
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.controller.messages == [] and window.view.widgets == []
    assert window.windowTitle().startswith("New chat")


def test_shift_enter_makes_a_new_line_instead_of_sending(qtbot, make_window):
    window = make_window(start=False)
    qtbot.keyClicks(window.composer.input, "line one")
    qtbot.keyClick(window.composer.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(window.composer.input, "line two")
    assert window.composer.text == "line one\nline two" and window.controller.messages == []


def test_copy_message_puts_the_answer_on_the_clipboard(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession(["**bold** ", "x"])))
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    qtbot.mouseClick(window.view.widgets[-1].copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == "**bold** x"


def test_only_the_growing_answer_is_rendered_and_at_most_once_per_chunk(qtbot, make_window, monkeypatch):
    session = FakeSession(["first ", "answer"])
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: session))
    ask(qtbot, window, "One")
    wait_answered(qtbot, window)
    earlier = window.view.widgets[1]
    renders: list[str] = []
    earlier.body.show_markdown = lambda text: renders.append(text)  # any re-render of the finished answer
    refreshes: list[object] = []
    refresh = type(earlier).refresh

    def counted(widget, *args):
        refreshes.append(widget)
        return refresh(widget, *args)

    monkeypatch.setattr(type(earlier), "refresh", counted)
    session.deltas, session.delay_s = [f"w{i} " for i in range(150)], 0.004  # ~250 deltas a second
    started = time.monotonic()
    ask(qtbot, window, "Two")
    wait_answered(qtbot, window)
    elapsed = time.monotonic() - started
    assert renders == []
    streamed_renders = sum(widget is window.view.widgets[-1] for widget in refreshes)
    assert 3 <= streamed_renders <= CHUNKS_PER_SECOND * elapsed + 4


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_clicking_a_thumbnail_shows_the_image_large(qtbot, make_window, images_dir):
    from app.chat.conversation_view import ImageViewer

    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()))
    drop_files(window, images_dir / "shapes_wide.png")
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "Shapes?")
    wait_answered(qtbot, window)
    qtbot.mouseClick(window.view.widgets[0].thumbnails[0], Qt.MouseButton.LeftButton)
    viewer = window.findChild(ImageViewer)
    assert viewer is not None and viewer.isVisible()
    label_pixmap = viewer.findChild(QLabel).pixmap()
    assert label_pixmap.width() == 500  # the image at its own size (it fits the screen)
    qtbot.keyClick(viewer, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: window.findChild(ImageViewer) is None or not viewer.isVisible())


def test_an_image_that_cannot_be_kept_says_so_and_sending_still_works(qtbot, make_window, images_dir):
    window = make_window(start=False)

    def disk_full(path):
        raise OSError(28, "No space left on device")

    window.composer.prepare_image = disk_full
    drop_files(window, images_dir / "gradient_square.png")
    qtbot.waitUntil(lambda: window.composer.notice.isVisible(), timeout=20_000)
    assert "gradient_square.png" in window.composer.notice.text()
    assert "No space left on device" in window.composer.notice.text()
    assert not window.composer.chips and not window.composer.chip_bar.isVisible()
