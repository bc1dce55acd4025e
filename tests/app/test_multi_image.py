"""Several images in one message, end to end: pasted, sent in order, shown, reopened, exported and imported."""

from __future__ import annotations

import json
from pathlib import Path

from fakes import FakeSession
from PySide6.QtCore import QMimeData, Qt, QUrl
from PySide6.QtGui import QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog
from test_history import fake_worker, history_at
from test_window import ask, drop_mime, wait_answered, wait_image_checked, wait_ready

from app.chat.composer import Composer
from xvlm_core.messages import IMAGE_POSITIONS, image_limit


def paste(qtbot, window, image: QImage, count: int) -> None:
    QGuiApplication.clipboard().setImage(image)
    window.composer.input.setFocus()
    qtbot.keyClick(window.composer.input, Qt.Key.Key_V, Qt.KeyboardModifier.ControlModifier)
    wait_image_checked(qtbot, window, count)


def image_bytes(message) -> list[bytes]:
    return [Path(image.path).read_bytes() for image in message.images]


def test_two_pasted_images_are_sent_shown_reopened_exported_and_imported(
        qtbot, make_window, tmp_path, images_dir, monkeypatch):
    session = FakeSession(["Two ", "pictures."])
    window = make_window(fake_worker(session), history=history_at(tmp_path))
    wait_ready(qtbot, window)
    paste(qtbot, window, QImage(str(images_dir / "shapes_wide.png")), 1)
    paste(qtbot, window, QImage(str(images_dir / "gradient_square.png")), 2)
    pasted = [Path(chip.path).read_bytes() for chip in window.composer.chips]
    assert [chip.name.text() for chip in window.composer.chips] == ["Pasted image 1.png", "Pasted image 2.png"]
    ask(qtbot, window, "Compare them.")
    wait_answered(qtbot, window)

    (question,) = session.calls[-1]
    assert question.text == "Compare them." and image_bytes(question) == pasted  # both, in the order pasted
    thumbnails = window.view.widgets[0].thumbnails
    assert len(thumbnails) == 2 and not any(thumbnail.pixmap().isNull() for thumbnail in thumbnails)
    chat_id = window.controller.chat_id
    window.close()

    # Reopened in a new window: both images are there, shown, and sent again with the next question.
    session = FakeSession(["Still ", "two."])
    second = make_window(fake_worker(session), history=history_at(tmp_path))
    wait_ready(qtbot, second)
    second.open_chat(chat_id)
    assert image_bytes(second.controller.messages[0]) == pasted
    assert len(second.view.widgets[0].thumbnails) == 2
    ask(qtbot, second, "Which is wider?")
    wait_answered(qtbot, second)
    first, _answer, follow_up = session.calls[-1]
    assert image_bytes(first) == pasted and follow_up.images == ()

    # Exported as JSON (the shape `xvlm ask --conversation` reads) and imported back: both images, in order.
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(exports))
    second.export_json_action.trigger()
    qtbot.waitUntil(lambda: not second.transfer_bar.running, timeout=5000)
    exported = next(exports.glob("*.json"))
    names = json.loads(exported.read_text(encoding="utf-8"))[0]["images"]
    assert [(exports / name).read_bytes() for name in names] == pasted
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(exported), ""))
    second.import_action.trigger()
    qtbot.waitUntil(lambda: second.controller.chat_id not in (None, chat_id), timeout=5000)
    assert image_bytes(second.controller.messages[0]) == pasted


def test_files_dropped_together_each_get_a_chip(qtbot, make_window, images_dir):
    window = make_window(start=False)
    mime = QMimeData()
    files = [images_dir / "gradient_square.png", images_dir / "shapes_wide.png"]
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in files])
    assert drop_mime(window, mime)
    wait_image_checked(qtbot, window, 2)
    assert [Path(image.path).read_bytes() for image in window.composer.images] == [p.read_bytes() for p in files]
    qtbot.mouseClick(window.composer.chips[0].remove_button, Qt.MouseButton.LeftButton)
    assert [chip.path for chip in window.composer.chips] == [str(files[1])]


def test_an_image_beyond_the_context_s_limit_is_refused_with_a_sentence(qtbot, images_dir):
    composer = Composer(check=lambda path: QImage(8, 8, QImage.Format.Format_RGB888))
    qtbot.addWidget(composer)
    composer.context_length = 4 * IMAGE_POSITIONS  # room for two images per message
    assert composer.image_limit == image_limit(composer.context_length) == 2
    square = str(images_dir / "gradient_square.png")
    composer.attach_paths([square, square, str(images_dir / "shapes_wide.png")])
    assert len(composer.chips) == 2
    assert composer.notice.text() == (
        f"shapes_wide.png was not attached: a message can carry at most 2 images, as each takes {IMAGE_POSITIONS} "
        f"of the {4 * IMAGE_POSITIONS} positions the model reads at once.")
    qtbot.waitUntil(lambda: len(composer.images) == 2, timeout=10_000)
