"""Small windows: the sidebar folds away (its button, Ctrl+B, by itself when narrow), and at 600x400 the welcome
page's main buttons and the message box's placeholder stay in sight."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QPoint, QRect, Qt
from PySide6.QtWidgets import QApplication, QWidget
from test_first_run import ScriptedDownloads

from app.history.database import ChatStore
from app.history.service import History

SMALL = (600, 400)


def resize(qtbot, window, size: tuple[int, int]) -> None:
    window.resize(*size)
    qtbot.waitUntil(lambda: (window.width(), window.height()) == size, timeout=5_000)
    QApplication.processEvents()


def in_sight(widget: QWidget, area: QWidget) -> bool:
    """Whether all of `widget` shows within `area` (a scroll area's viewport, the window)."""
    top_left = widget.mapTo(area, QPoint(0, 0))
    return widget.isVisible() and area.rect().contains(QRect(top_left, widget.size()))


def test_at_600x400_the_welcome_pages_buttons_are_in_sight(qtbot, make_window, app_settings):
    downloads = ScriptedDownloads()
    downloads.plan_released.set()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    qtbot.waitUntil(lambda: page.download_button.isEnabled(), timeout=10_000)
    resize(qtbot, window, SMALL)
    for button in (page.download_button, page.folder_button, page.server_button):
        assert in_sight(button, page.scroll_area.viewport()), button.text()
        assert in_sight(button, window.centralWidget()), button.text()


def with_history(make_window, tmp_path):
    return make_window(start=False, history=History(ChatStore(tmp_path / "history" / "chats.sqlite3")))


def test_at_600x400_the_message_box_shows_its_whole_placeholder(qtbot, make_window, tmp_path):
    window = with_history(make_window, tmp_path)
    resize(qtbot, window, SMALL)
    box = window.composer.input
    assert in_sight(box, window.centralWidget())
    room = box.viewport().width() - 2 * box.document().documentMargin()
    assert box.fontMetrics().horizontalAdvance(box.placeholderText()) <= room
    assert box.viewport().rect().contains(box.placeholder_rect())
    assert box.verticalScrollBar().maximum() == 0  # nothing to scroll: the box holds its line
    assert window.chat_list is not None and not window.chat_list.isVisible()  # folded away by itself


def test_the_sidebar_folds_away_with_its_button_and_ctrl_b(qtbot, make_window, tmp_path):
    window = with_history(make_window, tmp_path)
    resize(qtbot, window, (1100, 780))
    sidebar = window.chat_list
    assert sidebar is not None and sidebar.isVisible()
    wide = window.composer.input.width()

    assert window.sidebar_button.isVisible()
    qtbot.mouseClick(window.sidebar_button, Qt.MouseButton.LeftButton)
    assert not sidebar.isVisible() and not window.sidebar_action.isChecked()
    qtbot.waitUntil(lambda: window.composer.input.width() > wide, timeout=5_000)  # the chat takes the room
    qtbot.keyClick(window.composer.input, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)
    assert sidebar.isVisible() and window.sidebar_action.isChecked()

    resize(qtbot, window, SMALL)  # narrow: the chat alone, until Ctrl+B asks for the list
    assert not sidebar.isVisible()
    qtbot.keyClick(window.composer.input, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)
    assert sidebar.isVisible()
    resize(qtbot, window, (1100, 780))  # wide again: as the person left it there
    assert sidebar.isVisible()


def test_at_600x400_with_the_sidebar_opened_the_placeholder_wraps_and_shows_whole(qtbot, make_window, tmp_path):
    window = with_history(make_window, tmp_path)
    resize(qtbot, window, SMALL)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_B, Qt.KeyboardModifier.ControlModifier)  # by hand
    assert window.chat_list is not None and window.chat_list.isVisible()
    QApplication.processEvents()
    box = window.composer.input
    text = box.placeholder_rect()
    line = box.fontMetrics().lineSpacing()
    assert text.height() >= 2 * line  # too narrow for one line: it wraps
    assert box.viewport().rect().contains(text), (text, box.viewport().rect())
    assert in_sight(box, window.centralWidget())
    assert box.verticalScrollBar().maximum() == 0
