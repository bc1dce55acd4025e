"""The main window: first-run page or chat (conversation, composer, banner), menus, status bar, drops."""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QByteArray, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
    QShortcut,
)
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from xvlm_core.errors import XvlmError

from app import APP_NAME
from app.chat_controller import DONE, FAILED, STOPPED, ChatController, ModelPhase
from app.chat_list import ChatList
from app.composer import Composer, mime_has_attachment
from app.conversation_view import ConversationView
from app.first_run import FirstRunPage, HubDownloads, locate_model
from app.icons import app_icon, icon
from app.settings import Settings, SettingsDialog, SettingsFile
from app.store import ChatStore
from app.theme import style_sheet
from app.worker import LoadRequest, ModelThread, ModelWorker

log = logging.getLogger(__name__)

DEFAULT_SIZE = QSize(1100, 780)


def display_model_name(name: str) -> str:
    """`org/repo` for a hub cache snapshot folder, else the folder's own name (or the repo id as given)."""
    parts = Path(name).parts
    for part in parts:
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return Path(name).name or name


def human_megabytes(megabytes: float) -> str:
    return f"{megabytes / 1024:.1f} GB" if megabytes >= 1024 else f"{megabytes:.0f} MB"


class Banner(QFrame):
    """A message across the top of the chat with what to do about it (a failed load, an unexpected error)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setAccessibleName("Problem")
        self.icon_label = QLabel(self)
        self.icon_label.setPixmap(icon("warning").pixmap(QSize(20, 20)))
        self.text = QLabel(self)
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QHBoxLayout()
        close = QToolButton(self)
        close.setIcon(icon("close"))
        close.setAutoRaise(True)
        close.setAccessibleName("Dismiss")
        close.setToolTip("Dismiss")
        close.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addLayout(self.buttons)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, actions: list[tuple[str, object]]) -> None:
        while self.buttons.count():
            widget = self.buttons.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        for label, callback in actions:
            button = QPushButton(label, self)
            button.clicked.connect(callback)
            self.buttons.addWidget(button)
        self.text.setText(text)
        self.show()


class MainWindow(QMainWindow):
    list_devices_requested = Signal()

    def __init__(
        self,
        settings_file: SettingsFile,
        settings: Settings | None = None,
        worker: ModelWorker | None = None,
        downloads: HubDownloads | None = None,
        log_dir: Path | None = None,
        store: ChatStore | None = None,
        notices: Sequence[str] = (),
    ):
        super().__init__()
        self.store = store
        self.settings_file = settings_file
        self.settings = settings or settings_file.load()
        self.downloads = downloads or HubDownloads()
        self.log_dir = log_dir
        self.devices: list[tuple[str, str]] = []
        self._tasks: set[asyncio.Task] = set()
        self._closing = False
        self._overrides: dict[str, str] = {}  # from the command line, for this run only
        self._current_model: str | None = None  # what was last loaded (a folder or a repo id)
        self.export_actions: list[QAction] = []

        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.resize(DEFAULT_SIZE)
        self.setMinimumSize(QSize(520, 420))

        self.controller = ChatController(self.settings, store)
        self.worker = worker or ModelWorker()
        self.model_thread = ModelThread(self.worker)
        self.controller.connect_worker(self.worker)
        self.list_devices_requested.connect(self.worker.list_devices)
        self.worker.devices_found.connect(self._on_devices)

        self.first_run = FirstRunPage(self.downloads, self.settings.hub_endpoint, self.settings.vision_tower)
        self.first_run.endpoint_changed.connect(lambda endpoint: self._update_settings(hub_endpoint=endpoint))
        self.first_run.download_started.connect(lambda: self._update_settings(download_started=True))
        self.first_run.download_stopped.connect(lambda: self._update_settings(download_started=False))

        self.banner = Banner()
        self.view = ConversationView(self.controller)
        self.composer = Composer()
        if store is not None and not store.read_only:
            self.composer.prepare_image = store.prepare_image
        chat_page = QWidget()
        chat_layout = QVBoxLayout(chat_page)
        chat_layout.setContentsMargins(0, 0, 0, 0)
        chat_layout.setSpacing(0)
        banner_holder = QVBoxLayout()
        banner_holder.setContentsMargins(12, 8, 12, 0)
        banner_holder.addWidget(self.banner)
        chat_layout.addLayout(banner_holder)
        chat_layout.addWidget(self.view, 1)
        chat_layout.addWidget(self.composer)
        self.chat_page = chat_page

        self.pages = QStackedWidget()
        self.pages.addWidget(chat_page)
        self.pages.addWidget(self.first_run)
        self.chat_list: ChatList | None = None
        if store is not None:
            self.chat_list = ChatList(store)
            self.splitter = QSplitter()
            self.splitter.addWidget(self.chat_list)
            self.splitter.addWidget(self.pages)
            self.splitter.setStretchFactor(1, 1)
            self.splitter.setSizes([250, DEFAULT_SIZE.width() - 250])
            self.splitter.setCollapsible(1, False)
            self.setCentralWidget(self.splitter)
        else:
            self.setCentralWidget(self.pages)

        self._build_status_bar()
        self._build_menus()
        self._connect()
        self.apply_theme()
        # The palette follows the scheme a moment later; restyle once it has.
        QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _scheme: QTimer.singleShot(0, self.apply_theme))
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode()))
        self._update_title()
        self.composer.setFocus()
        if store is not None and store.recovered_from is not None:
            notices = [*notices, f"The chat history could not be read, so a new one was started. "
                                 f"The old file was kept as {store.recovered_from}."]
        if notices:
            self.show_error(" ".join(notices))

    # -- building ------------------------------------------------------------------------------------------

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.model_label = QLabel("No model loaded")
        self.model_label.setAccessibleName("Model")
        self.load_progress = QProgressBar()
        self.load_progress.setRange(0, 0)  # busy: the load's stages have no byte counts
        self.load_progress.setMaximumWidth(120)
        self.load_progress.setMaximumHeight(12)
        self.load_progress.setAccessibleName("Loading the model")
        self.load_progress.hide()
        self.device_label = QLabel("")
        self.device_label.setAccessibleName("Device and precision")
        self.memory_label = QLabel("")
        self.memory_label.setAccessibleName("Memory in use")
        self.memory_label.setToolTip("Memory the model uses on its device")
        bar.addWidget(self.model_label)
        bar.addWidget(self.load_progress)
        bar.addPermanentWidget(self.device_label)
        bar.addPermanentWidget(self.memory_label)

    def _build_menus(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self.new_chat_action = self._action("&New Chat", self.new_chat, QKeySequence.StandardKey.New, "new-chat")
        self.attach_action = self._action("&Attach Image…", self.composer.choose_image, QKeySequence.StandardKey.Open,
                                          "attach")
        file_menu.addAction(self.new_chat_action)
        file_menu.addAction(self.attach_action)
        if self.store is not None:
            file_menu.addSeparator()
            self.export_markdown_action = self._action("Export Chat as &Markdown…", lambda: self.export_chat("md"))
            self.export_json_action = self._action("Export Chat as &JSON…", lambda: self.export_chat("json"))
            self.export_actions = [self.export_markdown_action, self.export_json_action]
            for action in self.export_actions:
                action.setEnabled(False)  # until a chat is saved
            file_menu.addActions(self.export_actions)
            file_menu.addAction(self._action("&Import Chat…", self.import_chat))
        file_menu.addSeparator()
        file_menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))

        chat_menu = menu.addMenu("&Chat")
        # Esc itself is a window shortcut (below), as it also leaves editing; the menu only names it.
        self.stop_action = self._action("&Stop Answer\tEsc", self.controller.stop, None, "stop")
        self.regenerate_action = self._action("&Regenerate Answer", self.controller.regenerate,
                                              QKeySequence("Ctrl+Shift+R"), "regenerate")
        self.copy_answer_action = self._action("&Copy Last Answer", self.copy_last_answer,
                                               QKeySequence("Ctrl+Shift+C"), "copy")
        chat_menu.addAction(self.stop_action)
        chat_menu.addAction(self.regenerate_action)
        chat_menu.addAction(self.copy_answer_action)

        model_menu = menu.addMenu("&Model")
        self.settings_action = self._action("&Settings…", self.open_settings, QKeySequence("Ctrl+,"), "settings")
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        model_menu.addAction(self.settings_action)
        model_menu.addAction(self._action("&Reload Model", self.reload_model))

        help_menu = menu.addMenu("&Help")
        help_menu.addAction(self._action("Open &Log Folder", self.open_log_folder))
        about = self._action(f"&About {APP_NAME}", self.show_about)
        about.setMenuRole(QAction.MenuRole.AboutRole)
        help_menu.addAction(about)

        # Esc stops the answer, or leaves editing; it works wherever the focus is in this window.
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, self._escape)
        QShortcut(QKeySequence("Ctrl+L"), self, self.composer.setFocus)

    def _action(self, text: str, slot, shortcut=None, icon_name: str | None = None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        if icon_name:
            action.setIcon(icon(icon_name))
        action.triggered.connect(lambda _checked=False: slot())
        return action

    def _connect(self) -> None:
        controller = self.controller
        self.composer.send_requested.connect(self._send)
        self.composer.edit_submitted.connect(self._edit)
        self.composer.stop_requested.connect(controller.stop)
        self.view.edit_requested.connect(self._begin_edit)
        controller.busy_changed.connect(self._on_busy)
        controller.model_phase_changed.connect(self._on_phase)
        controller.load_stage_changed.connect(self._on_stage)
        controller.model_loaded.connect(self._show_model_summary)
        controller.model_failed.connect(self._on_model_failed)
        controller.message_added.connect(lambda _index: self._update_title())
        controller.message_changed.connect(self._on_message_changed)
        controller.conversation_replaced.connect(self._update_title)
        controller.chat_changed.connect(self._on_chat_changed)
        controller.store_failed.connect(self.show_error)
        if self.chat_list is not None:
            self.chat_list.chat_chosen.connect(self.open_chat)
            self.chat_list.message_chosen.connect(self.open_message)
            self.chat_list.new_chat_requested.connect(self.new_chat)
            self.chat_list.renamed.connect(self._rename_chat)
            self.chat_list.deleted.connect(self._on_chat_deleted)
            self.chat_list.failed.connect(self.show_error)
        self._on_busy(False)

    def apply_theme(self) -> None:
        self.setStyleSheet(style_sheet())
        self.composer.set_busy(self.composer.busy)  # its icons take the new colours

    # -- start-up ------------------------------------------------------------------------------------------

    async def start(
        self, model: str = "", vision_tower: str = "", device: str = "", dtype: str = "", quantize: str = ""
    ) -> None:
        """Find the model (or download it on the first-run page), then load it. Arguments override settings."""
        self.model_thread.start()
        self.list_devices_requested.emit()
        model = model or self.settings.model
        self._overrides = {"vision_tower": vision_tower, "device": device, "dtype": dtype, "quantize": quantize}
        try:
            target, spec = await asyncio.get_running_loop().run_in_executor(
                None, locate_model, model, self.downloads)
        except Exception as exc:  # the model hub's lookup: report it, and offer the settings
            log.exception("looking for the model failed")
            self._on_model_failed(f"Could not look for the model: {exc}")
            return
        if target is None:
            self.pages.setCurrentWidget(self.first_run)
            target = await self.first_run.obtain(spec, resume=self.settings.download_started)
            if self.first_run.picked_folder:
                self._update_settings(model=target)
            self.pages.setCurrentWidget(self.chat_page)
            self.composer.setFocus()
        self._load(target)

    def _load(self, model: str) -> None:
        settings, overrides = self.settings, self._overrides
        self._current_model = model
        self.controller.load_model(LoadRequest(
            model=model,
            vision_tower=overrides.get("vision_tower") or settings.vision_tower,
            device=overrides.get("device") or settings.device,
            dtype=overrides.get("dtype") or settings.dtype,
            quantize=overrides.get("quantize") or settings.quantize,
        ))

    def reload_model(self) -> None:
        model = self._current_model
        if model is None:
            self._spawn(self.start())
        else:
            self._load(model)

    # -- chat ----------------------------------------------------------------------------------------------

    def _send(self, text: str, image: str | None) -> None:
        if self.controller.send(text, image):
            self.composer.clear()

    def _edit(self, index: int, text: str, image: str | None) -> None:
        if self.controller.edit(index, text, image):
            self.composer.clear()

    def _begin_edit(self, index: int) -> None:
        message = self.controller.messages[index]
        self.composer.begin_edit(index, message.text, message.image)

    def new_chat(self) -> None:
        self.controller.new_chat()
        self.composer.clear()
        self.composer.setFocus()

    def open_chat(self, chat_id: int) -> None:
        self.controller.open_chat(chat_id)
        self.composer.clear()
        self.composer.setFocus()

    def open_message(self, chat_id: int, message_id: int) -> None:
        """Show a search hit: its chat, scrolled to the message."""
        if chat_id != self.controller.chat_id:
            self.open_chat(chat_id)
        self.view.reveal_message(message_id)

    def _rename_chat(self, chat_id: int, title: str) -> None:
        if chat_id == self.controller.chat_id:
            self.controller.rename(title)
        elif self.store is not None:
            self.store.rename_chat(chat_id, title)

    def _on_chat_deleted(self, chat_id: int) -> None:
        if chat_id == self.controller.chat_id:
            self.new_chat()

    def _on_chat_changed(self) -> None:
        self._update_title()
        if self.chat_list is not None:
            self.chat_list.refresh(self.controller.chat_id)
        has_chat = self.controller.chat_id is not None
        for action in self.export_actions:
            action.setEnabled(has_chat)

    def export_chat(self, kind: str) -> None:
        if self.store is None or self.controller.chat_id is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Export the chat to which folder?")
        if not folder:
            return
        export = self.store.export_markdown if kind == "md" else self.store.export_json
        try:
            path = export(self.controller.chat_id, Path(folder))
        except (XvlmError, OSError) as exc:
            log.exception("export failed")
            self.show_error(f"The chat could not be exported: {exc}")
            return
        self.statusBar().showMessage(f"Exported to {path}", 8000)

    def import_chat(self) -> None:
        if self.store is None:
            return
        path, _filter = QFileDialog.getOpenFileName(self, "Import a chat", "", "Chat files (*.json);;All files (*)")
        if not path:
            return
        try:
            chat_id = self.store.import_json(Path(path))
        except (XvlmError, OSError) as exc:
            log.exception("import failed")
            self.show_error(f"The chat could not be imported: {exc}")
            return
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
        if message.role == "assistant" and message.status in (DONE, STOPPED, FAILED):
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
            self.model_label.setText("Loading the model…")
            self.device_label.clear()
            self.memory_label.clear()

    def _on_stage(self, stage: str) -> None:
        if stage:
            self.model_label.setText(stage)

    def _show_model_summary(self, summary: dict) -> None:
        if not summary:
            return
        name = display_model_name(str(summary.get("name", "")))
        self.model_label.setText(name if summary.get("can_see_images", True)
                                 else f"{name} (text only: this model cannot see images)")
        weights = " · 8-bit weights" if summary.get("quantize") == "int8" else ""
        self.device_label.setText(f"{summary.get('device', '')} · {summary.get('dtype', '')}{weights}")
        self.memory_label.setText(human_megabytes(float(summary.get("memory_mb", 0.0))))

    def _on_model_failed(self, error: str) -> None:
        self.model_label.setText("No model loaded")
        self.load_progress.hide()
        actions = [("Settings…", self.open_settings), ("Retry", self.reload_model),
                   ("Open Log Folder", self.open_log_folder)]
        self.banner.show_message(f"<b>The model could not be loaded.</b> {html.escape(error)}", actions)

    def bring_to_front(self) -> None:
        """Another launch of the app asked for this window."""
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    def show_error(self, text: str) -> None:
        """An unexpected problem, told without a traceback (the log has it)."""
        self.banner.show_message(html.escape(text), [("Open Log Folder", self.open_log_folder)])

    # -- settings and help ---------------------------------------------------------------------------------

    def _on_devices(self, devices: list) -> None:
        self.devices = [tuple(device) for device in devices]

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self.devices, self)
        if dialog.exec() != SettingsDialog.DialogCode.Accepted:
            return
        self.apply_settings(dialog.result_settings())

    def apply_settings(self, new: Settings) -> None:
        old = self.settings
        self.settings = new
        self.controller.settings = new
        self.settings_file.save(new)
        if old.model_changed(new):
            self._overrides = {}
            if new.model != old.model:
                self._current_model = None
            self.reload_model()

    def _update_settings(self, **changes) -> None:
        self.settings = replace(self.settings, **changes)
        self.controller.settings = self.settings
        self.settings_file.save(self.settings)

    def open_log_folder(self) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.log_dir)))

    def show_about(self) -> None:
        QMessageBox.about(self, f"About {APP_NAME}",
                          f"<h3>{APP_NAME}</h3><p>Chat about images with the Xmodel-VLM vision-language model, "
                          "locally on this computer.</p>")

    # -- closing -------------------------------------------------------------------------------------------

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Save the geometry, stop a download and the answer, end the model thread."""
        if not self._closing:
            self._closing = True
            self.hide()  # what follows may wait a moment for the threads; the person need not watch it
            self._update_settings(window_geometry=bytes(self.saveGeometry().toBase64().data()).decode())
            self.first_run.shutdown()
            if self.controller.busy:
                self.controller.stop()
            self.shutdown()
            if self.store is not None:
                self.controller.new_chat()  # an answer still streaming is saved as it is
                try:
                    self.store.purge_deleted()  # deleted chats could be undone until now
                    self.store.close()
                except (XvlmError, OSError) as exc:
                    log.error("closing the chat history: %s", exc)
        event.accept()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """End the model thread (see app/worker.py); False if it was still loading at the timeout."""
        if not self.model_thread.thread.isRunning():
            return True
        return self.model_thread.stop(timeout_ms)
