"""The keyboard: every tab stop shows the focus; a chat chosen in the sidebar keeps F2 and Delete; typing goes on."""

from __future__ import annotations

import pytest
from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QWidget

from app.chat.chat_list import RENAME_DIALOG_WIDTH, RenameDialog
from app.history.database import ChatStore
from app.history.records import Status
from app.history.service import History
from app.model.worker import ModelWorker
from xvlm_core.messages import ImageRef


def history_window(make_window, tmp_path, deltas: list[str] | None = None):
    session = FakeSession(deltas or ["An ", "answer."])
    return make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: session),
                       history=History(ChatStore(tmp_path / "history" / "chats.sqlite3")))


def answer(qtbot, window, text: str, images: tuple[ImageRef, ...] = ()) -> None:
    qtbot.waitUntil(lambda: window.controller.phase.value == "ready", timeout=20_000)
    assert window.controller.send(text, images)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=20_000)
    assert window.controller.messages[-1].status == Status.COMPLETE


def tab_stops(window: QWidget) -> list[QWidget]:
    """The widgets the focus chain offers Tab: shown, enabled, taking focus by Tab."""
    stops, widget = [], window.nextInFocusChain()
    while widget is not window:
        if (widget.focusPolicy() & Qt.FocusPolicy.TabFocus) and widget.isVisible() and widget.isEnabled() \
                and widget.focusProxy() is None:
            stops.append(widget)
        widget = widget.nextInFocusChain()
    return stops


def test_every_tab_stop_is_reached_and_shows_that_it_has_the_focus(qtbot, make_window, tmp_path, images_dir):
    window = history_window(make_window, tmp_path, ["A plain answer, then ", "```\ncode\n```"])
    answer(qtbot, window, "Hi", (ImageRef.from_file(images_dir / "gradient_square.png"),))
    window.controller.new_chat()
    window.chat_list.refresh()
    window.open_chat(window.chat_list.chat_ids()[0])  # a chat with a picture, a plain answer and a code block
    qtbot.wait(50)  # the view lays the messages out
    reached, unmarked = set(), []
    start = QApplication.focusWidget()
    assert start is window.composer.input
    for _ in range(80):  # Tab around the window once
        widget = QApplication.focusWidget()
        focused = widget.grab().toImage()
        qtbot.keyClick(widget, Qt.Key.Key_Tab)
        if QApplication.focusWidget() is not widget and focused == widget.grab().toImage():
            unmarked.append(f"{type(widget).__name__} '{widget.accessibleName()}'")
        reached.add(widget)
        if QApplication.focusWidget() is start:
            break
    assert QApplication.focusWidget() is start
    assert unmarked == []
    assert {f"{type(w).__name__} '{w.accessibleName()}'" for w in tab_stops(window) if w not in reached} == set()


def click_chat(qtbot, window, row: int) -> None:
    chat_list = window.chat_list.list
    qtbot.mouseClick(chat_list.viewport(), Qt.MouseButton.LeftButton, pos=chat_list.visualItemRect(
        chat_list.item(row)).center())


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_a_clicked_chat_keeps_the_focus_for_f2_and_delete(qtbot, make_window, tmp_path):
    window = history_window(make_window, tmp_path)
    answer(qtbot, window, "Alpha question")
    window.new_chat()
    answer(qtbot, window, "Beta question")
    chats = window.chat_list.chat_ids()  # the newest first: beta, alpha
    click_chat(qtbot, window, 1)
    assert window.controller.chat_id == chats[1]
    assert window.chat_list.list.hasFocus()

    seen = []

    def rename_in_dialog():
        dialog = QApplication.activeModalWidget()
        try:
            seen.append((type(dialog).__name__, dialog.name_edit.width(), dialog.name_edit.selectedText()))
            qtbot.keyClicks(dialog.name_edit, "Alpha, renamed")  # typing replaces the selected old name
            qtbot.keyClick(dialog.name_edit, Qt.Key.Key_Return)
        finally:
            if dialog.isVisible():
                dialog.reject()

    QTimer.singleShot(0, rename_in_dialog)
    qtbot.keyClick(window.chat_list.list, Qt.Key.Key_F2)
    assert len(seen) == 1
    kind, width, selected = seen[0]
    assert kind == RenameDialog.__name__ and width >= RENAME_DIALOG_WIDTH and selected == "Alpha question"
    assert window.controller.title == "Alpha, renamed" and window.windowTitle().startswith("Alpha, renamed")

    window.activateWindow()  # offscreen, the closed dialog does not give the activation back by itself
    qtbot.waitUntil(lambda: window.chat_list.list.hasFocus(), timeout=3000)
    qtbot.keyClick(window.chat_list.list, Qt.Key.Key_Delete)
    assert window.chat_list.chat_ids() == [chats[0]] and window.chat_list.undo_bar.isVisible()
    assert window.controller.chat_id is None  # the chat on screen was the one deleted


def test_typing_after_choosing_a_chat_writes_in_the_message_box(qtbot, make_window, tmp_path):
    window = history_window(make_window, tmp_path)
    answer(qtbot, window, "Alpha question")
    window.new_chat()
    click_chat(qtbot, window, 0)
    qtbot.keyClicks(window.chat_list.list, "And then?")
    assert window.composer.text == "And then?" and window.composer.input.hasFocus()


def test_delete_in_the_message_box_deletes_text_not_the_chat(qtbot, make_window, tmp_path):
    window = history_window(make_window, tmp_path)
    answer(qtbot, window, "Alpha question")
    qtbot.keyClicks(window.composer.input, "typo")
    window.composer.input.moveCursor(window.composer.input.textCursor().MoveOperation.Start)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_Delete)
    assert window.composer.text == "ypo" and len(window.chat_list.chat_ids()) == 1
