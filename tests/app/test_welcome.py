"""The welcome (first-run) page as a person meets it: it comes first without the chat flashing by, a server or a
folder leads to the chat, its errors read as sentences."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import SilentServer
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QFileDialog, QWidget
from test_first_run import ScriptedDownloads, click
from test_window import wait_ready

from app.error_text import error_text
from app.settings import SettingsFile
from app.theme import error_colour
from app.ui.parts import build_parts
from app.ui.settings_dialog import SettingsDialog
from app.ui.window import MainWindow
from xvlm_core.errors import Problem, Remedy
from xvlm_core.load_options import LoadOptions


@pytest.fixture
def scripted() -> Iterator[list[ScriptedDownloads]]:
    """Scripted hub calls for a test; afterwards their waits are let go, so no planning thread outlives the test."""
    made: list[ScriptedDownloads] = []
    yield made
    for downloads in made:
        downloads.plan_released.set()
        getattr(downloads, "looked", downloads.plan_released).set()


class SlowToLookDownloads(ScriptedDownloads):
    """Looking for the model in the hub's cache takes until `looked` is set (a slow disk, a cold import)."""

    def __init__(self) -> None:
        super().__init__()
        self.looked = threading.Event()

    def installed_folder(self, spec):
        self.looked.wait(30)
        return None


@pytest.fixture
def launch(qtbot, event_loop, tmp_path: Path, app_settings) -> Iterator:
    """Start a window the way app/main.py does: start() first, then show(). Closed afterwards."""
    windows: list[MainWindow] = []

    def make(downloads, settings=None, model: str = "") -> MainWindow:
        window = MainWindow(build_parts(SettingsFile(tmp_path / "settings.json"),
                                        settings or replace(app_settings, model=""), downloads=downloads,
                                        log_dir=tmp_path / "logs"))
        windows.append(window)
        window.start_task = window.start(LoadOptions(model))
        window.show()
        qtbot.waitExposed(window)
        return window

    yield make
    for window in windows:
        window.close()
        assert not window.model_thread.thread.isRunning()
        window.deleteLater()


def type_keys(qtbot, window: MainWindow, text: str) -> None:
    """Keys as a person types them: to whatever has the focus in the window."""
    window.activateWindow()
    target = QApplication.focusWidget() or window.focusWidget() or window
    qtbot.keyClicks(target, text)


def test_the_chat_never_shows_before_the_welcome_page_and_keys_typed_meanwhile_go_nowhere(
        qtbot, launch, tiny_model_dir, monkeypatch, scripted):
    downloads = SlowToLookDownloads()
    scripted.append(downloads)
    window = launch(downloads)
    shown: list[QWidget] = [window.pages.currentWidget()]
    window.pages.currentChanged.connect(lambda _index: shown.append(window.pages.currentWidget()))
    assert not window.chat_page.isVisible()
    type_keys(qtbot, window, "typed before the page came")

    downloads.looked.set()
    qtbot.waitUntil(lambda: window.first_run.isVisible(), timeout=10_000)
    assert window.chat_page not in shown  # the chat never showed before the welcome page
    # On the welcome page, Ctrl+L ("to the message box") and typing do not reach the box out of sight.
    qtbot.keyClick(QApplication.focusWidget() or window, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert not window.composer.input.hasFocus()
    type_keys(qtbot, window, "typed on the welcome page")

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tiny_model_dir))
    click(qtbot, window.first_run.folder_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=10_000)
    wait_ready(qtbot, window)
    assert window.composer.text == ""
    assert window.composer.input.hasFocus()
    qtbot.keyClicks(window.composer.input, "now")
    assert window.composer.text == "now"


def test_a_model_folder_here_opens_the_chat_at_once(qtbot, launch, tiny_model_dir, scripted):
    scripted.append(ScriptedDownloads())
    window = launch(scripted[0], model=str(tiny_model_dir))
    assert window.chat_page.isVisible() and window.composer.isEnabled()
    wait_ready(qtbot, window)


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_use_a_model_server_from_the_welcome_page_goes_straight_to_the_chat(
        qtbot, make_window, app_settings, tmp_path, scripted):
    scripted.append(ScriptedDownloads())
    with SilentServer() as server:
        window = make_window(settings=replace(app_settings, model=""), model="", downloads=scripted[0])
        page = window.first_run
        qtbot.waitUntil(lambda: page.isVisible() and page.server_button.isEnabled(), timeout=10_000)
        click(qtbot, page.server_button)
        qtbot.waitUntil(lambda: window.server_dialog is not None and window.server_dialog.isVisible(), timeout=5_000)
        dialog = window.server_dialog
        ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
        assert not ok.isEnabled()  # no address yet
        assert dialog.focusWidget() is dialog.box.address_edit
        qtbot.keyClicks(dialog.box.address_edit, server.url)
        click(qtbot, ok)

        qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=10_000)
        qtbot.waitUntil(lambda: server.url in window.device_label.text(), timeout=20_000)
        assert window.model_label.text() == "silent-model"
        assert window.composer.isEnabled() and window.new_chat_action.isEnabled()
        saved = SettingsFile(tmp_path / "settings.json").load()
        assert saved.use_server and saved.server_url == server.url


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_turning_the_server_on_in_settings_while_the_welcome_page_shows_opens_the_chat(
        qtbot, make_window, app_settings, tmp_path):
    downloads = ScriptedDownloads()
    with SilentServer() as server:
        window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
        qtbot.waitUntil(lambda: window.first_run.isVisible(), timeout=10_000)
        downloads.plan_released.set()
        qtbot.waitUntil(lambda: window.first_run.download_button.isEnabled(), timeout=10_000)

        def use_the_server() -> None:
            dialog = next(widget for widget in QApplication.topLevelWidgets()
                          if isinstance(widget, SettingsDialog) and widget.isVisible())
            dialog.server_box.setChecked(True)
            qtbot.keyClicks(dialog.server_box.address_edit, server.url)
            dialog.accept()

        QTimer.singleShot(0, use_the_server)
        window.settings_action.trigger()  # Model > Settings…, modal until accepted
        qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=10_000)
        qtbot.waitUntil(lambda: server.url in window.device_label.text(), timeout=20_000)
        window.new_chat_action.trigger()
        assert window.chat_page.isVisible() and window.focusWidget() is window.composer.input


def test_a_folder_chosen_on_the_welcome_page_goes_straight_to_the_chat(
        qtbot, make_window, app_settings, tiny_model_dir, monkeypatch, scripted):
    scripted.append(ScriptedDownloads())
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=scripted[0])
    qtbot.waitUntil(lambda: window.first_run.isVisible(), timeout=10_000)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tiny_model_dir))
    click(qtbot, window.first_run.folder_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=10_000)
    wait_ready(qtbot, window)


def test_a_hub_error_is_a_sentence_in_the_error_colour_with_the_details_folded_away(qtbot, make_window, app_settings):
    from xvlm_core import hub

    downloads = ScriptedDownloads()
    details = "Cannot reach the model hub at 127.0.0.1:9 (ConnectError: [Errno 111] Connection refused, 6 tries)."
    downloads.plan_error = hub.DownloadError(details, "unreachable")
    downloads.plan_released.set()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=10_000)
    note = page.error_note
    assert note.isVisible() and not page.status_label.isVisible()
    assert note.headline.text() == error_text(Problem(Remedy.CHECK_NETWORK, details)).headline
    assert "Errno" not in note.headline.text() and "ConnectError" not in note.headline.text()
    assert note.headline.palette().color(QPalette.ColorRole.WindowText).name() == error_colour().name()
    assert not note.icon_label.pixmap().isNull()
    assert not note.details.isVisible()
    click(qtbot, note.details_button)
    assert note.details.isVisible() and note.details.text() == details
    assert page.size_label.text() == "Not known: the model hub has not said"

    # Asked again: "Size" says the hub is being asked, and the error gives way to what the page does now.
    downloads.plan_error = None
    downloads.plan_released.clear()
    click(qtbot, page.retry_button)
    assert page.size_label.text() == "Asking the model hub…"
    assert not note.isVisible() and page.status_label.isVisible()
    downloads.plan_released.set()
    qtbot.waitUntil(lambda: page.download_button.isEnabled(), timeout=10_000)
    assert page.size_label.text() == "2.0 GB"
