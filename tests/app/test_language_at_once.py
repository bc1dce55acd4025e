"""The language chosen in Settings applies at once: every text of the running window is worded again."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeSession, fake_load
from PySide6.QtCore import QLocale, Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLabel
from test_first_run import ScriptedDownloads, wait_plan
from test_i18n import PseudoTranslator, untranslatable, untranslated
from test_i18n_catalog import messages
from test_window import ask, wait_answered, wait_ready

from app import APP_NAME
from app.chat.conversation_view import MarkdownView
from app.history.database import ChatStore
from app.history.service import History
from app.i18n import install_translators
from app.model.worker import ModelWorker
from app.ui.settings_dialog import SettingsDialog
from xvlm_core.errors import Problem, Remedy

_spec = importlib.util.spec_from_file_location(
    "translations", Path(__file__).resolve().parents[2] / "packaging" / "translations.py")
translations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(translations)


@pytest.fixture
def catalog() -> dict[tuple[str, str], str]:
    """(context, English) -> Simplified Chinese, as the committed catalogue has it."""
    return {key: element.text for key, element in messages(translations.sources("zh_CN")).items()}


@pytest.fixture
def restore_language(qapp) -> Iterator[None]:
    """Whatever language a test switches to, the next test starts in English again."""
    before = QLocale()
    yield
    install_translators(qapp, "en")
    QLocale.setDefault(before)


@pytest.fixture
def pseudo_later(qapp) -> Iterator[PseudoTranslator]:
    """The pseudo-translation, installed only when the test says: the window was built without it."""
    translator = PseudoTranslator()
    yield translator
    qapp.removeTranslator(translator)


def choose_language_in_settings(qtbot, window, language: str) -> None:
    """Model > Settings, pick `language` in the Language list, press OK."""
    steps = {"tries": 0}

    def choose() -> None:
        dialog = QApplication.activeModalWidget()
        if not isinstance(dialog, SettingsDialog):
            steps["tries"] += 1
            assert steps["tries"] < 200, "the Settings dialog never opened"
            QTimer.singleShot(10, choose)
            return
        dialog.language_combo.setCurrentIndex(dialog.language_combo.findData(language))
        qtbot.mouseClick(dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok),
                         Qt.MouseButton.LeftButton)

    QTimer.singleShot(0, choose)
    window.settings_action.trigger()  # returns once the dialog is closed
    assert window.settings.language == language


def chat_with_an_answer(qtbot, make_window, tmp_path):
    history = History(ChatStore(tmp_path / "history" / "chats.sqlite3"))
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()), history=history)
    wait_ready(qtbot, window)
    ask(qtbot, window, "What is in the picture?")
    wait_answered(qtbot, window)
    return window


def visible_texts(window) -> dict[str, str]:
    """What the test compares: menus, the message box, the sidebar, the last answer, the welcome page."""
    answer = window.view.widgets[-1]
    page = window.first_run
    return {
        "menus": " | ".join(action.text() for action in window.menuBar().actions()),
        "file menu": " | ".join(action.text() for action in window.menuBar().actions()[0].menu().actions()),
        "placeholder": window.composer.input.placeholderText(),
        "send": window.composer.send_button.toolTip(),
        "new chat": window.chat_list.new_button.text().strip(),
        "search": window.chat_list.search_edit.placeholderText(),
        "footer": answer.footer.text(),
        "copy": answer.copy_button.toolTip(),
        "regenerate": answer.regenerate_button.accessibleName(),
        "status bar": window.memory_label.text(),
        "welcome": page.card.findChildren(QLabel)[0].text(),
        "download": page.download_button.text(),
        "folder": page.folder_button.text(),
    }


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_a_language_chosen_in_settings_applies_at_once_and_back(qtbot, make_window, tmp_path, catalog,
                                                                restore_language):
    window = chat_with_an_answer(qtbot, make_window, tmp_path)
    tokens = window.controller.messages[-1].stats.output_tokens
    english = visible_texts(window)
    assert f"{tokens} tokens" in english["footer"] and english["placeholder"].startswith("Ask about")

    choose_language_in_settings(qtbot, window, "zh_CN")

    def chinese(context: str, source: str) -> str:
        return catalog[(context, source)]

    expected = {
        "menus": " | ".join(chinese("MainWindow", source)
                            for source in ("&File", "&Chat", "&View", "&Model", "&Help")),
        "placeholder": chinese("Composer", "Ask about the image…  (Enter to send, Shift+Enter for a new line)"),
        "send": chinese("Composer", "Send (Enter)"),
        "new chat": chinese("ChatList", "New chat"),
        "search": chinese("ChatList", "Search chats"),
        "copy": chinese("ConversationView", "Copy message"),
        "regenerate": chinese("ConversationView", "Regenerate answer"),
        "status bar": chinese("MainWindow", "{size} MB").format(size="12"),
        "download": chinese("FirstRunPage", "&Download"),
        "folder": chinese("FirstRunPage", "&Use a folder I already have…"),
    }
    qtbot.waitUntil(lambda: visible_texts(window)["menus"] == expected["menus"], timeout=5_000)
    now = visible_texts(window)
    assert {key: now[key] for key in expected} == expected
    assert chinese("MainWindow", "&New Chat") in now["file menu"]
    assert chinese("ConversationView", "{count} tokens").format(count=tokens) in now["footer"]
    assert chinese("ConversationView", "cut at the length limit") in now["footer"]
    assert chinese("FirstRunPage", "Welcome to XVLM Chat") in now["welcome"]
    answer = window.view.widgets[-1]
    assert answer.body.toPlainText().strip() == answer.message.text.strip()  # the model's words, as it said them

    dialog = SettingsDialog(window.settings, [], window)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == chinese("SettingsDialog", "Settings")

    choose_language_in_settings(qtbot, window, "en")
    qtbot.waitUntil(lambda: visible_texts(window)["menus"] == english["menus"], timeout=5_000)
    assert visible_texts(window) == english


def test_after_a_switch_at_run_time_every_text_of_the_chat_window_is_worded_again(
        qtbot, make_window, tmp_path, images_dir, pseudo_later, qapp):
    window = chat_with_an_answer(qtbot, make_window, tmp_path)
    window.composer.attach_paths([str(images_dir / "missing.png")])  # a notice under the message box
    window._begin_edit(0)  # the edit bar, and the image chip of nothing: the question had no image
    window._on_model_failed(Problem(Remedy.SEE_LOG, "KeyError"))  # the banner and its buttons
    window._on_answer_left_running("Cats")  # the status bar's passing message
    window.chat_list.delete(window.controller.chat_id)  # the Undo bar

    qapp.installTranslator(pseudo_later)

    def problems() -> list[str]:
        return [problem for problem in untranslatable(window)
                if "What is in the picture" not in problem and not problem.startswith("title:")]

    # Qt posts LanguageChange to each widget: on a busy machine the banner's buttons can follow the menus late.
    qtbot.waitUntil(lambda: window.menuBar().actions()[0].text().startswith("⟦") and not problems(), timeout=5_000)
    assert window.windowTitle() == f"⟦New chat⟧ — {APP_NAME}"  # the chat was deleted: a new one shows
    assert untranslated(window.statusBar().currentMessage().replace("Cats", "")) == ""
    assert untranslatable(window.banner) == [] and window.banner.isVisible()


def test_after_a_switch_at_run_time_the_welcome_page_is_worded_again(qtbot, make_window, app_settings,
                                                                      pseudo_later, qapp):
    downloads = ScriptedDownloads()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    downloads.plan_released.set()
    wait_plan(qtbot, window)
    states = {}
    qapp.installTranslator(pseudo_later)
    qtbot.waitUntil(lambda: page.download_button.text().startswith("⟦"), timeout=5_000)
    states["ready"] = untranslatable(page)
    qapp.removeTranslator(pseudo_later)
    qtbot.waitUntil(lambda: page.download_button.text() == "&Download", timeout=5_000)
    page._failed(RuntimeError("boom"))  # the error note, in English
    qapp.installTranslator(pseudo_later)
    qtbot.waitUntil(lambda: page.error_note.details_button.text().startswith("⟦"), timeout=5_000)
    states["failed"] = untranslatable(page)
    assert states == {state: [] for state in states}


def test_switching_replaces_the_translators_it_installed_before(qapp, restore_language):
    first = install_translators(qapp, "zh_CN")
    second = install_translators(qapp, "zh_CN")
    assert len(first) == len(second) == 2
    assert QApplication.translate("MainWindow", "&File") != "&File"
    assert all(not qapp.removeTranslator(translator) for translator in first)  # already taken out
    assert install_translators(qapp, "en") == []
    assert QApplication.translate("MainWindow", "&File") == "&File"


def test_a_code_blocks_copy_link_follows_the_language_and_the_code_stays(qtbot, pseudo_later, qapp):
    view = MarkdownView()
    qtbot.addWidget(view)
    view.show_markdown("Here it is:\n\n```\nprint('hi')\n```\n")
    assert "Copy code" in view.toPlainText()
    qapp.installTranslator(pseudo_later)
    qtbot.waitUntil(lambda: "⟦Copy code⟧" in view.toPlainText(), timeout=5_000)
    assert view.toPlainText().count("Copy code") == 1
    assert "Here it is:" in view.toPlainText() and view.code_blocks == ["print('hi')"]
