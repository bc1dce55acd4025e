"""The app's remote mode against vLLM's server with the plugin, driven through the window as a person would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from vllm_support import CONVERSATIONS, MAX_TOKENS, xvlm_answers

from app.history.records import Status
from app.settings import Settings, SettingsFile
from app.ui.parts import build_parts
from app.ui.settings_dialog import SettingsDialog
from app.ui.window import MainWindow

WAIT_MS = 120_000  # a reply from vLLM on a busy two-core machine


@pytest.fixture(scope="module")
def event_loop(qapp) -> Iterator[asyncio.AbstractEventLoop]:
    """A qasync loop "already running" the way Qt's event loop is under pytest-qt, as the app's tests have."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-io")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    yield loop
    for task in asyncio.all_tasks(loop):
        task.cancel()
    executor.shutdown(wait=True)


@pytest.fixture
def window(qtbot, event_loop, tmp_path: Path) -> Iterator[MainWindow]:
    """The app's first start with no model here (the welcome page), answers MAX_TOKENS long as the reference's."""
    shown = MainWindow(build_parts(SettingsFile(tmp_path / "settings.json"), Settings(max_new_tokens=MAX_TOKENS),
                                   log_dir=tmp_path / "logs"))
    shown.start()
    shown.show()
    qtbot.waitExposed(shown)
    yield shown
    shown.close()
    assert not shown.model_thread.thread.isRunning()
    shown.deleteLater()


def choose_the_server(qtbot, window: MainWindow, url: str) -> None:
    """Model > Settings…: "Use a model server", type its address, fetch its models, keep the one it offers, OK."""
    chosen: list[str] = []

    def fill_in() -> None:
        dialog = next(widget for widget in QApplication.topLevelWidgets()
                      if isinstance(widget, SettingsDialog) and widget.isVisible())
        box = dialog.server_box
        box.setChecked(True)
        qtbot.keyClicks(box.address_edit, url)
        qtbot.mouseClick(box.fetch_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: box.model_combo.count() == 1, timeout=WAIT_MS)
        chosen.append(box.model_combo.currentText())
        dialog.accept()

    QTimer.singleShot(0, fill_in)
    window.settings_action.trigger()  # modal until accepted
    assert chosen == ["xmodel-vlm"]


def drop_image(window: MainWindow, path: Path) -> None:
    """Drag the file over the window and let go, as from a file manager."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    point = QPoint(window.width() // 2, window.height() // 2)
    enter = QDragEnterEvent(point, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(window, QDropEvent(QPointF(point), Qt.DropAction.CopyAction, mime,
                                              Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))


def ask_and_wait(qtbot, window: MainWindow, text: str) -> str:
    """Type the question, press Enter, and return the answer once it has streamed in whole."""
    window.composer.input.setFocus()
    qtbot.keyClicks(window.composer.input, text)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.controller.busy, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=WAIT_MS)
    answer = window.controller.messages[-1]
    assert answer.status == Status.COMPLETE
    return answer.text


@pytest.mark.slow
@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_the_window_streams_vllms_answers_as_xvlm_core_gives_them(
        qtbot, window, vllm_url, tiny_vlm, reference, tmp_path):
    qtbot.waitUntil(lambda: window.first_run.isVisible(), timeout=WAIT_MS)  # the hub here is unreachable
    choose_the_server(qtbot, window, vllm_url)
    qtbot.waitUntil(lambda: vllm_url in window.device_label.text(), timeout=WAIT_MS)
    assert window.model_label.text() == "xmodel-vlm"

    system, [message] = CONVERSATIONS["one_image"]
    assert system is None
    drop_image(window, Path(message["images"][0]))
    qtbot.waitUntil(lambda: len(window.composer.images) == 1 == len(window.composer.chips), timeout=WAIT_MS)
    first = ask_and_wait(qtbot, window, message["content"])
    assert first  # random weights say gibberish, but words: an empty answer would prove nothing
    assert first == reference["one_image"]["text"]

    # A follow-up sends the whole conversation again, the image in the earlier turn.
    follow_up = "Which one is larger?"
    second = ask_and_wait(qtbot, window, follow_up)
    [expected] = xvlm_answers(*tiny_vlm, [(None, [message, {"role": "assistant", "content": first},
                                                  {"role": "user", "content": follow_up}])], tmp_path)
    assert second and second == expected["text"]
