"""Notices shown before a language change are worded again in the new language: each is kept as what it says
(a wording, a problem's code), not as the text it was first shown in."""

from __future__ import annotations

import json
import sqlite3

import pytest
import test_language_at_once as language
from PySide6.QtWidgets import QFileDialog
from test_history import chat_with_image, fake_worker, history_at

from app.history.database import ChatStore
from app.history.service import History
from app.main import FRIENDLY_ERROR, friendly_error
from app.settings import SettingsFile
from app.ui.parts import build_parts
from app.ui.window import MainWindow

choose_language_in_settings = language.choose_language_in_settings
catalog = language.catalog  # fixtures: (context, English) -> Chinese, and English again after the test
restore_language = language.restore_language

pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # offscreen, showing Settings


def before_the_first_field(source: str) -> str:
    """The text of a catalogue entry up to its first {field}: what every wording of it starts with."""
    return source.split("{", 1)[0]


def test_the_settings_notice_follows_the_language(qtbot, event_loop, tmp_path, catalog, restore_language):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperature": float("nan")}))
    window = MainWindow(build_parts(SettingsFile(path), worker=fake_worker(), log_dir=tmp_path / "logs"))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    notice = window.settings_notice
    assert notice.isVisible() and notice.text.text().startswith("The setting “temperature” was nan")

    choose_language_in_settings(qtbot, window, "zh_CN")

    chinese = catalog[("Settings", "The setting “{name}” was {value}, which cannot be used; it is back to its "
                                   "default, {default}.")]
    expected = chinese.format(name="temperature", value="nan", default="0.0")
    qtbot.waitUntil(lambda: notice.text.text() == expected, timeout=5_000)
    window.close()


def test_the_history_notice_follows_the_language(qtbot, make_window, tmp_path, catalog, restore_language):
    path = tmp_path / "history" / "chats.sqlite3"
    with ChatStore(path) as store:
        chat_id = store.create_chat()
    database = sqlite3.connect(path)
    database.execute("UPDATE chats SET created = 'yesterday' WHERE id = ?", (chat_id,))  # a damaged row
    database.commit()
    database.close()
    window = make_window(fake_worker(), history=History(ChatStore(path)))
    source = ("Some entries of the chat history are damaged ({details}). Those chats are shown with what could be "
              "read; the other chats are not affected.")
    qtbot.waitUntil(lambda: window.notice.isVisible(), timeout=5_000)
    assert window.notice.text.text().startswith(before_the_first_field(source))

    choose_language_in_settings(qtbot, window, "zh_CN")

    chinese = before_the_first_field(catalog[("History", source)])
    qtbot.waitUntil(lambda: window.notice.text.text().startswith(chinese), timeout=5_000)
    assert f"{chat_id}" in window.notice.text.text()


def test_an_unexpected_error_follows_the_language(qtbot, make_window, catalog, restore_language):
    window = make_window(fake_worker())
    window.show_error(friendly_error)
    assert window.banner.text.text() == FRIENDLY_ERROR

    choose_language_in_settings(qtbot, window, "zh_CN")

    qtbot.waitUntil(lambda: window.banner.text.text() == catalog[("main", FRIENDLY_ERROR)], timeout=5_000)


def test_an_image_the_core_refuses_is_said_in_the_new_language(qtbot, make_window, tmp_path, catalog,
                                                              restore_language):
    window = make_window(fake_worker())
    folder = tmp_path / "not a picture.png"
    folder.mkdir()  # the core's image check refuses what is not a regular file
    window.composer.attach_paths([str(folder)])
    english = window.composer.notice.text()
    assert english.startswith("This picture cannot be used.") and "is a folder" in english

    choose_language_in_settings(qtbot, window, "zh_CN")

    chinese = catalog[("ErrorText", "This picture cannot be used. Choose another one.")]
    qtbot.waitUntil(lambda: window.composer.notice.text().startswith(chinese), timeout=5_000)
    assert "is a folder" in window.composer.notice.text()  # the core's details stay as it said them


def test_the_export_message_follows_the_language(qtbot, make_window, tmp_path, images_dir, monkeypatch, catalog,
                                                 restore_language):
    window = make_window(fake_worker(), history=history_at(tmp_path))
    chat_with_image(qtbot, window, images_dir / "gradient_square.png", "Export me")
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(exports))
    window.export_markdown_action.trigger()
    qtbot.waitUntil(lambda: window.statusBar().currentMessage().startswith("Exported to"), timeout=5_000)
    exported = next(exports.glob("*.md"))

    choose_language_in_settings(qtbot, window, "zh_CN")

    chinese = catalog[("MainWindow", "Exported to {path}")].format(path=exported)
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == chinese, timeout=5_000)


def test_every_stage_of_a_model_load_is_worded_in_the_windows_language(qapp, catalog, restore_language):
    from app.i18n import install_translators
    from app.model import load_stages
    from xvlm_core.stages import Stage

    assert set(load_stages._WORDS) == set(Stage)
    assert load_stages.stage_text("Connecting to http://gpu-box:8000/v1…") == "Connecting to http://gpu-box:8000/v1…"
    install_translators(qapp, "zh_CN")
    for stage, words in load_stages._WORDS.items():
        assert load_stages.stage_text(stage.value) == catalog[("LoadStage", words)] != words


def test_a_failed_answers_line_follows_the_language_and_is_kept_with_its_code(
        qtbot, make_window, tmp_path, catalog, restore_language):
    from test_error_text import _OutOfMemorySession
    from test_window import ask

    from app.error_text import HEADLINES
    from xvlm_core.errors import Remedy

    window = make_window(fake_worker(_OutOfMemorySession()), history=history_at(tmp_path))
    qtbot.waitUntil(lambda: window.controller.phase.value == "ready", timeout=10_000)
    ask(qtbot, window, "Describe it")
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=5_000)
    footer = window.view.widgets[-1].footer
    english = HEADLINES[Remedy.FREE_MEMORY]
    assert footer.text().startswith(english)

    choose_language_in_settings(qtbot, window, "zh_CN")

    details = "The model ran out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB)."
    qtbot.waitUntil(lambda: footer.text() == f"{catalog[('ErrorText', english)]} {details}", timeout=5_000)
    kept = window.controller.messages[-1].stats  # what the history stores: worded again when reopened
    assert (kept.error, kept.error_code) == (details, Remedy.FREE_MEMORY.value)
