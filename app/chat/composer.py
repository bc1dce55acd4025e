"""Where a question is written: multi-line text, images (button, drop or paste; a chip each), Send / Stop.

Each attached image is checked off the UI thread with the core's own loader (the same check the model will
make), so a truncated or fake image is refused here, with a line under the chips rather than a dialog; the
same pass copies it into the history and names it by its SHA-256 (`ImageRef`), which is what is sent.
Image *data* (pasted, or dragged from a browser) is written to a PNG file first. A message carries as many
images as the model's context allows (`xvlm_core.messages.image_limit`); one more is refused with a sentence.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import platformdirs
from PySide6.QtCore import (
    QT_TRANSLATE_NOOP,
    QBuffer,
    QByteArray,
    QEvent,
    QIODevice,
    QMimeData,
    QRect,
    QSize,
    QStandardPaths,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QImage, QImageReader, QKeyEvent, QPalette, QPixmap
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from xvlm_core.errors import ImageError, XvlmError, problem_of  # torch-free; XvlmError covers the history's StoreError
from xvlm_core.messages import DEFAULT_CONTEXT, IMAGE_POSITIONS, ImageRef, image_limit, image_path

from app import APP_NAME
from app.error_text import error_text
from app.i18n import Wording, translate
from app.icons import icon

log = logging.getLogger(__name__)

CHIP_SIDE = 48
MAX_INPUT_LINES = 8
NOTICE_SHOWN_MS = 10_000
IMAGE_FILTER = QT_TRANSLATE_NOOP("Composer", "Images (*.png *.jpg *.jpeg *.gif *.bmp *.webp *.tif *.tiff);;"
                                             "All files (*)")


ATTACH_FOLDER = "attach folder"  # a place: the folder of the images attached last


class Places(Protocol):
    """Where the person was, kept for the next launch (the history keeps them: History.remembered)."""

    def remembered(self, key: str) -> str: ...

    def remember(self, key: str, value: str) -> None: ...


class PlacesInMemory:
    """Places kept while the window is open, where there is no history to keep them in."""

    def __init__(self) -> None:
        self._places: dict[str, str] = {}

    def remembered(self, key: str) -> str:
        return self._places.get(key, "")

    def remember(self, key: str, value: str) -> None:
        self._places[key] = value


def dialog_folder(places: Places, key: str,
                  first: QStandardPaths.StandardLocation = QStandardPaths.StandardLocation.PicturesLocation) -> str:
    """Where a file dialog opens: the folder last used for `key` while it is there, else the `first` folder (the
    pictures folder), else the home folder."""
    for folder in (places.remembered(key), QStandardPaths.writableLocation(first)):
        if folder and Path(folder).is_dir():
            return folder
    return str(Path.home())


def unreadable_file(path: str) -> Wording | None:
    """Why `path` cannot be attached (None when it can), worded for the notice under the message box.

    Only a regular file reaches Qt's reader, which runs here on the UI thread: on a FIFO it would wait for a writer
    forever.
    """
    from xvlm_core.model.images import file_identity  # Pillow only (no torch)

    name = Path(path).name
    if not Path(path).exists():
        return lambda: translate("Composer", "{name}: no such file.").format(name=name)
    try:
        file_identity(Path(path))
    except ImageError as exc:
        problem = problem_of(exc)
        return lambda: error_text(problem).sentence()
    if not QImageReader(path).canRead():
        return lambda: translate("Composer", "{name}: not an image this app can read.").format(name=name)
    return None


def pasted_images_dir() -> Path:

    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)) / "pasted"


def save_image_data(image: QImage, number: int) -> Path:
    """Write pasted or dragged image data to "Pasted image NUMBER.png", so the core gets a path and the person
    a name they can read; a folder named by the content keeps two different images apart."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    raw = bytes(data.data())
    folder = pasted_images_dir() / hashlib.sha256(raw).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (translate("Composer", "Pasted image {number}").format(number=number) + ".png")
    if not path.exists():
        path.write_bytes(raw)
    return path


def check_image(path: str) -> QImage:
    """Open `path` the way the model will (raises xvlm_core's ImageError) and return a small thumbnail.

    Runs off the UI thread: a large image takes a while to decode.
    """
    from xvlm_core.model.images import load_image  # Pillow only (no torch), so any thread may import it

    image = load_image(path)  # upright RGB, or ImageError with a message for people
    image.thumbnail((CHIP_SIDE * 4, CHIP_SIDE * 4))
    raw = image.tobytes("raw", "RGB")
    return QImage(raw, image.width, image.height, image.width * 3, QImage.Format.Format_RGB888).copy()


def mime_has_attachment(mime: QMimeData) -> bool:
    return mime.hasImage() or any(url.isLocalFile() for url in mime.urls())


class PromptEdit(QPlainTextEdit):
    """The question box: Enter sends, Shift+Enter breaks the line; images pasted or dropped go to the chips."""

    submitted = Signal()
    attachment_received = Signal(QMimeData)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.retranslate()
        self.setTabChangesFocus(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.document().setDocumentMargin(6)
        self.textChanged.connect(self._fit_height)
        self._fit_height()

    def retranslate(self) -> None:
        self.setPlaceholderText(translate("Composer", "Ask about the image…  (Enter to send, Shift+Enter for a new "
                                                      "line)"))
        self.setAccessibleName(translate("Composer", "Message"))
        self._fit_height()  # the placeholder's lines changed with its words

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not (
            event.modifiers() & (Qt.KeyboardModifier.ShiftModifier | Qt.KeyboardModifier.AltModifier)
        ):
            self.submitted.emit()
            return
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.insertPlainText("\n")
            return
        super().keyPressEvent(event)

    def canInsertFromMimeData(self, source: QMimeData) -> bool:
        return mime_has_attachment(source) or super().canInsertFromMimeData(source)

    def insertFromMimeData(self, source: QMimeData) -> None:
        if mime_has_attachment(source):
            self.attachment_received.emit(source)
        else:
            super().insertFromMimeData(source)

    def _fit_height(self) -> None:
        """As tall as the text (up to MAX_INPUT_LINES lines), or as the placeholder where it wraps in a narrow box."""
        lines = max(1, min(MAX_INPUT_LINES, int(self.document().size().height())))
        text_height = lines * self.fontMetrics().lineSpacing()
        if self.document().isEmpty():
            text_height = max(text_height, self.placeholder_rect().height())
        # The frame, and the padding the style sheet puts around the viewport, are what the box has beyond it.
        chrome = max(self.height() - self.viewport().height(), self.contentsMargins().top() * 2)
        # Qt shows a scroll bar unless the viewport holds one pixel more than the text and its margins.
        self.setFixedHeight(int(text_height + 2 * self.document().documentMargin() + 1 + chrome))

    def placeholder_rect(self) -> QRect:
        """Where Qt draws the placeholder in the viewport: from the document's margin, wrapped at the right edge."""
        margin = int(self.document().documentMargin())
        room = QRect(margin, margin, max(1, self.viewport().width() - margin), 10_000)
        flags = Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap
        return self.fontMetrics().boundingRect(room, int(flags), self.placeholderText())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit_height()

    def viewportEvent(self, event: QEvent) -> bool:
        # The style sheet's padding changes the viewport without resizing the box: fit once that is done (not
        # from inside it: resizing the box there would lay the viewport out again underneath).
        if event.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self, self._fit_height)
        return super().viewportEvent(event)


class ImageChip(QFrame):
    """One image waiting to be sent: a thumbnail, its name, and a button to take it off."""

    removed = Signal(object)  # self

    def __init__(self, path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("imageChip")
        self.path = path
        self.image: ImageRef | None = None  # once checked
        self.thumbnail = QLabel(self)
        self.thumbnail.setFixedSize(CHIP_SIDE, CHIP_SIDE)
        self.thumbnail.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.thumbnail.setText("…")
        self.name = QLabel(self)
        self.name.setObjectName("chipName")
        self.remove_button = QToolButton(self)
        self.remove_button.setIcon(icon("close"))
        self.remove_button.setIconSize(QSize(14, 14))
        self.remove_button.setAutoRaise(True)
        self.remove_button.clicked.connect(lambda: self.removed.emit(self))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 4, 4, 4)
        layout.addWidget(self.thumbnail)
        layout.addWidget(self.name)
        layout.addWidget(self.remove_button)
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.retranslate()

    def retranslate(self) -> None:
        name = Path(self.path).name
        self.remove_button.setToolTip(translate("Composer", "Remove the image"))
        self.remove_button.setAccessibleName(translate("Composer", "Remove the image"))
        if self.checking:
            self.name.setText(translate("Composer", "{name}\nChecking…").format(name=name))
            self.setAccessibleName(translate("Composer", "Attached image {name}, checking").format(name=name))
        else:
            self.name.setText(name)
            self.setAccessibleName(translate("Composer", "Attached image {name}").format(name=name))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    @property
    def checking(self) -> bool:
        return self.image is None

    def show_ready(self, image: ImageRef, thumbnail: QImage) -> None:
        self.image = image
        pixmap = QPixmap.fromImage(thumbnail)
        ratio = self.devicePixelRatioF()
        pixmap = pixmap.scaled(QSize(CHIP_SIDE, CHIP_SIDE) * ratio, Qt.AspectRatioMode.KeepAspectRatio,
                               Qt.TransformationMode.SmoothTransformation)
        pixmap.setDevicePixelRatio(ratio)
        self.thumbnail.setPixmap(pixmap)
        self.retranslate()


class Composer(QFrame):
    """Text, image chips, notices, and the Send/Stop button. Emits what the person asked for."""

    send_requested = Signal(str, object)  # text, [ImageRef] in order
    edit_submitted = Signal(int, str, object)  # index of the edited message, text, [ImageRef]
    stop_requested = Signal()
    images_ready = Signal(object)  # [ImageRef]: another image was checked; all those ready to send, in order

    def __init__(self, parent: QWidget | None = None, check: Callable[[str], QImage] = check_image):
        super().__init__(parent)
        self.setObjectName("composer")
        self._check = check
        # Set by the window to the history's prepare_image: the image is copied into the history while it is
        # checked, off the UI thread, and the reference to that copy is what is sent. Without one it is hashed.
        self.prepare_image: Callable[[Path], ImageRef] = ImageRef.from_file
        self.context_length = DEFAULT_CONTEXT  # of the model loaded (set by the window): it bounds the images
        self.places: Places = PlacesInMemory()  # set by the window to the history, which keeps them
        self.chips: list[ImageChip] = []
        self._checks: set[asyncio.Future] = set()
        self._send_when_checked = False
        self.busy = False
        self.editing_index: int | None = None
        self._pasted = 0  # images pasted (or dragged in as data) so far: they are numbered
        self._notice_wording: Wording = str

        self._build_edit_bar()
        self._build_chip_bar()
        self._build_notice()
        self._build_controls()
        self.retranslate()
        self._build_layout()

    def _build_edit_bar(self) -> None:
        """Above the rest while an earlier message is edited: what sending does, and Cancel."""
        self.edit_bar = QFrame(self)
        self.edit_bar.setObjectName("editBar")
        self.edit_label = QLabel()
        self.edit_label.setWordWrap(True)
        self.cancel_edit_button = QPushButton()
        self.cancel_edit_button.clicked.connect(self.cancel_edit)
        bar_layout = QHBoxLayout(self.edit_bar)
        bar_layout.setContentsMargins(8, 4, 4, 4)
        bar_layout.addWidget(self.edit_label, 1)
        bar_layout.addWidget(self.cancel_edit_button)
        self.edit_bar.hide()

    def _build_chip_bar(self) -> None:
        """The chips in one row that scrolls sideways when they outgrow the window."""
        self.chip_bar = QScrollArea(self)
        self.chip_bar.setObjectName("chipBar")
        self.chip_bar.setFrameShape(QFrame.Shape.NoFrame)
        self.chip_bar.setWidgetResizable(True)
        self.chip_bar.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        chips = QWidget(self.chip_bar)
        self.chip_row = QHBoxLayout(chips)
        self.chip_row.setContentsMargins(0, 0, 0, 0)
        self.chip_row.addStretch(1)
        self.chip_bar.setWidget(chips)
        scrollbar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        self.chip_bar.setFixedHeight(CHIP_SIDE + 12 + scrollbar)
        self.chip_bar.hide()

    def _build_notice(self) -> None:
        """A passing line about what could not be attached."""
        self.notice = QLabel(self)
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.hide()
        self._notice_timer = QTimer(self)
        self._notice_timer.setSingleShot(True)
        self._notice_timer.timeout.connect(self.notice.hide)

    def _build_controls(self) -> None:
        """The attach button, the message box and the Send/Stop button."""
        self.attach_button = QToolButton(self)
        self.attach_button.setIcon(icon("attach"))
        self.attach_button.setIconSize(QSize(22, 22))
        self.attach_button.setAutoRaise(True)
        self.attach_button.clicked.connect(self.choose_image)

        self.input = PromptEdit(self)
        self.input.submitted.connect(self.submit)
        self.input.attachment_received.connect(self.attach_from_mime)

        self.send_button = QToolButton(self)
        self.send_button.setObjectName("sendButton")
        self.send_button.setIconSize(QSize(20, 20))
        self.send_button.setFixedSize(36, 36)
        self.send_button.clicked.connect(self._send_or_stop)

    def _build_layout(self) -> None:
        """The edit bar, chips and notice above a row of attach, message box, send; Tab goes in that row's order."""
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.attach_button, 0, Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(6)
        layout.addWidget(self.edit_bar)
        layout.addWidget(self.chip_bar)
        layout.addWidget(self.notice)
        layout.addLayout(row)
        self.setFocusProxy(self.input)
        # Tab comes into the composer at the message box (its focus proxy), so the attach button follows it.
        QWidget.setTabOrder(self.input, self.attach_button)
        QWidget.setTabOrder(self.attach_button, self.send_button)

    def retranslate(self) -> None:
        self.edit_label.setText(translate("Composer", "Editing an earlier message: sending replaces it and everything "
                                                      "after it."))
        self.cancel_edit_button.setText(translate("Composer", "Cancel"))
        self.cancel_edit_button.setAccessibleName(translate("Composer", "Cancel editing"))
        self.notice.setAccessibleName(translate("Composer", "Notice"))
        self.notice.setText(self._notice_wording())
        self.attach_button.setToolTip(translate("Composer", "Attach images (or drop or paste them)"))
        self.attach_button.setAccessibleName(translate("Composer", "Attach images"))
        self._update_send_button()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    # -- text ----------------------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        return self.input.toPlainText()

    def set_busy(self, busy: bool) -> None:
        """While an answer is in flight the button stops it; the text box stays usable for the next question."""
        self.busy = busy
        self._update_send_button()

    def _update_send_button(self) -> None:
        name = translate("Composer", "Stop the answer (Esc)") if self.busy else translate("Composer", "Send (Enter)")
        # drawn on the accent-coloured (or, for Stop, text-coloured) round button
        role = QPalette.ColorRole.Base if self.busy else QPalette.ColorRole.HighlightedText
        self.send_button.setIcon(icon("stop" if self.busy else "send", self.palette().color(role)))
        self.send_button.setToolTip(name)
        self.send_button.setAccessibleName(translate("Composer", "Stop") if self.busy
                                           else translate("Composer", "Send"))

        self.send_button.setProperty("busy", self.busy)
        self.send_button.style().polish(self.send_button)

    def _send_or_stop(self) -> None:
        if self.busy:
            self.stop_requested.emit()
        else:
            self.submit()

    @property
    def images(self) -> list[ImageRef]:
        """The images checked and ready to send, in the order they were attached."""
        return [chip.image for chip in self.chips if chip.image is not None]

    @property
    def image_limit(self) -> int:
        return image_limit(self.context_length)

    def submit(self) -> None:
        """Send what is written and the images; images still being checked are waited for."""
        if self.busy:
            return
        if any(chip.checking for chip in self.chips):
            self._send_when_checked = True
            return
        text, images = self.text.strip(), self.images
        if not text and not images:
            return
        if self.editing_index is not None:
            self.edit_submitted.emit(self.editing_index, text, images)
        else:
            self.send_requested.emit(text, images)

    def clear(self) -> None:
        """Forget what was written, after it was sent."""
        self.input.clear()
        self._remove_all_images()
        self.editing_index = None
        self.edit_bar.hide()
        self.notice.hide()

    def begin_edit(self, index: int, text: str, images: Sequence[ImageRef]) -> None:
        self.editing_index = index
        self.input.setPlainText(text)
        self.input.moveCursor(self.input.textCursor().MoveOperation.End)
        self._remove_all_images()
        self.attach_images(images)
        self.edit_bar.show()
        self.input.setFocus()

    def cancel_edit(self) -> None:
        if self.editing_index is not None:
            self.clear()

    # -- images --------------------------------------------------------------------------------------------

    def show_notice(self, wording: Wording) -> None:
        """A line under the message box for a while; `wording` words it, again in a new language."""
        self._notice_wording = wording
        self.notice.setText(wording())
        self.notice.show()
        self._notice_timer.start(NOTICE_SHOWN_MS)

    def choose_image(self) -> None:
        paths, _filter = QFileDialog.getOpenFileNames(self, translate("Composer", "Attach images"),
                                                      dialog_folder(self.places, ATTACH_FOLDER),
                                                      translate("Composer", IMAGE_FILTER))
        if paths:
            self.places.remember(ATTACH_FOLDER, str(Path(paths[-1]).parent))
            self.attach_paths(paths)

    def attach_images(self, images: Sequence[ImageRef]) -> None:
        """Images already in the history (of an earlier message), checked again like any other."""
        for image in images:
            self.attach_file(image_path(image))

    def attach_from_mime(self, mime: QMimeData) -> bool:
        """Take images from a drop or a paste: local files, else image data. False if there was none."""
        files = [url.toLocalFile() for url in mime.urls() if url.isLocalFile()]
        if files:
            self.attach_paths(files)
            return True
        if mime.hasImage():
            image = QImage(mime.imageData())
            if image.isNull():
                self.show_notice(lambda: translate("Composer", "The pasted image could not be read."))
                return False
            try:
                path = save_image_data(image, self._pasted + 1)
            except OSError as exc:
                log.error("cannot save pasted image: %s", exc)
                reason = exc.strerror
                self.show_notice(lambda: translate("Composer", "The image could not be saved for the model "
                                                               "({reason}).").format(reason=reason))
                return False
            self._pasted += 1
            self.attach_file(str(path))
            return True
        if mime.urls():
            self.show_notice(lambda: translate("Composer", "Only images on this computer can be attached. Save the "
                                                           "image first, or copy it and paste it here."))
        return False

    def attach_paths(self, paths: Sequence[str]) -> None:
        """Files dropped, picked, or the app was opened with: each image gets a chip; a notice names the rest."""
        problems = [problem for path in paths if (problem := self.attach_file(path, notify=False)) is not None]
        if problems:
            self.show_notice(lambda: " ".join(problem() for problem in problems))

    def attach_file(self, path: str, notify: bool = True) -> Wording | None:
        """Show a chip at once; a quick format sniff on this thread, the full check off it.

        Returns why the file was not attached (None when it was), also shown as a notice when `notify`.
        """
        self.notice.hide()
        problem = self._one_too_many(path) if len(self.chips) >= self.image_limit else unreadable_file(path)
        if problem is not None:
            if notify:
                self.show_notice(problem)
            return problem
        chip = ImageChip(path, self.chip_bar.widget())
        chip.removed.connect(self.remove_image)
        self.chips.append(chip)
        self.chip_row.insertWidget(len(self.chips) - 1, chip)
        self.chip_bar.show()
        task = asyncio.ensure_future(self._check_in_background(chip))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)
        return None

    def _one_too_many(self, path: str) -> Wording:
        name, limit, context = Path(path).name, self.image_limit, self.context_length
        return lambda: translate("Composer", "{name} was not attached: a message can carry at most {limit} images, "
                                             "as each takes {positions} of the {context} positions the model reads "
                                             "at once.").format(name=name, limit=limit, positions=IMAGE_POSITIONS,
                                                                context=context)

    async def _check_in_background(self, chip: ImageChip) -> None:
        try:
            thumbnail, image = await asyncio.get_running_loop().run_in_executor(None, self._check_and_prepare,
                                                                                chip.path)
        except (XvlmError, OSError) as exc:
            if chip in self.chips:
                self.remove_image(chip)
                self.show_notice(self._not_kept(chip.path, exc))
            return
        if chip not in self.chips:  # taken off (or sent away with a cleared composer) meanwhile
            return
        chip.show_ready(image, thumbnail)
        self.images_ready.emit(self.images)
        if self._send_when_checked and not any(other.checking for other in self.chips):
            self._send_when_checked = False
            self.submit()

    @staticmethod
    def _not_kept(path: str, exc: Exception) -> Wording:
        """Why an image could not be checked or kept: the core's (or the history's) problem as the window words it,
        or the system's reason."""
        if isinstance(exc, OSError):
            name, reason = Path(path).name, exc.strerror or str(exc)
            return lambda: translate("Composer", "{name} cannot be kept with the chat ({reason}). Check the free disk "
                                                 "space and that the data folder can be written.").format(
                name=name, reason=reason)
        problem = problem_of(exc)
        return lambda: error_text(problem).sentence()

    def _check_and_prepare(self, path: str) -> tuple[QImage, ImageRef]:
        thumbnail = self._check(path)
        return thumbnail, self.prepare_image(Path(path))

    def remove_image(self, chip: ImageChip) -> None:
        self.chips.remove(chip)
        chip.deleteLater()
        chip.hide()
        self.chip_bar.setVisible(bool(self.chips))
        if not any(other.checking for other in self.chips):
            self._send_when_checked = False

    def _remove_all_images(self) -> None:
        for chip in list(self.chips):
            self.remove_image(chip)
        self._send_when_checked = False
