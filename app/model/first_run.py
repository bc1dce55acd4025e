"""First launch: find the model, or show what would be downloaded and download it (resumably), or take a folder.

The flow is one coroutine that reads top to bottom (`FirstRunPage.obtain`): plan -> wait for the person ->
download -> the model's folder. Every hub call blocks, so each runs on the event loop's thread pool; the
download's progress crosses back to this thread as a signal, at most `PROGRESS_PER_SECOND` times a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QBoxLayout,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from xvlm_core.errors import Problem, Remedy, problem_of  # torch-free

from app.error_text import error_text
from app.i18n import Worded, Wording, translate
from app.icons import icon
from app.model.worker import import_core
from app.theme import error_colour

log = logging.getLogger(__name__)

PROGRESS_PER_SECOND = 20
CARD_WIDTH = 680  # the card keeps this width in every state, or the page's width where that is narrower
COMPACT_HEIGHT = 560  # a page shorter than this packs the card tighter, so its buttons stay in sight at 600x400


class HubDownloads:
    """The hub calls this page makes. Each one blocks: call them off the UI thread."""

    def destination(self) -> Path:
        """Where a download goes: the hub cache. Local only, known before the hub answers."""
        return import_core("xvlm_core.hub").default_cache_dir()

    def free_bytes(self, path: Path) -> int:
        """Free space on the disk that will hold `path`. Local only."""
        return import_core("xvlm_core.hub").free_bytes(path)

    def spec(self, name: str) -> Any:
        hub = import_core("xvlm_core.hub")
        return hub.model_spec(name or None)

    def installed_folder(self, spec: Any) -> Path | None:
        hub = import_core("xvlm_core.hub")
        return hub.installed_model_folder(spec)

    def plan(self, spec: Any, endpoint: str, cancel: threading.Event, on_progress: Callable[[Any], None]) -> Any:
        """The download's plan; `on_progress` hears of the waits before the hub is asked again."""
        hub = import_core("xvlm_core.hub")
        return hub.plan_download(spec, endpoint=endpoint or None, cancel=cancel, on_progress=on_progress)

    def download(self, plan: Any, on_progress: Callable[[Any], None], cancel: threading.Event, endpoint: str) -> Path:
        hub = import_core("xvlm_core.hub")
        return hub.download_model(plan.spec, on_progress, cancel, endpoint=endpoint or None, plan=plan)

    def validate_folder(self, folder: Path, vision_tower: str = "") -> None:
        hub = import_core("xvlm_core.hub")
        hub.validate_local_folder(folder, vision_tower or None)

    def looks_like_repo_id(self, name: str) -> bool:
        return import_core("xvlm_core.hub").looks_like_repo_id(name)


def local_folder(name: str) -> str | None:
    """`name` as a folder on this machine, if it is one; None for a hub repo id, "" or a path that is not there."""
    return str(Path(name).expanduser()) if name and Path(name).expanduser().exists() else None


def locate_model(name: str, downloads: HubDownloads) -> tuple[str | None, Any]:
    """(what to load, None) when the model is on this machine, else (None, the spec to download). No network.

    `name` is a folder, a hub repo id, or "" for the default model.
    """
    if local_folder(name) or (name and not downloads.looks_like_repo_id(name)):
        return str(Path(name).expanduser()), None  # a folder (a wrong one fails to load, with the reason)
    spec = downloads.spec(name)
    folder = downloads.installed_folder(spec)
    return (str(folder), None) if folder is not None else (None, spec)


class _ProgressRelay(QObject):
    """Called on the hub's thread; hands progress to the UI thread at most `PROGRESS_PER_SECOND` times a second,
    and every wait before the hub is asked again (an event with `retry_in_s`) at once."""

    progressed = Signal(object)  # xvlm_core.hub.DownloadProgress

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if (progress.retry_in_s is not None or now - self._last >= 1.0 / PROGRESS_PER_SECOND
                or progress.done_bytes >= progress.total_bytes):
            self._last = now
            self.progressed.emit(progress)


class ErrorNote(QFrame):
    """What went wrong: a sentence in the error colour with an icon, and the technical details behind "Details"."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.problem: Problem | None = None
        self.icon_label = QLabel()
        self.headline = QLabel()
        self.headline.setObjectName("errorText")
        self.headline.setWordWrap(True)
        self.headline.setTextFormat(Qt.TextFormat.PlainText)
        self.headline.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_button = QToolButton()
        self.details_button.setCheckable(True)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.toggled.connect(self._show_details)
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.PlainText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignTop)
        row.addWidget(self.headline, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.details)
        self.retranslate()
        self.hide()

    def retranslate(self) -> None:
        self.setAccessibleName(translate("FirstRunPage", "Problem"))
        self.details_button.setText(translate("FirstRunPage", "Details"))
        self.details.setAccessibleName(translate("FirstRunPage", "Details"))
        if self.problem is not None:
            text = error_text(self.problem)
            self.headline.setText(text.headline or text.details)
            self.details.setText(text.details)
            self.details_button.setVisible(bool(text.headline and text.details))

    def show_error(self, problem: Problem) -> None:
        """The headline (what to do), and the details (what happened) folded away; the details alone when the
        error has no headline of its own."""
        self.problem = problem
        self.retranslate()
        self.details_button.setChecked(False)
        self._paint_icon()
        self.show()

    def _show_details(self, shown: bool) -> None:
        self.details.setVisible(shown)
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _paint_icon(self) -> None:
        self.icon_label.setPixmap(icon("warning", error_colour()).pixmap(QSize(18, 18)))

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._paint_icon()  # the error colour of the theme now in use
        elif event.type() == QEvent.Type.LanguageChange:
            self.retranslate()
        super().changeEvent(event)


class FirstRunPage(QWidget):
    """What will be downloaded, from where, how big, to where; then the download with bytes, speed and ETA.

    The states, each with its own sentence and buttons: checking what to download (Cancel), waiting to try the
    hub again (Cancel), ready (Download, or Resume when part of it is here), downloading (Cancel), paused
    (Resume), failed (Retry). "Use a folder I already have…" works in all of them but a running download;
    "Use a model server…" in all of them (`server_requested`: the window asks for the server, then `give_way`).
    """

    server_requested = Signal()
    endpoint_changed = Signal(str)
    download_started = Signal()
    download_stopped = Signal()  # finished, failed or cancelled

    def __init__(self, downloads: HubDownloads, endpoint: str = "", vision_tower: str = "",
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.vision_tower = vision_tower
        self.setObjectName("firstRun")
        self.downloads = downloads
        self._spec: Any = None
        self._plan: Any = None
        self._ready: asyncio.Future[str | None] | None = None
        self._cancel: threading.Event | None = None
        self._planning: asyncio.Task | None = None
        self._planning_cancel = threading.Event()  # stops the planning thread itself, not only the wait for it
        self._tasks: set[asyncio.Task] = set()
        self._threads: set[threading.Thread] = set()
        self._retry_downloads = False
        self.picked_folder = False  # the model came from a folder the person chose, not a download
        self._busy = False  # planning or downloading, and nothing else to say: waits to retry are shown
        self._retry_at = 0.0  # when the hub is asked again (time.monotonic()), while waiting to retry
        self._retry_timer = QTimer(self)
        self._retry_timer.setInterval(1000)
        self._retry_timer.timeout.connect(self._show_retry_countdown)
        self.relay = _ProgressRelay()
        self.relay.progressed.connect(self._show_progress)

        self.worded = Worded()  # the texts that follow the page's state: the model, its size, the status line
        self._resumes = False  # the download button says Resume: part of the model is here
        self._build_summary(endpoint)
        self._build_status()
        self._build_buttons()
        self._build_card()
        self.retranslate()
        self._set_buttons(download=False, cancel=False, retry=False)

    def _build_summary(self, endpoint: str) -> None:
        """The welcome, and what would be downloaded: the model, from where, its size, where to, the free space."""
        self.title_label = QLabel()
        self.title_label.setWordWrap(True)
        self.intro_label = QLabel()
        self.intro_label.setWordWrap(True)

        self.what_label = QLabel("…")
        self.size_label = QLabel("…")
        self.destination_label = QLabel("…")
        self.free_label = QLabel("…")
        for label in (self.what_label, self.size_label, self.destination_label, self.free_label):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.endpoint_edit = QLineEdit(endpoint)
        self.endpoint_edit.editingFinished.connect(self._endpoint_edited)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow window: labels above fields
        self._row_labels = [QLabel() for _row in range(5)]  # Model, From, Size, Saved to, Free space
        for label, field in zip(self._row_labels, (self.what_label, self.endpoint_edit, self.size_label,
                                                   self.destination_label, self.free_label), strict=True):
            form.addRow(label, field)
        self._form = form

    def _build_status(self) -> None:
        """The status line, the error note and the progress bar under the form."""
        self.status_label = QLabel("")
        self.status_label.setObjectName("downloadStatus")
        self.status_label.setWordWrap(True)
        self.error_note = ErrorNote()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        # Hidden without giving up its row (but on a short page), so the card keeps its height when the download
        # starts: see _fit_card.
        self.progress.hide()

    def _build_buttons(self) -> None:
        """Download, Cancel and Retry; beside them (or below) the other ways to a model: a folder, a server."""
        self.download_button = QPushButton()
        self.download_button.setDefault(True)
        self.cancel_button = QPushButton()
        self.retry_button = QPushButton()
        self.folder_button = QPushButton()
        self.server_button = QPushButton()
        self.download_button.clicked.connect(lambda: self._spawn(self._download()))
        self.cancel_button.clicked.connect(self.cancel)
        self.retry_button.clicked.connect(self._retry)
        self.folder_button.clicked.connect(self._choose_folder)
        self.server_button.clicked.connect(self.server_requested)
        # The other ways to a model, beside the download's buttons when they fit, else on a line of their own
        # (one above the other when even that is too narrow).
        self.alternatives = QWidget()
        self._alternatives_layout = QBoxLayout(QBoxLayout.Direction.LeftToRight, self.alternatives)
        self._alternatives_layout.setContentsMargins(0, 0, 0, 0)
        self._alternatives_layout.addWidget(self.folder_button)
        self._alternatives_layout.addWidget(self.server_button)
        buttons = QHBoxLayout()
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.retry_button)
        buttons.addStretch(1)
        self._buttons_row = buttons
        self._second_row = QHBoxLayout()
        self._second_row.addStretch(1)

    def _build_card(self) -> None:
        """The card holding it all, centred on a canvas that scrolls when the window is too small for it."""
        self.card = QFrame()
        self.card.setObjectName("card")
        self.card.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Minimum)  # scroll, never squash
        card_layout = QVBoxLayout(self.card)
        card_layout.addWidget(self.title_label)
        card_layout.addWidget(self.intro_label)
        card_layout.addLayout(self._form)
        card_layout.addWidget(self.progress)
        card_layout.addWidget(self.status_label)
        card_layout.addWidget(self.error_note)
        card_layout.addLayout(self._buttons_row)
        card_layout.addLayout(self._second_row)

        # The card scrolls when the window is too small for it, rather than squashing its rows.
        canvas = QWidget()
        canvas.setObjectName("firstRunCanvas")
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.card)
        row.addStretch(1)
        column = QVBoxLayout(canvas)
        self._column = column
        column.addStretch(1)
        column.addLayout(row)
        column.addStretch(2)
        self.scroll_area = QScrollArea()
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll_area.setWidget(canvas)
        self.scroll_area.viewport().installEventFilter(self)  # its width changes when the scroll bar comes
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll_area)

    def retranslate(self) -> None:
        """The page's texts in the language of the moment (from __init__ and on LanguageChange); what follows its
        state (the model, the size, the status line) is worded again by `worded`."""
        self.title_label.setText("<h1>{}</h1>".format(translate("FirstRunPage", "Welcome to XVLM Chat")))
        self.intro_label.setText(translate("FirstRunPage", "To answer questions about images, the app needs the "
                                                           "Xmodel-VLM model on this computer. It is downloaded once; "
                                                           "after that everything runs offline, on this machine."))
        for label, text in zip(self._row_labels, (translate("FirstRunPage", "Model:"),
                                                  translate("FirstRunPage", "From:"),
                                                  translate("FirstRunPage", "Size:"),
                                                  translate("FirstRunPage", "Saved to:"),
                                                  translate("FirstRunPage", "Free space:")), strict=True):
            label.setText(text)
        default_endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        self.endpoint_edit.setPlaceholderText(translate("FirstRunPage", "{address} (or a mirror such as "
                                                                        "https://hf-mirror.com)")
                                              .format(address=default_endpoint))
        self.endpoint_edit.setAccessibleName(translate("FirstRunPage", "Model hub address or mirror"))
        self.status_label.setAccessibleName(translate("FirstRunPage", "Download status"))
        self.progress.setAccessibleName(translate("FirstRunPage", "Download progress"))
        self._name_download_button(self._resumes)
        self.cancel_button.setText(translate("FirstRunPage", "&Cancel"))
        self.retry_button.setText(translate("FirstRunPage", "&Retry"))
        self.folder_button.setText(translate("FirstRunPage", "&Use a folder I already have…"))
        self.server_button.setText(translate("FirstRunPage", "Use a model &server…"))
        self.server_button.setToolTip(translate("FirstRunPage", "Answer with the model on another computer (xvlm "
                                                                "serve, vLLM, LM Studio…): nothing is downloaded"))
        self.worded.reword()
        self._fit_card()  # the buttons' widths changed with their words

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def _name_download_button(self, resume: bool) -> None:
        self._resumes = resume
        self.download_button.setText(translate("FirstRunPage", "&Resume") if resume
                                     else translate("FirstRunPage", "&Download"))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize:
            self._fit_card()
        return super().eventFilter(watched, event)

    def _fit_card(self) -> None:
        """One width for the card in every state: CARD_WIDTH, or the page's width less the margins; on a short
        page, tighter margins and spacing, and no room kept for the hidden progress bar."""
        compact = self.scroll_area.viewport().height() < COMPACT_HEIGHT
        self._column.setContentsMargins(*(4 * [8 if compact else 16]))
        self.card.layout().setContentsMargins(*((20, 12, 20, 12) if compact else (32, 24, 32, 24)))
        self.card.layout().setSpacing(6 if compact else 12)
        policy = self.progress.sizePolicy()
        policy.setRetainSizeWhenHidden(not compact)
        self.progress.setSizePolicy(policy)
        room = self.scroll_area.viewport().width() - 2 * self._column.contentsMargins().left()
        self.card.setFixedWidth(max(280, min(CARD_WIDTH, room)))
        self._arrange_buttons()

    def _arrange_buttons(self) -> None:
        """The folder and server buttons beside the others when all fit on one line, else on a line of their own,
        else one above the other."""
        margins = self.card.layout().contentsMargins()
        inner = self.card.width() - margins.left() - margins.right()
        spacing = max(0, self._buttons_row.spacing())
        alternatives = sum(button.sizeHint().width() + spacing for button in (self.folder_button, self.server_button))
        shown = [button for button in (self.download_button, self.cancel_button, self.retry_button)
                 if not button.isHidden()]
        one_line = sum(button.sizeHint().width() + spacing for button in shown) + alternatives <= inner
        self._alternatives_layout.setDirection(QBoxLayout.Direction.LeftToRight if alternatives <= inner
                                               else QBoxLayout.Direction.TopToBottom)
        target = self._buttons_row if one_line else self._second_row
        if target.indexOf(self.alternatives) < 0:
            other = self._second_row if one_line else self._buttons_row
            other.removeWidget(self.alternatives)
            target.addWidget(self.alternatives)

    # -- the flow ------------------------------------------------------------------------------------------

    async def obtain(self, spec: Any, resume: bool = False) -> str | None:
        """Stay on this page until the model is on disk; return the folder to load, or None when a model server
        was chosen instead (`give_way`).

        resume: a download was under way when the app last closed, so continue it without asking.
        """
        self._spec = spec
        self.picked_folder = False
        self._ready = asyncio.get_running_loop().create_future()
        self._show_local_facts(spec)
        self._start_planning(then_download=resume)
        return await self._ready

    def _show_local_facts(self, spec: Any) -> None:
        """What is known without the hub, shown at once: the model's name, where it goes, the space there."""
        from xvlm_core.hub import format_size  # imported already: the spec came from it

        repos = [repo.repo_id for repo in spec.repos]
        self.worded.show(self.what_label.setText, lambda: translate("FirstRunPage", "{model}, from {repos}").format(
            model=spec.display_name, repos=translate("FirstRunPage", " and ").join(repos)))
        self._show_size(lambda: translate("FirstRunPage", "Asking the model hub…"))
        destination = self.downloads.destination()
        self.destination_label.setText(str(destination))
        self.free_label.setText(format_size(self.downloads.free_bytes(destination)))

    def _start_planning(self, then_download: bool = False) -> None:
        self._stop_planning()
        self._plan = None
        self._set_buttons(download=False, cancel=True, retry=False)
        self._say(lambda: translate("FirstRunPage", "Checking what to download…"))
        self._show_size(lambda: translate("FirstRunPage", "Asking the model hub…"))
        self._planning_cancel = threading.Event()
        self._planning = asyncio.ensure_future(self._make_plan(self._planning_cancel, then_download))
        self._tasks.add(self._planning)
        self._planning.add_done_callback(self._tasks.discard)

    def _retry(self) -> None:
        if self._retry_downloads and self._plan is not None:
            self._spawn(self._download())
        else:
            self._start_planning(then_download=self._retry_downloads)

    def _stop_planning(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
        self._planning_cancel.set()

    async def _make_plan(self, cancel: threading.Event, then_download: bool = False) -> None:
        self._busy = True
        try:
            plan = await self._off_thread(self.downloads.plan, self._spec, self.endpoint, cancel, self.relay)
        except asyncio.CancelledError:
            raise  # Cancel was pressed: `cancel` has said so; the planning thread's answer is dropped
        except Exception as exc:  # hub errors carry a message for people; anything else is logged
            self._failed(exc)
            return
        finally:
            self._busy = False
            self._stop_retry_countdown()
        self._plan = plan
        self._show_plan(plan)
        if then_download:
            await self._download()

    async def _download(self) -> None:
        self._cancel = threading.Event()
        self._set_buttons(download=False, cancel=True, retry=False, folder=False)
        self.progress.show()
        self._say(lambda: translate("FirstRunPage", "Starting the download…"))
        self.download_started.emit()
        self._busy = True
        try:
            folder = await self._off_thread(self.downloads.download, self._plan, self.relay, self._cancel,
                                            self.endpoint)
        except Exception as exc:
            self.download_stopped.emit()
            if getattr(exc, "kind", "") == "cancelled":
                self._say(lambda: translate("FirstRunPage", "Paused. Press Resume to continue where it stopped."))
                self._name_download_button(True)
                self._set_buttons(download=True, cancel=False, retry=False)
            else:
                self._failed(exc, during_download=True)
            return
        finally:
            self._cancel = None
            self._busy = False
            self._stop_retry_countdown()
        self.download_stopped.emit()
        self._say(lambda: translate("FirstRunPage", "Downloaded."))
        self._resolve(str(folder))

    def cancel(self) -> None:
        """Stop the download (it resumes from here next time), or stop asking the hub what to download."""
        if self._cancel is not None:
            self._cancel.set()
            self._say(lambda: translate("FirstRunPage", "Stopping…"))
        elif self._planning is not None and not self._planning.done():
            self._stop_planning()
            self._busy = False
            self._stop_retry_countdown()
            self._say(lambda: translate("FirstRunPage", "Stopped asking the model hub. Press Retry to ask again, or "
                                                        "use a folder that already holds the model."))
            self._show_size(lambda: translate("FirstRunPage", "Not known: the model hub has not said"))
            self._retry_downloads = False
            self._set_buttons(download=False, cancel=False, retry=True)

    def give_way(self) -> None:
        """The model comes from a server now: stop asking the hub (a download pauses, to resume another time) and
        stop waiting, so `obtain` returns None."""
        self.cancel()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, translate("FirstRunPage",
                                                                  "Choose the folder that holds the model"))
        if folder:
            self._spawn(self.use_folder(folder))

    async def use_folder(self, folder: str) -> None:
        self._busy = False  # what the folder check says matters more than a plan still retrying
        self._stop_retry_countdown()
        self._say(lambda: translate("FirstRunPage", "Checking {folder}…").format(folder=folder))
        try:
            await self._off_thread(self.downloads.validate_folder, Path(folder), self.vision_tower)
        except Exception as exc:
            self._failed(exc)
            return
        self.cancel()
        self.picked_folder = True
        self._resolve(folder)

    # -- showing -------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.endpoint_edit.text().strip()

    def _endpoint_edited(self) -> None:
        self.endpoint_changed.emit(self.endpoint)
        if self._cancel is None and self._spec is not None:
            self._start_planning()

    def _show_plan(self, plan: Any) -> None:
        from xvlm_core.hub import format_size  # imported already: the plan came from it

        spec = plan.spec
        repos = ", ".join(sorted({file.repo_id for file in plan.files}))
        self.worded.show(self.what_label.setText, lambda: translate(
            "FirstRunPage", "{model}: {count} files from {repos}").format(model=spec.display_name,
                                                                          count=len(plan.files), repos=repos))
        partly_here = 0 < plan.missing_bytes < plan.total_bytes
        if partly_here:
            self._show_size(lambda: translate("FirstRunPage", "{missing} left to download (of {total}; the rest is "
                                                              "already here)").format(
                missing=format_size(plan.missing_bytes), total=format_size(plan.total_bytes)))
        else:
            self._show_size(lambda: format_size(plan.total_bytes))
        self._name_download_button(partly_here)
        self.destination_label.setText(str(plan.destination))
        self.free_label.setText(format_size(plan.free_bytes))
        self.progress.setValue(self._permille(plan.total_bytes - plan.missing_bytes, plan.total_bytes))
        self.progress.setVisible(plan.missing_bytes < plan.total_bytes)
        if not plan.enough_space:
            self._say(lambda: translate("FirstRunPage", "There is not enough free space there: {size} are needed. "
                                                        "Free some space, then press Retry.")
                      .format(size=format_size(plan.needed_bytes)))
            self._retry_downloads = False
            self._set_buttons(download=False, cancel=False, retry=True)
            return
        self._say(lambda: translate("FirstRunPage", "Ready to download."))
        self._set_buttons(download=True, cancel=False, retry=False)

    def _show_progress(self, progress: Any) -> None:
        from xvlm_core.hub import format_duration, format_size

        if progress.retry_in_s is not None:
            self._show_retry(progress.retry_in_s)
            return
        if self._cancel is None:
            return  # a late one, after the download ended
        self._stop_retry_countdown()  # bytes arrive again
        self.progress.setValue(self._permille(progress.done_bytes, progress.total_bytes))

        def said() -> str:
            parts = [translate("FirstRunPage", "{done} of {total}").format(done=format_size(progress.done_bytes),
                                                                          total=format_size(progress.total_bytes))]
            if progress.speed_bps:
                parts.append(f"{format_size(progress.speed_bps)}/s")
                if progress.eta_s is not None:
                    parts.append(translate("FirstRunPage", "about {time} left")
                                 .format(time=format_duration(progress.eta_s)))
            if progress.current_file:
                parts.append(Path(progress.current_file).name)
            return " · ".join(parts)

        self._say(said)

    def _show_retry(self, delay_s: float) -> None:
        """The hub did not answer and will be asked again in `delay_s`: say so in words, with a countdown.

        The technical reason is in the log (the hub logs it); the way out is on the buttons: Cancel, or a folder.
        """
        if not self._busy:
            return
        self._retry_at = time.monotonic() + delay_s
        self._retry_timer.start()
        self._show_retry_countdown()

    def _show_retry_countdown(self) -> None:
        seconds = max(0, round(self._retry_at - time.monotonic()))
        if seconds == 0:
            self._retry_timer.stop()
            self._say(lambda: translate("FirstRunPage", "Can't reach the model hub. Trying again now…"))
            return
        self._say(lambda: translate("FirstRunPage", "Can't reach the model hub. Trying again in {seconds} s… Press "
                                                    "Cancel to stop, or use a folder that already holds the "
                                                    "model.").format(seconds=seconds))

    def _say(self, wording: Wording) -> None:
        """What the page is doing now, in the status line; an error shown before is put away."""
        self.error_note.hide()
        self.status_label.show()
        self.worded.show(self.status_label.setText, wording)

    def _show_size(self, wording: Wording) -> None:
        self.worded.show(self.size_label.setText, wording)

    def _stop_retry_countdown(self) -> None:
        self._retry_timer.stop()

    def _failed(self, exc: Exception, during_download: bool = False) -> None:
        """Say what went wrong (a translated headline, then the hub's details); Retry plans again (and downloads
        again if that is what failed)."""
        problem = problem_of(exc)
        if problem.code is Remedy.SEE_LOG:
            log.error("first-run step failed", exc_info=exc)
        self.status_label.hide()
        self.worded.show(self.status_label.setText, str)
        self.error_note.show_error(problem)
        if self._plan is None:
            self._show_size(lambda: translate("FirstRunPage", "Not known: the model hub has not said"))

        self._retry_downloads = during_download
        self._set_buttons(download=self._plan is not None and not during_download, cancel=False,
                          retry=self._plan is None or during_download)

    def _set_buttons(self, download: bool, cancel: bool, retry: bool, folder: bool = True) -> None:
        self.download_button.setEnabled(download)
        self.cancel_button.setEnabled(cancel)
        self.retry_button.setVisible(retry)
        self.folder_button.setEnabled(folder)
        self._arrange_buttons()

    @staticmethod
    def _permille(done: float, total: float) -> int:
        return int(1000 * done / total) if total else 0

    # -- plumbing ------------------------------------------------------------------------------------------

    def _resolve(self, folder: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(folder)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)  # keep a reference, or the task may be collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _off_thread(self, function: Callable, *args: Any) -> Any:
        """Run a blocking hub call on a thread of its own and wait for it without blocking the UI.

        The thread is a daemon: planning stops at its cancel flag, but a request it is waiting on may take a while
        to give up, which must not keep the app from quitting. Downloads are cancelled and joined (`shutdown`).
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if future.done():  # the awaiting task was cancelled (the window closed)
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        def work() -> None:
            try:
                result = function(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, which reports it
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        thread = threading.Thread(target=work, name=f"hub-{function.__name__}", daemon=True)
        self._threads.add(thread)
        thread.start()
        try:
            return await future
        finally:
            self._threads.discard(thread)

    def shutdown(self, timeout_s: float = 3.0) -> None:
        """Cancel a download and give it a moment to record how far it got (it resumes from there)."""
        self.cancel()
        deadline = time.monotonic() + timeout_s
        for thread in list(self._threads):
            if thread.name == "hub-download":
                thread.join(max(0.0, deadline - time.monotonic()))
