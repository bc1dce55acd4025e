"""The interface in another language: every visible string is translatable, and Simplified Chinese is complete."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fakes import FakeSession, fake_load
from PySide6.QtCore import QCoreApplication, QLocale, QTranslator
from PySide6.QtWidgets import (
    QAbstractButton,
    QComboBox,
    QDialogButtonBox,
    QGroupBox,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QWidget,
)
from test_first_run import ScriptedDownloads, click, wait_plan
from test_window import ask, wait_answered, wait_image_checked, wait_ready

from app import APP_NAME
from app.chat.chat_list import RenameDialog
from app.chat.conversation_view import answer_footer, dropped_notice, regenerate_tooltip
from app.history.database import ChatStore
from app.history.exchange import read_chat_file
from app.history.records import Status, StoreError
from app.history.service import History
from app.i18n import install_translators
from app.model.worker import ModelWorker
from app.settings import Settings, SettingsFile
from app.ui.settings_dialog import SettingsDialog
from xvlm_core.errors import Problem, Remedy
from xvlm_core.sampling import SamplingSettings

OPEN, CLOSE = "⟦", "⟧"
_MARKED = re.compile(f"{OPEN}[^{OPEN}{CLOSE}]*{CLOSE}")
_TAG = re.compile(r"<[^>]+>")
# Data, not interface: numbers and sizes, file names and paths, the dtypes and devices' own names, the languages
# named in themselves, an exception's type, and the model stack's (English) sentences, which these states show.
_DATA = re.compile(r"[\d.,]+|[KMG]?B(/s)?|\S+\.(png|safetensors)|/\S*|(b?float\d+|CPU|cpu|English|简体中文|\w+Error)"
                   r"|Esc|.*(fake-model|xmodel-vlm-tiny|Xmodel-VLM|XiaoduoAILab|Cannot reach the model hub).*|…")


class PseudoTranslator(QTranslator):
    """Marks every string it is asked for, so that a string shown without the mark never went through tr()."""

    def translate(self, context, source, disambiguation=None, n=-1):
        return f"{OPEN}{source}{CLOSE}"

    def isEmpty(self) -> bool:
        return False


@pytest.fixture
def pseudo(qapp) -> Iterator[PseudoTranslator]:
    translator = PseudoTranslator()
    qapp.installTranslator(translator)
    yield translator
    qapp.removeTranslator(translator)


@pytest.fixture
def chinese(qapp) -> Iterator[None]:
    before = QLocale()
    translators = install_translators(qapp, "zh_CN")
    yield
    for translator in translators:
        qapp.removeTranslator(translator)
    QLocale.setDefault(before)


def untranslated(text: str) -> str:
    """What is left of a shown text once every marked (translated) part and every piece of data is taken out."""
    text = _TAG.sub(" ", text.replace("&amp;", "&")).replace(APP_NAME, " ")
    while _MARKED.search(text):
        text = _MARKED.sub(" ", text)
    pieces = [piece for piece in re.split(r"[\s·:;,()“”\"'\n]+", text) if piece]
    return " ".join(piece for piece in pieces if not _DATA.fullmatch(piece))


def shown_texts(root: QWidget) -> list[tuple[str, str]]:
    """(where, text) for every text a person sees or hears on the visible widgets under `root`."""
    found = [("title", root.windowTitle())]
    for widget in [root, *root.findChildren(QWidget)]:
        if widget is not root and not widget.isVisibleTo(root):
            continue
        name = type(widget).__name__
        found += [(f"{name} tooltip", widget.toolTip()), (f"{name} accessible name", widget.accessibleName())]
        if isinstance(widget, QLabel | QAbstractButton | QLineEdit):
            found.append((f"{name} text", widget.text()))
        if isinstance(widget, QLineEdit | QPlainTextEdit):
            found.append((f"{name} placeholder", widget.placeholderText()))
        if isinstance(widget, QGroupBox):
            found.append((f"{name} title", widget.title()))
        if isinstance(widget, QComboBox) and not widget.isEditable():
            found += [(f"{name} item", widget.itemText(index)) for index in range(widget.count())]
        if isinstance(widget, QMenu):
            found += [(f"menu {widget.title()}", action.text()) for action in widget.actions()]
    if hasattr(root, "menuBar"):
        for action in root.menuBar().actions():
            found.append(("menu", action.text()))
            found += [(f"menu {action.text()}", item.text()) for item in action.menu().actions()]
    return found


def untranslatable(root: QWidget) -> list[str]:
    return [f"{where}: {text!r}" for where, text in shown_texts(root) if untranslated(text)]


def test_the_pseudo_translation_marks_what_it_should():
    assert untranslated(f"{OPEN}Answer{CLOSE}") == ""
    assert untranslated(f"{OPEN}{{x}} left{CLOSE} · 12.5 MB/s · model.safetensors") == ""
    assert untranslated(f"{OPEN}Stopped{CLOSE} · 3 tokens") == "tokens"
    assert untranslated("Send") == "Send"


def test_every_text_of_the_chat_window_goes_through_translation(qtbot, pseudo, make_window, images_dir, tmp_path):
    history = History(ChatStore(tmp_path / "history" / "chats.sqlite3"))
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: FakeSession()), history=history)
    wait_ready(qtbot, window)
    window.composer.attach_file(str(images_dir / "gradient_square.png"))
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "What is in the picture?")
    wait_answered(qtbot, window)
    window.composer.attach_paths([str(images_dir / "missing.png")])  # a notice under the message box
    window._begin_edit(0)  # the edit bar
    problems = [problem for problem in untranslatable(window)
                if "What is in the picture" not in problem]  # the chat's title, from the question
    assert problems == []
    assert untranslated(window.about_text()) == ""
    window.composer.set_busy(True)  # Send becomes Stop
    assert untranslatable(window.composer) == []
    window.composer.set_busy(False)
    chats = window.chat_list.list
    assert [untranslated(chats.item(row).toolTip().split("\n", 1)[1]) for row in range(chats.count())] == [""]
    said = [regenerate_tooltip(SamplingSettings(temperature=0.0)),
            regenerate_tooltip(SamplingSettings(temperature=0.7)), dropped_notice(1), dropped_notice(3),
            answer_footer(replace(window.controller.messages[-1], status=Status.STOPPED))]
    assert [untranslated(text) for text in said] == [""] * len(said)
    window._on_model_failed(Problem(Remedy.SEE_LOG, "KeyError"))  # the banner, its headline and buttons; the
    # model stack's details themselves stay English
    assert untranslatable(window.banner) == []
    window.chat_list.delete(window.controller.chat_id)  # the Undo bar
    assert untranslatable(window.chat_list) == []



def test_every_text_of_the_first_run_page_goes_through_translation(qtbot, pseudo, make_window, app_settings):
    downloads = ScriptedDownloads()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    qtbot.waitUntil(lambda: page.isVisible() and page.cancel_button.isEnabled(), timeout=5_000)
    states = {"checking": untranslatable(page)}
    downloads.plan_released.set()
    wait_plan(qtbot, window)
    states["ready"] = untranslatable(page)
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: downloads.downloading.is_set() and page.progress.value() > 0, timeout=5_000)
    states["downloading"] = untranslatable(page)
    click(qtbot, page.cancel_button)
    qtbot.waitUntil(lambda: page.download_button.isEnabled(), timeout=5_000)
    states["paused"] = untranslatable(page)
    page._busy = True  # the hub does not answer: a countdown to the next try
    page._show_retry(4.0)
    states["retrying"] = untranslatable(page)
    page._stop_retry_countdown()
    page._failed(RuntimeError("boom"))  # a failure the model stack has no words for
    states["failed"] = untranslatable(page)

    assert states == {state: [] for state in states}


def test_every_text_of_the_settings_and_rename_dialogs_goes_through_translation(qtbot, pseudo):
    dialog = SettingsDialog(Settings(device="cuda:3", use_server=True), [("auto", "Automatic"), ("cpu", "CPU")])
    qtbot.addWidget(dialog)
    assert untranslatable(dialog) == []
    rename = RenameDialog("A chat about cats")
    qtbot.addWidget(rename)

    assert [problem for problem in untranslatable(rename) if "A chat about cats" not in problem] == []


def test_the_chinese_interface_shows_chinese_and_qts_own_buttons_too(qtbot, chinese, make_window):
    window = make_window(start=False)
    menus = [action.text() for action in window.menuBar().actions()]
    assert menus[:2] == ["文件(&F)", "对话(&C)"]
    assert window.composer.input.placeholderText().startswith("询问关于图片的问题")
    assert window.model_label.text() == "未加载模型"
    assert "欢迎使用 XVLM Chat" in window.first_run.findChild(QLabel).text()
    dialog = SettingsDialog(window.settings, [], window)
    qtbot.addWidget(dialog)
    assert dialog.windowTitle() == "设置"
    buttons = dialog.findChild(QDialogButtonBox)
    assert buttons.button(QDialogButtonBox.StandardButton.Cancel).text() == "取消"  # from Qt's own qtbase_zh_CN
    assert dialog.language_combo.itemText(2) == "简体中文"


def test_english_needs_no_catalog(qapp):
    before = QLocale()
    try:
        assert install_translators(qapp, "en") == []
    finally:
        QLocale.setDefault(before)
    assert QCoreApplication.translate("MainWindow", "&File") == "&File"


def test_the_language_is_chosen_in_settings_and_remembered(qtbot, tmp_path):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    assert dialog.language_combo.currentData() == "system"
    dialog.language_combo.setCurrentIndex(dialog.language_combo.findData("zh_CN"))
    chosen = dialog.result_settings()
    assert chosen.language == "zh_CN"
    file = SettingsFile(tmp_path / "settings.json")
    file.save(chosen)
    assert file.load().language == "zh_CN"



def test_history_and_import_errors_go_through_translation(pseudo, tmp_path):
    folder_in_the_way = tmp_path / "chats.sqlite3"
    folder_in_the_way.mkdir()
    with pytest.raises(StoreError) as not_a_file:
        ChatStore(folder_in_the_way)
    with ChatStore(tmp_path / "ok" / "chats.sqlite3") as store, pytest.raises(StoreError) as no_chat:
        store.load_chat(404)
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "x", "images": ["gone.png"]}]), encoding="utf-8")
    with ChatStore(tmp_path / "in" / "chats.sqlite3") as store, pytest.raises(StoreError) as missing_image:
        read_chat_file(conversation, store.images)
    for error in (not_a_file, no_chat, missing_image):
        assert str(error.value).startswith(OPEN) and untranslated(str(error.value)) == "", str(error.value)
