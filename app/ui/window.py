"""The main window: first-run page or chat (conversation, composer, banner), menus, status bar, drops."""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import (
    QT_TRANSLATE_NOOP,
    QByteArray,
    QEvent,
    QSize,
    QStandardPaths,
    Qt,
    QTimer,
    QUrl,
    Signal,
    qVersion,
)
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
    QResizeEvent,
    QShortcut,
)
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenuBar,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from xvlm_core import __version__
from xvlm_core.errors import Problem, Remedy  # torch-free
from xvlm_core.load_options import NONE_GIVEN, LoadOptions
from xvlm_core.messages import DEFAULT_CONTEXT, ImageRef

from app import APP_NAME
from app.chat.chat_list import ChatList
from app.chat.composer import Composer, dialog_folder, mime_has_attachment
from app.chat.controller import ModelPhase
from app.chat.conversation_view import ConversationView
from app.error_text import error_text
from app.history.records import Status
from app.i18n import Worded, Wording, install_translators, translate
from app.icons import app_icon, icon
from app.launch import Launch
from app.model.first_run import FirstRunPage
from app.model.load_stages import stage_text
from app.model.remote_model import api_key, api_url, keep_api_key
from app.model.server_settings import ServerDialog
from app.model.transfer_bar import TransferBar
from app.settings import MAX_ANSWER_TOKENS, Settings
from app.theme import THEMES, style_sheet, use_theme
from app.ui.parts import Parts
from app.ui.settings_dialog import SettingsDialog
from app.ui.startup import ModelStartup, Page

log = logging.getLogger(__name__)

DEFAULT_SIZE = QSize(1100, 780)
SIDEBAR_NARROW = 760  # a window narrower than this folds the sidebar away, so the chat keeps a line's room
STATUS_SHOWN_MS = 8000  # a passing message in the status bar
CHAT_FILES_FOLDER = "chat files folder"  # a place: the folder a chat was last exported to or imported from
DOCUMENTS = QStandardPaths.StandardLocation.DocumentsLocation  # where the export and import dialogs first open
# The banner's button for a failed load whose fix is one setting (see app/error_text.py).
SETTING_BUTTONS = {"model": QT_TRANSLATE_NOOP("MainWindow", "Choose Model…"),
                   "vision_tower": QT_TRANSLATE_NOOP("MainWindow", "Choose Vision Tower…"),
                   "device": QT_TRANSLATE_NOOP("MainWindow", "Choose Device…"),
                   "dtype": QT_TRANSLATE_NOOP("MainWindow", "Choose Precision…")}


def display_model_name(name: str) -> str:
    """`org/repo` for a hub cache snapshot folder, else the folder's own name (or the repo id as given)."""
    parts = Path(name).parts
    for part in parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return Path(name).name or name


def human_megabytes(megabytes: float) -> str:
    if megabytes >= 1024:
        return translate("MainWindow", "{size} GB").format(size=f"{megabytes / 1024:.1f}")
    return translate("MainWindow", "{size} MB").format(size=f"{megabytes:.0f}")


Actions = list[tuple[str, Callable[[], object]]]  # a banner's buttons: (label, what a click does)


class Banner(QFrame):
    """A message across the top of the chat with what to do about it (a failed load, an unexpected error)."""

    def __init__(self, parent: QWidget | None = None, name: str = QT_TRANSLATE_NOOP("MainWindow", "Problem")):
        super().__init__(parent)
        self.setObjectName("banner")
        self._name = name  # untranslated, as the window's own texts are worded on each language change
        self._compose: Callable[[], tuple[str, Actions]] | None = None
        self.icon_label = QLabel(self)
        self.icon_label.setPixmap(icon("warning").pixmap(QSize(20, 20)))
        self.text = QLabel(self)
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QHBoxLayout()
        close = self.close_button = QToolButton(self)
        close.setIcon(icon("close"))
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addLayout(self.buttons)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.retranslate()
        self.hide()

    def show_message(self, compose: Callable[[], tuple[str, Actions]], closable: bool = True) -> None:
        """Show the message (rich text) and buttons `compose` words; it words them again in a new language."""
        self._compose = compose
        self._fill()
        self.close_button.setVisible(closable)
        self.show()

    def _fill(self) -> None:
        assert self._compose is not None
        text, actions = self._compose()
        while self.buttons.count():
            widget = self.buttons.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        for label, callback in actions:
            button = QPushButton(label, self)
            button.clicked.connect(lambda _checked=False, callback=callback: callback())
            self.buttons.addWidget(button)
        self.text.setText(text)

    def retranslate(self) -> None:
        self.setAccessibleName(translate("MainWindow", self._name))
        self.close_button.setAccessibleName(translate("MainWindow", "Dismiss"))
        self.close_button.setToolTip(translate("MainWindow", "Dismiss"))
        if self._compose is not None:
            self._fill()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()


class MainWindow(QMainWindow):
    list_devices_requested = Signal()

    def __init__(self, parts: Parts):
        super().__init__()
        self.parts = parts
        self.history = parts.history
        self.app_settings = parts.app_settings
        self.downloads = parts.downloads
        self.controller = parts.controller
        self.worker = parts.worker
        self.model_thread = parts.model_thread
        self.log_dir = parts.log_dir
        self.devices: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self.file_actions: list[QAction] = []  # export and import: off while one of them runs
        # The sidebar as the person left it: one choice for a wide window, another (closed at first) for a narrow one.
        self._sidebar_open = {False: True, True: False}  # narrow -> open
        self._narrow = False
        self.worded = Worded()  # the status bar's labels
        self._told: tuple[Wording, str, float] | None = None  # the status bar's passing message: see _tell
        self.server_dialog: ServerDialog | None = None

        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.resize(DEFAULT_SIZE)
        self.setMinimumSize(QSize(520, 400))  # the first-run page and the chat both work at 600x400
        self._build_first_run()
        self._build_chat_page()
        self._build_pages()
        self._build_status_bar()
        self._build_menus()
        self.retranslate()
        self._connect()
        self._restore()

    # -- building ------------------------------------------------------------------------------------------

    def _build_first_run(self) -> None:
        """The first-run page, and the start-up flow that shows it or the chat."""
        self.first_run = FirstRunPage(self.downloads, self.settings.hub_endpoint, self.settings.vision_tower)
        self.startup = ModelStartup(self.app_settings, self.controller, self.downloads, self.first_run,
                                    self._show_page)

    def _build_chat_page(self) -> None:
        """The chat: the notices and banner above the conversation, the composer below it."""
        self.banner = Banner()
        # Conditions of the history (not saved, read-only, set aside): apart from the banner, so that nothing
        # else that happens (a model loading, another error) hides them.
        self.notice = Banner(name=QT_TRANSLATE_NOOP("MainWindow", "Chat history"))
        # settings.json held values that cannot be used
        self.settings_notice = Banner(name=QT_TRANSLATE_NOOP("MainWindow", "Settings"))
        self.transfer_bar = TransferBar()
        self.view = ConversationView(self.controller)
        self.composer = Composer()
        self.composer.prepare_image = self.history.prepare_image
        self.composer.places = self.history  # the folder of the last pictures attached, kept for the next launch
        self.chat_page = QWidget()
        chat_layout = QVBoxLayout(self.chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        banner_holder = QVBoxLayout()
        banner_holder.setContentsMargins(12, 8, 12, 0)
        banner_holder.addWidget(self.notice)
        banner_holder.addWidget(self.settings_notice)
        banner_holder.addWidget(self.banner)
        banner_holder.addWidget(self.transfer_bar)
        chat_layout.addLayout(banner_holder)
        chat_layout.addWidget(self.view, 1)
        chat_layout.addWidget(self.composer)

    def _build_pages(self) -> None:
        """The pages (chat, first run, starting) one above the other, beside the sidebar when there is a history."""
        # Shown from start() until start-up knows whether the chat or the first-run page comes first: neither
        # flashes by, and keys typed meanwhile land nowhere.
        self.starting_page = QWidget()
        self.starting_page.setObjectName("startingPage")
        self.pages = QStackedWidget()
        self.pages.addWidget(self.chat_page)
        self.pages.addWidget(self.first_run)
        self.pages.addWidget(self.starting_page)
        self.chat_list: ChatList | None = None
        if not self.history.available:
            self.setCentralWidget(self.pages)
            return
        self.chat_list = ChatList(self.history)
        self.splitter = QSplitter()
        self.splitter.addWidget(self.chat_list)
        self.splitter.addWidget(self.pages)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, DEFAULT_SIZE.width() - 250])
        self.splitter.setCollapsible(1, False)
        self.setCentralWidget(self.splitter)

    def _restore(self) -> None:
        """As the person left it: the last chat, the theme, the window's place; then what to tell them at once."""
        self.controller.reopen_last_chat()
        use_theme(self.settings.theme)
        self.apply_theme()
        # The palette follows the scheme a moment later; restyle once it has.
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: QTimer.singleShot(0, self.apply_theme))
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode()))
        self._update_title()
        self.composer.setFocus()
        self._show_history_notice()
        self._show_settings_notice()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel()
        self.worded.show(self.model_label.setText, lambda: translate("MainWindow", "No model loaded"))
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 0)  # busy: the load's stages have no byte counts
        self.load_progress.setMaximumWidth(120)
        self.load_progress.setMaximumHeight(12)
        self.load_progress.hide()
        self.device_label = QLabel("")
        self.memory_label = QLabel("")
        bar.addWidget(self.model_label)
        bar.addWidget(self.load_progress)
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(self.memory_label)

    def _build_menus(self) -> None:
        """The menus and their actions (their texts are set in retranslate()), and the window's own shortcuts."""
        menu = self.menuBar()
        self._build_file_menu(menu)
        self._build_chat_menu(menu)
        self._build_view_menu(menu)
        self._build_model_menu(menu)
        self._build_help_menu(menu)
        # Esc stops the answer, or leaves editing; it works wherever the focus is in this window.
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self._escape)
        QShortcut(QKeySequence("Ctrl+L"), self, self.composer.setFocus)

    def _build_file_menu(self, menu: QMenuBar) -> None:
        self.file_menu = file_menu = menu.addMenu("")
        self.new_chat_action = self._action(self.new_chat, QKeySequence.StandardKey.New, "new-chat")
        self.attach_action = self._action(self.composer.choose_image, QKeySequence.StandardKey.Open, "attach")
        file_menu.addAction(self.new_chat_action)
        file_menu.addAction(self.attach_action)
        if self.history.available:
            file_menu.addSeparator()
            self.export_markdown_action = self._action(lambda: self.export_chat("md"))
            self.export_json_action = self._action(lambda: self.export_chat("json"))
            self.import_action = self._action(self.import_chat)
            self.file_actions = [self.export_markdown_action, self.export_json_action, self.import_action]
            file_menu.addActions(self.file_actions)
            self._update_file_actions()
        file_menu.addSeparator()
        self.quit_action = self._action(self.close, QKeySequence.StandardKey.Quit)
        file_menu.addAction(self.quit_action)

    def _build_chat_menu(self, menu: QMenuBar) -> None:
        self.chat_menu = chat_menu = menu.addMenu("")
        # Esc itself is a window shortcut (see _build_menus), as it also leaves editing; the menu only names it.
        self.stop_action = self._action(self.controller.stop, None, "stop")
        self.regenerate_action = self._action(self.controller.regenerate, QKeySequence("Ctrl+Shift+R"), "regenerate")
        self.copy_answer_action = self._action(self.copy_last_answer, QKeySequence("Ctrl+Shift+C"), "copy")
        chat_menu.addAction(self.stop_action)
        chat_menu.addAction(self.regenerate_action)
        chat_menu.addAction(self.copy_answer_action)

    def _build_view_menu(self, menu: QMenuBar) -> None:
        """The sidebar's switch (also a button at the menu bar's left) and the themes."""
        self.view_menu = view_menu = menu.addMenu("")
        self.sidebar_action = self._action(self.toggle_sidebar, QKeySequence("Ctrl+B"), "sidebar")
        self.sidebar_action.setCheckable(True)
        self.sidebar_action.setVisible(self.chat_list is not None)
        view_menu.addAction(self.sidebar_action)
        self.sidebar_button = QToolButton()
        self.sidebar_button.setDefaultAction(self.sidebar_action)
        self.sidebar_button.setAutoRaise(True)
        if self.chat_list is not None:
            menu.setCornerWidget(self.sidebar_button, Qt.Corner.TopLeftCorner)
        self.theme_menu = view_menu.addMenu("")
        self.theme_actions: dict[str, QAction] = {}
        themes = QActionGroup(self)
        for theme in THEMES:
            action = self._action(lambda theme=theme: self.set_theme(theme))
            action.setCheckable(True)
            action.setChecked(theme == self.settings.theme)
            themes.addAction(action)
            self.theme_menu.addAction(action)
            self.theme_actions[theme] = action

    def _build_model_menu(self, menu: QMenuBar) -> None:
        self.model_menu = model_menu = menu.addMenu("")
        self.settings_action = self._action(self.open_settings, QKeySequence("Ctrl+,"), "settings")
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        model_menu.addAction(self.settings_action)
        self.reload_action = self._action(self.reload_model)
        model_menu.addAction(self.reload_action)

    def _build_help_menu(self, menu: QMenuBar) -> None:
        self.help_menu = help_menu = menu.addMenu("")
        self.log_folder_action = self._action(self.open_log_folder)
        help_menu.addAction(self.log_folder_action)
        self.about_action = self._action(self.show_about)
        self.about_action.setMenuRole(QAction.MenuRole.AboutRole)
        help_menu.addAction(self.about_action)

    def retranslate(self) -> None:
        """Every text the window sets on its own widgets and actions, in the language of the moment: from __init__,
        and again on each LanguageChange (Qt sends one to every widget when the translators change)."""
        self.starting_page.setAccessibleName(translate("MainWindow", "Starting"))
        self.model_label.setAccessibleName(translate("MainWindow", "Model"))
        self.load_progress.setAccessibleName(translate("MainWindow", "Loading the model"))
        self.device_label.setAccessibleName(translate("MainWindow", "Device and precision"))
        self.memory_label.setAccessibleName(translate("MainWindow", "Memory in use"))
        self.memory_label.setToolTip(translate("MainWindow", "Memory the model uses on its device"))
        self.worded.reword()

        self.file_menu.setTitle(translate("MainWindow", "&File"))
        self.new_chat_action.setText(translate("MainWindow", "&New Chat"))
        self.attach_action.setText(translate("MainWindow", "&Attach Images…"))
        if self.file_actions:
            self.export_markdown_action.setText(translate("MainWindow", "Export Chat as &Markdown…"))
            self.export_json_action.setText(translate("MainWindow", "Export Chat as &JSON…"))
            self.import_action.setText(translate("MainWindow", "&Import Chat…"))
        self.quit_action.setText(translate("MainWindow", "&Quit"))
        self.chat_menu.setTitle(translate("MainWindow", "&Chat"))
        self.stop_action.setText(translate("MainWindow", "&Stop Answer") + "\tEsc")
        self.regenerate_action.setText(translate("MainWindow", "&Regenerate Answer"))
        self.copy_answer_action.setText(translate("MainWindow", "&Copy Last Answer"))
        self.view_menu.setTitle(translate("MainWindow", "&View"))
        self.sidebar_action.setText(translate("MainWindow", "Show &Sidebar"))
        self.sidebar_button.setToolTip(translate("MainWindow", "Show or hide the sidebar (Ctrl+B)"))
        self.sidebar_button.setAccessibleName(translate("MainWindow", "Sidebar"))
        self.theme_menu.setTitle(translate("MainWindow", "&Theme"))
        for theme, action in self.theme_actions.items():
            action.setText(translate("MainWindow", THEMES[theme]))
        self.model_menu.setTitle(translate("MainWindow", "&Model"))
        self.settings_action.setText(translate("MainWindow", "&Settings…"))
        self.reload_action.setText(translate("MainWindow", "&Reload Model"))
        self.help_menu.setTitle(translate("MainWindow", "&Help"))
        self.log_folder_action.setText(translate("MainWindow", "Open &Log Folder"))
        self.about_action.setText(translate("MainWindow", "&About {app}").format(app=APP_NAME))
        self._update_title()
        self._retell()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def _action(self, slot, shortcut=None, icon_name: str | None = None) -> QAction:
        action = QAction(self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        if icon_name:
            action.setIcon(icon(icon_name))
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _connect(self) -> None:
        self.list_devices_requested.connect(self.worker.list_devices)
        self.worker.devices_found.connect(self._on_devices)
        self.worker.answer_failed.connect(self._on_answer_failed)  # after the controller's: the last word is ours
        self.first_run.endpoint_changed.connect(lambda endpoint: self._update_settings(hub_endpoint=endpoint))
        self.first_run.server_requested.connect(self.choose_server)
        self.first_run.download_started.connect(lambda: self._update_settings(download_started=True))
        self.first_run.download_stopped.connect(lambda: self._update_settings(download_started=False))
        controller = self.controller
        self.composer.send_requested.connect(self._send)
        self.composer.images_ready.connect(controller.look_ahead)
        self.composer.edit_submitted.connect(self._edit)
        self.composer.stop_requested.connect(controller.stop)
        self.view.edit_requested.connect(self._begin_edit)
        self.view.continue_requested.connect(self.continue_in_new_chat)
        controller.busy_changed.connect(self._on_busy)
        controller.model_phase_changed.connect(self._on_phase)
        controller.load_stage_changed.connect(self._on_stage)
        controller.model_loaded.connect(self._show_model_summary)
        controller.model_failed.connect(self._on_model_failed)
        controller.message_added.connect(lambda _index: self._update_title())
        controller.message_changed.connect(self._on_message_changed)
        controller.conversation_replaced.connect(self._update_title)
        controller.chat_changed.connect(self._on_chat_changed)
        controller.answer_left_running.connect(self._on_answer_left_running)
        controller.background_answer_finished.connect(self._on_background_answer_finished)
        self.history.failed.connect(lambda text: self.show_error(lambda: text))  # worded by the history, once
        self.history.notice_changed.connect(self._show_history_notice)
        if self.chat_list is not None:
            self.chat_list.chat_chosen.connect(self.show_chat)
            self.chat_list.typed.connect(self._type_in_composer)
            self.chat_list.message_chosen.connect(self.open_message)
            self.chat_list.new_chat_requested.connect(self.new_chat)
            self.chat_list.renamed.connect(self._rename_chat)
            self.chat_list.deleted.connect(self._on_chat_deleted)
        self._on_busy(False)

    def apply_theme(self) -> None:
        self.setStyleSheet(style_sheet())
        self.composer.set_busy(self.composer.busy)  # its icons take the new colours
        self.banner.icon_label.setPixmap(icon("warning").pixmap(QSize(20, 20)))

    def set_theme(self, theme: str) -> None:
        """View > Theme: colour the app at once and remember the choice."""
        use_theme(theme)
        self.theme_actions[theme].setChecked(True)
        self._update_settings(theme=theme)
        self.apply_theme()

    # -- start-up ------------------------------------------------------------------------------------------

    def start(self, options: LoadOptions = NONE_GIVEN) -> asyncio.Task:
        """Show the first page start-up knows of at once (call it before show()), then, in a task, start the model
        thread and find and load the model (see app/ui/startup.py); given options win."""
        self._show_page(self.startup.first_page(options))
        return self._spawn(self._start(options))

    async def _start(self, options: LoadOptions) -> None:
        self.model_thread.start()
        self.list_devices_requested.emit()
        await self.startup.start(options)

    def _show_page(self, page: Page) -> None:
        """The one place that changes the page: the chat's controls take keys and actions only while it shows."""
        widget = {Page.STARTING: self.starting_page, Page.FIRST_RUN: self.first_run, Page.CHAT: self.chat_page}[page]
        changed = widget is not self.pages.currentWidget()
        self.pages.setCurrentWidget(widget)
        chat = page is Page.CHAT
        self.composer.setEnabled(chat)  # a message box out of sight takes no focus and no keys
        for action in (self.new_chat_action, self.attach_action):
            action.setEnabled(chat)
        self._update_sidebar()
        if changed:
            (self.composer if chat else widget).setFocus()

    def toggle_sidebar(self) -> None:
        """View > Show Sidebar (Ctrl+B, the button at the top left): fold the chat list away, or bring it back."""
        self._sidebar_open[self._narrow] = not self._sidebar_open[self._narrow]
        self._update_sidebar()

    def _update_sidebar(self) -> None:
        """The chat list shows beside the chat when the person left it open for this width; never beside another
        page (the first-run page needs the room, and a chat chosen there could not show)."""
        chat = self.pages.currentWidget() is self.chat_page
        self.sidebar_action.setEnabled(chat)
        self.sidebar_action.setChecked(self._sidebar_open[self._narrow])
        if self.chat_list is not None:
            self.chat_list.setVisible(chat and self._sidebar_open[self._narrow])

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        narrow = event.size().width() < SIDEBAR_NARROW
        if narrow != self._narrow:
            self._narrow = narrow
            self._sidebar_open[True] = False  # a window made narrow starts with the chat alone
            self._update_sidebar()

    def reload_model(self) -> None:
        self.startup.reload()

    # -- chat ----------------------------------------------------------------------------------------------

    def _send(self, text: str, images: list[ImageRef]) -> None:
        if self.controller.send(text, images):
            self.composer.clear()

    def _edit(self, index: int, text: str, images: list[ImageRef]) -> None:
        if self.controller.edit(index, text, images):
            self.composer.clear()

    def _begin_edit(self, index: int) -> None:
        message = self.controller.messages[index]
        self.composer.begin_edit(index, message.text, message.images)

    def new_chat(self) -> None:
        self.controller.new_chat()
        self.composer.clear()
        self.composer.setFocus()

    def continue_in_new_chat(self) -> None:
        """The chat outgrew what the model reads at once: a new chat, its latest images attached, to go on."""
        images = self.controller.latest_images()
        self.new_chat()
        self.composer.attach_images(images)

    def open_chat(self, chat_id: int) -> None:
        self.show_chat(chat_id)
        self.composer.setFocus()

    def show_chat(self, chat_id: int) -> None:
        """Show a chat chosen in the sidebar; the focus stays there, where F2 and Delete act on it."""
        self.controller.open_chat(chat_id)
        self.composer.clear()

    def _type_in_composer(self, text: str) -> None:
        self.composer.setFocus()
        self.composer.input.insertPlainText(text)

    def open_message(self, chat_id: int, message_id: int, version: int | None = None) -> None:
        """Show a search hit: its chat, scrolled to the message; a hit in another version of a regenerated answer
        shows that version (as its < 1/2 > would)."""
        if chat_id != self.controller.chat_id:
            self.show_chat(chat_id)
        if version is not None:
            self.controller.show_version(version)
        self.view.reveal_message(message_id)

    def _rename_chat(self, chat_id: int, title: str) -> None:
        if chat_id == self.controller.chat_id:
            self.controller.rename(title)
        else:
            self.history.rename_chat(chat_id, title)

    def _on_chat_deleted(self, chat_id: int) -> None:
        if chat_id == self.controller.chat_id:
            self.new_chat()

    def _on_chat_changed(self) -> None:
        self._update_title()
        if self.chat_list is not None:
            self.chat_list.answering = self.controller.answering_elsewhere
            self.chat_list.refresh(self.controller.chat_id)
        self._update_file_actions()

    def _tell(self, wording: Wording, shown_ms: int = STATUS_SHOWN_MS) -> None:
        """A passing message in the status bar, worded again should the language change while it shows."""
        text = wording()
        self._told = wording, text, time.monotonic() + shown_ms / 1000
        self.statusBar().showMessage(text, shown_ms)

    def _retell(self) -> None:
        """The passing message in the new language, for the time it has left (unless another replaced it)."""
        if self._told is None:
            return
        wording, text, until = self._told
        left_ms = int((until - time.monotonic()) * 1000)
        if left_ms > 0 and self.statusBar().currentMessage() == text:
            self._tell(wording, left_ms)

    def _on_answer_left_running(self, title: str) -> None:
        self._tell(lambda: translate("MainWindow", "The answer in “{title}” is still being written; it is saved in "
                                                   "that chat.").format(title=title))

    def _on_background_answer_finished(self, _chat_id: int, title: str, status: str) -> None:
        def ended() -> str:
            said = {Status.COMPLETE: translate("MainWindow", "The answer in “{title}” is finished."),
                    Status.STOPPED: translate("MainWindow", "The answer in “{title}” was stopped."),
                    Status.FAILED: translate("MainWindow", "The answer in “{title}” could not be finished.")}
            return said.get(status, translate("MainWindow", "The answer in “{title}” ended.")).format(title=title)

        self._tell(ended)
        if self.chat_list is not None:
            self.chat_list.answering = self.controller.answering_elsewhere
            if not self.chat_list.search_edit.text():
                self.chat_list.refresh()  # that chat moves to the top: it was the last one active

    def _update_file_actions(self) -> None:
        busy = self.transfer_bar.running
        if self.file_actions:
            self.export_markdown_action.setEnabled(not busy and self.controller.chat_id is not None)
            self.export_json_action.setEnabled(not busy and self.controller.chat_id is not None)
            self.import_action.setEnabled(not busy and self.history.writable)

    def export_chat(self, kind: str) -> None:
        if self.controller.chat_id is None or self.transfer_bar.running:
            return
        folder = QFileDialog.getExistingDirectory(self, translate("MainWindow", "Export the chat to which folder?"),
                                                  dialog_folder(self.history, CHAT_FILES_FOLDER, DOCUMENTS))
        if folder:
            self.history.remember(CHAT_FILES_FOLDER, folder)
            cancel = self.transfer_bar.begin(translate("MainWindow", "Exporting the chat…"))
            self._update_file_actions()
            self._spawn(self._export(self.controller.chat_id, Path(folder), kind, cancel))

    async def _export(self, chat_id: int, folder: Path, kind: str, cancel: threading.Event) -> None:
        try:
            path = await self.history.export_chat(chat_id, folder, kind, self.transfer_bar.set_progress, cancel)
        finally:
            self.transfer_bar.finish()
            self._update_file_actions()
        if path is not None:
            self._tell(lambda: translate("MainWindow", "Exported to {path}").format(path=path))

    def import_chat(self) -> None:
        if not self.history.writable or self.transfer_bar.running:
            return
        path, _filter = QFileDialog.getOpenFileName(self, translate("MainWindow", "Import a chat"),
                                                    dialog_folder(self.history, CHAT_FILES_FOLDER, DOCUMENTS),
                                                    translate("MainWindow", "Chat files (*.json);;All files (*)"))
        if path:
            self.history.remember(CHAT_FILES_FOLDER, str(Path(path).parent))
            cancel = self.transfer_bar.begin(translate("MainWindow", "Importing {name}…").format(name=Path(path).name))
            self._update_file_actions()
            self._spawn(self._import(Path(path), cancel))

    async def _import(self, path: Path, cancel: threading.Event) -> None:
        try:
            chat_id = await self.history.import_chat(path, self.transfer_bar.set_progress, cancel)
        finally:
            self.transfer_bar.finish()
            self._update_file_actions()
        if chat_id is not None:
            self.open_chat(chat_id)

    def copy_last_answer(self) -> None:
        answers = [message for message in self.controller.messages if message.role == "assistant" and message.text]
        if answers:
            QGuiApplication.clipboard().setText(answers[-1].text)

    def _escape(self) -> None:
        if self.controller.busy:
            self.controller.stop()
        elif self.composer.editing_index is not None:
            self.composer.cancel_edit()
        elif self.first_run.isVisible():
            self.first_run.cancel()

    def _on_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy)
        self.stop_action.setEnabled(busy)
        can_regenerate = not busy and bool(self.controller.messages)
        self.regenerate_action.setEnabled(can_regenerate and self.controller.messages[-1].role == "assistant")

    def _on_message_changed(self, index: int) -> None:
        message = self.controller.messages[index]
        if message.role == "assistant" and not message.in_flight:
            self._show_model_summary(self.controller.model_summary)
            if self.chat_list is not None and not self.chat_list.search_edit.text():
                self.chat_list.refresh()  # the chat moves to the top: it was the last one active

    def _update_title(self) -> None:
        self.setWindowTitle(f"{self.controller.title} — {APP_NAME}")

    # -- drops ---------------------------------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self.pages.currentWidget() is self.chat_page and (mime_has_attachment(event.mimeData())
                                                            or event.mimeData().hasUrls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        if self.composer.attach_from_mime(event.mimeData()):
            event.acceptProposedAction()
            self.composer.setFocus()
        else:
            event.ignore()

    # -- model status --------------------------------------------------------------------------------------

    def _on_phase(self, phase: ModelPhase) -> None:
        loading = phase is ModelPhase.LOADING
        self.load_progress.setVisible(loading)
        if loading:
            self.banner.hide()
            self._show_model_status(lambda: translate("MainWindow", "Loading the model…"))

    def _on_stage(self, stage: str) -> None:
        if stage:
            self.worded.show(self.model_label.setText, lambda: stage_text(stage))

    def _show_model_status(self, model: Wording, device: Wording = str, memory: Wording = str) -> None:
        """The status bar's model, device and memory labels (`str`: empty); each worded again in a new language."""
        self.worded.show(self.model_label.setText, model)
        self.worded.show(self.device_label.setText, device)
        self.worded.show(self.memory_label.setText, memory)

    def _show_model_summary(self, summary: dict) -> None:
        if not summary:
            return
        self.composer.context_length = int(summary.get("context_length", DEFAULT_CONTEXT))
        name = display_model_name(str(summary.get("name", "")))

        def model() -> str:
            return name if summary.get("can_see_images", True) else translate(
                "MainWindow", "{model} (text only: this model cannot see images)").format(model=name)

        if summary.get("server"):
            self._show_model_status(model, lambda: translate("MainWindow", "on {server}")
                                    .format(server=summary["server"]))
            return

        def device() -> str:
            weights = {"int8": translate("MainWindow", " · 8-bit weights"),
                       "int4": translate("MainWindow", " · 4-bit weights")}.get(str(summary.get("quantize")), "")
            engine = " · llama.cpp" if summary.get("engine") == "llama.cpp" else ""  # PyTorch is the default's
            return f"{summary.get('device', '')} · {summary.get('dtype', '')}{weights}{engine}"

        self._show_model_status(model, device, lambda: human_megabytes(float(summary.get("memory_mb", 0.0))))

    def _on_model_failed(self, problem: Problem) -> None:
        self.load_progress.hide()
        if problem.code is Remedy.CHECK_SERVER:
            self._show_server_unreachable(problem)
            return
        self.worded.show(self.model_label.setText, lambda: translate("MainWindow", "No model loaded"))

        def compose() -> tuple[str, Actions]:
            advice = error_text(problem)  # a translated headline on its line, then the model stack's details
            actions: Actions = [(translate("MainWindow", "Settings…"), self.open_settings)]
            if advice.setting in SETTING_BUTTONS:
                actions = [(translate("MainWindow", SETTING_BUTTONS[advice.setting]),
                            lambda: self.open_settings(advice.setting))]
            actions += [(translate("MainWindow", "Retry"), self.reload_model),
                        (translate("MainWindow", "Open Log Folder"), self.open_log_folder)]
            return translate("MainWindow", "<b>The model could not be loaded.</b> {reason}").format(
                reason="<br>".join(html.escape(part) for part in (advice.headline, advice.details) if part)), actions

        self.banner.show_message(compose)

    def _on_answer_failed(self, _request_id: int, problem: Problem) -> None:
        if problem.code is Remedy.CHECK_SERVER:
            self._show_server_unreachable(problem)

    def _show_server_unreachable(self, problem: Problem) -> None:
        """The model server does not answer (at launch or mid-chat): the status bar says so instead of naming it as
        if it were there, and the banner offers to load the server's model again."""
        server = api_url(self.settings.server_url)
        self._show_model_status(lambda: translate("MainWindow", "Model server unreachable"),
                                lambda: translate("MainWindow", "at {server}").format(server=server))

        def compose() -> tuple[str, Actions]:
            text = error_text(problem)  # "not answering", what to do; then what happened, naming the server
            return (f"<b>{html.escape(text.headline)}</b><br>{html.escape(text.details)}",
                    [(translate("MainWindow", "Retry"), self.reload_model),
                     (translate("MainWindow", "Settings…"), self.open_settings)])

        self.banner.show_message(compose)

    def bring_to_front(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    def launched_again(self, launch: Launch) -> None:
        """Another launch of the app asked for this window: show it, attach its files, load the model it named."""
        self.bring_to_front()
        if launch.files:
            self.open_files(list(launch.files))
        if not launch.options.given:
            return
        if self.pages.currentWidget() is self.first_run:
            # The banner belongs to the chat page; the status bar shows under the first-run page too.
            self._tell(lambda: translate("MainWindow", "The model named by the new launch was not loaded: this "
                                                       "window is still getting its first model. Choose it in "
                                                       "Settings once that is done."), 15_000)
        else:
            self.startup.start_again(launch.options)

    def open_files(self, paths: list[str]) -> None:
        """Files the app was opened with ("Open With", or the command line): the composer takes the image."""
        log.info("opening %d file(s) from a launch", len(paths))
        self.composer.attach_paths(paths)
        self.composer.setFocus()

    def show_error(self, wording: Wording) -> None:
        """An unexpected problem, told without a traceback (the log has it); worded again in a new language."""
        self.banner.show_message(lambda: (html.escape(wording()), [(translate("MainWindow", "Open Log Folder"),
                                                                     self.open_log_folder)]))

    # -- settings and help ---------------------------------------------------------------------------------

    def _on_devices(self, devices: list) -> None:
        self.devices = [tuple(device) for device in devices]

    def open_settings(self, field: str = "") -> None:
        """Model > Settings; `field` ("vision_tower", "model", ...) is the one to start in, selected."""
        context = int(self.controller.model_summary.get("context_length", MAX_ANSWER_TOKENS))
        running = self.startup.model_of_this_run if self.controller.phase is ModelPhase.READY else ""
        dialog = SettingsDialog(self.settings, self.devices, self, context_length=context, running_model=running)
        start = {"model": dialog.model_edit, "vision_tower": dialog.tower_edit, "device": dialog.device_combo,
                 "dtype": dialog.dtype_combo}.get(field)
        if start is not None:
            start.setFocus(Qt.FocusReason.OtherFocusReason)
            if start is dialog.model_edit or start is dialog.tower_edit:
                start.selectAll()
        try:
            if dialog.exec() == SettingsDialog.DialogCode.Accepted:
                self.apply_settings(dialog.result_settings())
        finally:
            dialog.deleteLater()  # else every Settings ever opened stays a child of the window

    def choose_server(self) -> None:
        """The first-run page's "Use a model server…": ask for the server; with one, the chat opens as it loads."""
        dialog = self.server_dialog = ServerDialog(self.settings, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_settings(self.settings)))
        dialog.open()

    @property
    def settings(self) -> Settings:
        return self.app_settings.current

    def apply_settings(self, new: Settings) -> None:
        # The file holds no key when the keyring does, while the dialog shows the keyring's: compare like with like
        old = replace(self.settings, server_api_key=api_key(self.settings))
        self.app_settings.replace(keep_api_key(new))
        if new.language != old.language:
            install_translators(QApplication.instance(), new.language)  # every widget words its texts again
        self.startup.settings_changed(old, new)

    def _update_settings(self, **changes) -> None:
        self.app_settings.update(**changes)

    def _show_history_notice(self) -> None:
        notice = self.history.notice
        if notice is not None:
            self.notice.show_message(self._word_history_notice, closable=notice.saving)

    def _word_history_notice(self) -> tuple[str, Actions]:
        """The history's notice as it words it now: asked again on each language change."""
        notice = self.history.notice
        return (html.escape(notice.text) if notice is not None else "",
                [(translate("MainWindow", "Show Folder"), self._show_history_folder)])

    def _show_settings_notice(self) -> None:
        """What settings.json held that could not be used, said once at start (as long as the person keeps it)."""
        problems = self.app_settings.problems
        if problems:
            self.settings_notice.show_message(lambda: (html.escape(" ".join(problem() for problem in problems)),
                                                       [(translate("MainWindow", "Settings…"), self.open_settings)]))

    def _show_history_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.history.notice.folder)))

    def open_log_folder(self) -> None:
        """Show the log folder in the file manager; where none opens it, show its path with a Copy button."""
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_dir))):
            return
        box = QMessageBox(QMessageBox.Icon.Information, translate("MainWindow", "Log folder"),
                          translate("MainWindow", "No file manager could open the log folder. It is here:"),
                          parent=self)
        box.setInformativeText(str(self.log_dir))
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = box.addButton(translate("MainWindow", "&Copy Path"), QMessageBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(str(self.log_dir)))
        box.addButton(QMessageBox.StandardButton.Close)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.log_folder_box = box
        box.open()

    def about_text(self) -> str:
        """Help > About: the version, the model in use and where it comes from, the licences."""
        summary = self.controller.model_summary
        if summary:
            model = translate("MainWindow", "{model} on {device} ({dtype})").format(
                model=html.escape(display_model_name(str(summary.get("name", "")))),
                device=html.escape(str(summary.get("device", ""))), dtype=html.escape(str(summary.get("dtype", ""))))
        else:
            model = translate("MainWindow", "none loaded yet")
        return f"<h3>{APP_NAME} {__version__}</h3>" + translate(
            "MainWindow",
            "<p>Chat about images with the Xmodel-VLM vision-language model, locally on this computer.</p>"
            "<p><b>Model in use:</b> {model}<br>"
            "Xmodel-VLM is made by XiaoduoAILab "
            "(<a href='https://huggingface.co/XiaoduoAILab/Xmodel_VLM'>its page</a> gives its licence); it sees "
            "through OpenAI's CLIP ViT-L/14-336.</p>"
            "<p><b>Licence:</b> {app} is free software under the Apache License 2.0. "
            "It uses Qt {qt} through PySide6 (LGPLv3), PyTorch and Hugging Face transformers.</p>",
        ).format(model=model, app=APP_NAME, qt=qVersion())

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.NoIcon, translate("MainWindow", "About {app}").format(app=APP_NAME),
                          self.about_text(),

                          QMessageBox.StandardButton.Close, self)
        box.setIconPixmap(app_icon().pixmap(QSize(64, 64)))
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.about_box = box
        box.open()

    # -- closing -------------------------------------------------------------------------------------------

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the geometry, stop a download and the answer, end the model thread."""
        if not self._closing:
            self._closing = True
            self.hide()  # what follows may wait a moment for the threads; the person need not watch it
            self._update_settings(window_geometry=bytes(self.saveGeometry().toBase64().data()).decode())
            self.first_run.shutdown()
            self.controller.close()  # every answer still being written is stopped and saved as it stands
            self.shutdown()
            self.history.close()
        event.accept()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """End the model thread (see app/model/worker.py); False if it was still loading at the timeout."""
        if not self.model_thread.thread.isRunning():
            return True
        return self.model_thread.stop(timeout_ms)
