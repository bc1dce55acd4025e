"""Small things people see: pasted images' names, image limits, the settings dialog, Help > About and the log folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeSession, fake_load
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtGui import QDesktopServices, QGuiApplication, QImage
from PySide6.QtWidgets import QLabel, QPushButton, QWidget
from test_window import drop_files, wait_image_checked, wait_ready

from app.model.transfer_bar import TransferBar
from app.model.worker import ModelWorker
from app.settings import MAX_ANSWER_TOKENS, Settings
from app.ui.settings_dialog import SettingsDialog


def paste(qtbot, window, image: QImage, count: int = 1) -> None:
    """Paste `image`; `count` images are then in the composer."""
    QGuiApplication.clipboard().setImage(image)
    window.composer.input.setFocus()
    qtbot.keyClick(window.composer.input, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    wait_image_checked(qtbot, window, count)


def test_pasted_images_are_named_pasted_image_1_2_with_their_extension(qtbot, make_window, images_dir):
    window = make_window(start=False)
    paste(qtbot, window, QImage(str(images_dir / "shapes_wide.png")))
    assert Path(window.composer.chips[0].path).name == "Pasted image 1.png"
    assert window.composer.chips[0].name.text() == "Pasted image 1.png"
    paste(qtbot, window, QImage(str(images_dir / "gradient_square.png")), count=2)
    assert [chip.name.text() for chip in window.composer.chips] == ["Pasted image 1.png", "Pasted image 2.png"]


def test_an_image_too_large_to_open_says_the_limit(qtbot, make_window, tmp_path):
    window = make_window(start=False)
    bomb = tmp_path / "huge.png"
    Image.new("1", (12_000, 12_000)).save(bomb)  # 144 megapixels, a few kilobytes on disk
    assert drop_files(window, bomb)
    qtbot.waitUntil(lambda: window.composer.notice.isVisible(), timeout=10_000)
    assert "too large" in window.composer.notice.text() and "80 megapixels" in window.composer.notice.text()


def test_the_settings_dialog_has_a_model_label_with_a_shortcut_and_caps_the_answer_at_the_context(qtbot):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    label = next(label for label in dialog.findChildren(QLabel) if label.text() == "&Model:")
    assert label.buddy() is dialog.model_edit  # shown as "Model:" with M underlined, not a literal "&"
    assert dialog.max_tokens_spin.maximum() == MAX_ANSWER_TOKENS == 4096
    narrow = SettingsDialog(Settings(max_new_tokens=3000), [], context_length=2048)
    qtbot.addWidget(narrow)
    assert narrow.max_tokens_spin.maximum() == 2048 and narrow.max_tokens_spin.value() == 2048


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_about_names_the_version_the_model_and_the_licences(qtbot, make_window):
    from xvlm_core import __version__

    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession()))
    wait_ready(qtbot, window)
    window.show_about()
    box = window.about_box
    qtbot.waitUntil(box.isVisible)
    text = box.text()
    assert f"XVLM Chat {__version__}" in text
    assert "Model in use:</b> " in text and "on cpu (float32)" in text
    assert "Apache License 2.0" in text and "licence" in text
    box.close()


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_open_log_folder_without_a_file_manager_shows_the_path_and_copies_it(qtbot, make_window, monkeypatch,
                                                                            tmp_path):
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) or False)
    window = make_window(start=False)
    window.open_log_folder()
    assert opened and opened[0].toLocalFile() == str(tmp_path / "logs")
    box = window.log_folder_box
    qtbot.waitUntil(box.isVisible)
    assert box.informativeText() == str(tmp_path / "logs")
    copy = next(button for button in box.findChildren(QPushButton) if button.text() == "&Copy Path")
    qtbot.mouseClick(copy, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == str(tmp_path / "logs")


def test_a_file_job_runs_even_while_its_bar_is_out_of_sight(qtbot):
    page = QWidget()  # the bar's window not shown, as while the first-run page covers it
    qtbot.addWidget(page)
    bar = TransferBar(page)
    first = bar.begin("Importing…")
    assert bar.running
    bar.finish()
    assert not bar.running and not first.is_set()
