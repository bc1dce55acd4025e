"""The conversation: user messages with their images, answers rendered as Markdown that grow while they stream.

Only the growing answer is re-rendered, once per batch of text the model thread sends (at most
`CHUNKS_PER_SECOND`), and less often when laying it out gets slow; finished messages are never laid out again
except when the width changes. The view follows new text only while it is scrolled to the bottom, so reading
further up is never interrupted. A long message opens collapsed to a preview, so what opening a chat costs
follows what is shown, not how much text the chat holds (see `shown_text`).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QColor,
    QDesktopServices,
    QFontDatabase,
    QGuiApplication,
    QImageReader,
    QKeySequence,
    QMouseEvent,
    QPalette,
    QPixmap,
    QShortcut,
    QTextBlockFormat,
    QTextCharFormat,
    QTextCursor,
    QTextFormat,
    QTextOption,
)
from PySide6.QtWidgets import (
    QDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from xvlm_core.messages import image_path
from xvlm_core.sampling import SamplingSettings

from app.chat.controller import REGENERATE_TEMPERATURE, REGENERATE_TOP_P, ChatController
from app.error_text import failure_text
from app.history.records import AnswerStats, ChatMessage, Status
from app.i18n import translate
from app.icons import icon
from app.model.load_stages import stage_text

RENDER_SHARE = 0.2  # of the UI thread's time, at most, spent re-rendering a streaming answer
THUMBNAIL_SIDE = 220  # one image; several share a row at SMALL_THUMBNAIL_SIDE
SMALL_THUMBNAIL_SIDE = 120
FOLLOW_SLACK_PX = 24  # this close to the bottom still counts as "at the bottom"
COPY_CODE_SCHEME = "copy-code"  # the href of a code block's Copy link: copy-code:INDEX
PREVIEW_CHARS = 4_000  # a longer message opens collapsed to its first PREVIEW_CHARS characters...
PREVIEW_LINES = 40  # ...or PREVIEW_LINES lines, whichever ends first, with "Show more" below
# Past this, an expanded message is shown as plain text in a reader with its own scroll bar, which lays out only
# the lines in sight: Qt's Markdown import and our styling of its blocks take time growing faster than the text
# (about 1 s for 100,000 characters, 40 s for a million), and a widget hundreds of thousands of pixels tall is
# past what Qt's layouts and painting handle.
MARKDOWN_LIMIT = 20_000
READER_LINES = 30  # the reader's height, in lines of text
# The reader shows a longer line in pieces of this many characters: Qt lays a paragraph out whole, in time
# growing faster than its length (one line of a million characters took 37 s, the same text in pieces 0.1 s).
DISPLAY_LINE_CHARS = 2_000


def load_pixmap(path: str, max_side: int | None = None) -> QPixmap:
    """The image at `path`, upright, scaled down to fit `max_side` (a null pixmap if it cannot be read)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if max_side and size.isValid() and max(size.width(), size.height()) > max_side:
        reader.setScaledSize(size.scaled(max_side, max_side, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    return QPixmap.fromImage(image) if not image.isNull() else QPixmap()


def answer_footer(message: ChatMessage) -> str:
    """ "0.21 s to first token · 18.3 tokens/s · 120 tokens", with "Stopped" in front when it was."""
    stats = message.stats
    parts = []
    if message.status is Status.STOPPED:
        parts.append(translate("ConversationView", "Stopped"))
    elif message.status is Status.INTERRUPTED:
        parts.append(translate("ConversationView", "Interrupted: the app closed before the answer was finished"))
    if stats.output_tokens:
        parts.append(translate("ConversationView", "{seconds} s to first token")
                     .format(seconds=f"{stats.ttft_s:.2f}"))
        if stats.decode_tok_s:
            parts.append(translate("ConversationView", "{speed} tokens/s").format(speed=f"{stats.decode_tok_s:.1f}"))
        parts.append(translate("ConversationView", "{count} tokens").format(count=stats.output_tokens))
        if stats.stop_reason == "length":
            parts.append(translate("ConversationView", "cut at the length limit"))
    return " · ".join(parts)


def dropped_notice(dropped: int) -> str:
    """The line above an answer for which the oldest messages of the chat no longer fit the model's context."""
    if dropped == 1:
        return translate("ConversationView", "The first message no longer fits and was left out.")
    return translate("ConversationView", "The first {count} messages no longer fit and were left out.").format(
        count=dropped)


def unseen_count(messages: list[ChatMessage]) -> int:
    """How many messages, from the top, the model no longer sees: those its latest answer was written without.

    The stats count the turns the model was given (see ChatController._ask: answers that failed before any text
    are not given), so the count is mapped back onto the messages shown.
    """
    last = next((index for index in range(len(messages) - 1, -1, -1)
                 if messages[index].role == "assistant" and messages[index].stats != AnswerStats()), None)
    dropped = messages[last].stats.dropped_messages if last is not None else 0
    given = 0
    for index, message in enumerate(messages[:last] if dropped else []):
        if message.role == "user" or message.text:
            given += 1
        if given == dropped:
            return index + 1
    return 0


def preview_length(text: str) -> int:
    """How many characters of `text` its collapsed view shows: PREVIEW_LINES lines within PREVIEW_CHARS."""
    limit = min(len(text), PREVIEW_CHARS)
    end = -1
    for _line in range(PREVIEW_LINES):
        end = text.find("\n", end + 1, limit)
        if end < 0:
            return limit
    return end if text[end:].strip() else len(text)  # all that follows is blank: nothing worth a button


def break_long_lines(text: str, width: int = DISPLAY_LINE_CHARS) -> str:
    """`text` with each line longer than `width` characters shown as several lines of at most `width`."""
    lines = text.split("\n")
    if max(map(len, lines)) <= width:
        return text
    pieces: list[str] = []
    for line in lines:
        pieces.extend([line[start:start + width] for start in range(0, len(line), width)] or [""])
    return "\n".join(pieces)


@dataclass(frozen=True)
class ShownText:
    """What a message's view shows of its text."""

    text: str
    in_reader: bool  # too long for the message's own view: shown as plain text in a scrolling reader
    collapsible: bool  # the message is longer than its preview: it has a "Show more" / "Show less" button
    whole: bool  # the whole message is shown, not its preview


def shown_text(text: str, expanded: bool) -> ShownText:
    """A long message's preview (collapsed) or whole text (expanded), rendered within bounds: the cost of
    showing a message follows what is shown, and Copy still has the whole text."""
    end = preview_length(text)
    collapsible = end < len(text)
    if collapsible and not expanded:
        return ShownText(text[:end].rstrip() + " …", False, True, False)
    if len(text) > MARKDOWN_LIMIT:
        return ShownText(break_long_lines(text), True, collapsible, True)
    return ShownText(text, False, collapsible, True)


def regenerate_tooltip(sampling: SamplingSettings) -> str:
    """What Regenerate will do with the sampling in Settings (see chat_controller.regenerate_sampling)."""
    if sampling.greedy:
        return translate("ConversationView", "Regenerate answer: another one, sampled at temperature {temperature} "
                                             "and top-p {top_p} with a new seed (at this chat's temperature 0 every "
                                             "answer is the same)").format(temperature=f"{REGENERATE_TEMPERATURE:g}",
                                                                           top_p=f"{REGENERATE_TOP_P:g}")
    return translate("ConversationView", "Regenerate answer: another one, sampled at temperature {temperature} with "
                                         "a new seed").format(temperature=f"{sampling.temperature:g}")


class MarkdownView(QTextBrowser):
    """Read-only Markdown whose height follows its content, so the conversation, not it, scrolls."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)  # long words too: no cut-off
        self.viewport().setAutoFillBackground(False)
        # Tab reaches an answer (to select its text or follow its links): the border marks which one has the focus.
        self.setStyleSheet("QTextBrowser { background: transparent; border: 1px solid transparent; "
                           "border-radius: 4px; } QTextBrowser:focus { border-color: palette(highlight); }")
        self.document().setDocumentMargin(2)
        self.document().documentLayout().documentSizeChanged.connect(self._fit_height)
        self.setFixedHeight(24)
        self.markdown_source = ""
        self.code_blocks: list[str] = []  # the text of each code block, for its Copy link

    def show_markdown(self, text: str, copy_links: bool = True) -> None:
        """`text` rendered; `copy_links`: a Copy link above each code block (not in a preview, whose code is cut)."""
        self.markdown_source = text
        self.setMarkdown(text)
        self._style_blocks(copy_links)

    def _open_link(self, url: QUrl) -> None:
        if url.scheme() == COPY_CODE_SCHEME:
            index = int(url.path() or -1)
            if 0 <= index < len(self.code_blocks):
                QGuiApplication.clipboard().setText(self.code_blocks[index])
        else:
            QDesktopServices.openUrl(url)

    def _style_blocks(self, copy_links: bool) -> None:
        """What Qt's Markdown import only marks: code in the fixed-pitch font on a faint background, its long lines
        wrapped (not cut at the right edge) and a Copy link above each block; block quotes set off in a muted colour.
        """
        document = self.document()
        text_colour = self.palette().color(QPalette.ColorRole.Text)
        background = QColor(text_colour)
        background.setAlpha(18)
        quote_colour = QColor(text_colour)
        quote_colour.setAlpha(170)
        fixed = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        code_groups: list[tuple[int, list[str]]] = []  # (first block's position, its lines)
        previous_was_code = False
        block = document.begin()
        while block.isValid():
            iterator = block.begin()
            while not iterator.atEnd():  # `inline code`: Qt marks it fixed-pitch but keeps the text's family
                fragment = iterator.fragment()
                if fragment.isValid() and fragment.charFormat().fontFixedPitch():
                    cursor = QTextCursor(document)
                    cursor.setPosition(fragment.position())
                    cursor.setPosition(fragment.position() + fragment.length(), QTextCursor.MoveMode.KeepAnchor)
                    char_format = QTextCharFormat()
                    char_format.setFontFamilies([fixed.family()])
                    cursor.mergeCharFormat(char_format)
                iterator += 1
            is_code = block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence)
            if is_code:
                cursor = QTextCursor(block)
                block_format = QTextBlockFormat()
                block_format.setBackground(background)
                block_format.setNonBreakableLines(False)  # a long line wraps instead of running off the edge
                cursor.mergeBlockFormat(block_format)
                cursor.select(QTextCursor.SelectionType.BlockUnderCursor)
                char_format = QTextCharFormat()
                char_format.setFontFamilies([fixed.family()])
                cursor.mergeCharFormat(char_format)
                if previous_was_code:
                    code_groups[-1][1].append(block.text())
                else:
                    code_groups.append((block.position(), [block.text()]))
            elif block.blockFormat().intProperty(QTextFormat.Property.BlockQuoteLevel) > 0:
                cursor = QTextCursor(block)
                block_format = QTextBlockFormat()
                block_format.setBackground(background)
                cursor.mergeBlockFormat(block_format)
                cursor.select(QTextCursor.SelectionType.BlockUnderCursor)
                char_format = QTextCharFormat()
                char_format.setForeground(quote_colour)
                char_format.setFontItalic(True)
                cursor.mergeCharFormat(char_format)
            previous_was_code = is_code
            block = block.next()
        if not copy_links:
            code_groups = []
        self.code_blocks = ["\n".join(lines) for _position, lines in code_groups]
        for index in range(len(code_groups) - 1, -1, -1):  # from the end, so earlier positions stay valid
            self._add_copy_link(code_groups[index][0], index)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self._reword_copy_links()

    def _reword_copy_links(self) -> None:
        """Each code block's Copy link in the language of the moment; the rest of the document (the model's words)
        is left as it is, not laid out again."""
        if not self.code_blocks:
            return
        block = self.document().begin()
        while block.isValid():
            iterator = block.begin()
            while not iterator.atEnd():
                fragment = iterator.fragment()
                if fragment.isValid() and fragment.charFormat().anchorHref().startswith(f"{COPY_CODE_SCHEME}:"):
                    cursor = QTextCursor(self.document())
                    cursor.setPosition(fragment.position())
                    cursor.setPosition(fragment.position() + fragment.length(), QTextCursor.MoveMode.KeepAnchor)
                    cursor.insertText(translate("ConversationView", "Copy code"), fragment.charFormat())
                    break  # the link is its block's only text
                iterator += 1
            block = block.next()

    def _add_copy_link(self, position: int, index: int) -> None:
        """A right-aligned "Copy" link in a block of its own just above the code block starting at `position`."""
        cursor = QTextCursor(self.document())
        cursor.setPosition(position)
        code_format, code_chars = cursor.blockFormat(), cursor.charFormat()
        cursor.insertBlock(code_format, code_chars)  # the code moves down a block; the empty one above is ours
        cursor.movePosition(QTextCursor.MoveOperation.PreviousBlock)
        link_block = QTextBlockFormat()
        link_block.setAlignment(Qt.AlignmentFlag.AlignRight)
        link_block.setTopMargin(4)
        cursor.setBlockFormat(link_block)
        link = QTextCharFormat()
        link.setAnchor(True)
        link.setAnchorHref(f"{COPY_CODE_SCHEME}:{index}")
        link.setForeground(self.palette().color(QPalette.ColorRole.Link))
        link.setFontPointSize(max(6.0, self.font().pointSizeF() * 0.85))
        cursor.insertText(translate("ConversationView", "Copy code"), link)

    def _fit_height(self, size) -> None:
        self.setFixedHeight(math.ceil(size.height()) + 2 * self.frameWidth())

    def sizeHint(self) -> QSize:
        return QSize(200, self.height())


class Reader(QPlainTextEdit):
    """A very long message, as plain text with its own scroll bar: only the lines in sight are laid out."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setReadOnly(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                     | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * READER_LINES)
        self.source = ""
        self.retranslate()

    def retranslate(self) -> None:
        self.setAccessibleName(translate("ConversationView", "Whole message"))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def show_text(self, text: str, follow_end: bool = False) -> None:
        """Show `text`, keeping the place being read; `follow_end`: stay at the end if it was there (an answer
        still arriving)."""
        if text == self.source:
            return
        bar = self.verticalScrollBar()
        at_end, place = bar.value() >= bar.maximum(), bar.value()
        self.source = text
        self.setPlainText(text)
        bar.setValue(bar.maximum() if follow_end and at_end else place)


class Thumbnail(QLabel):
    """A message's image; a click (or Enter) opens it large."""

    clicked = Signal(str)

    def __init__(self, path: str, side: int, parent: QWidget | None = None):
        super().__init__(parent)
        self.path = path
        pixmap = load_pixmap(path, side)
        self.missing = pixmap.isNull()
        if not self.missing:
            self.setPixmap(pixmap)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setObjectName("thumbnail")  # a label draws no focus mark of its own: the theme gives it one
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self.setAccessibleDescription(path)
        self.retranslate()

    def retranslate(self) -> None:
        if self.missing:
            self.setText(translate("ConversationView", "(image missing)"))
        self.setToolTip(translate("ConversationView", "Click to view the image large"))
        self.setAccessibleName(translate("ConversationView", "Attached image"))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.path)

    def keyPressEvent(self, event) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self.clicked.emit(self.path)
        else:
            super().keyPressEvent(event)


class ImageViewer(QDialog):
    """An image as large as the screen allows; Esc closes it."""

    def __init__(self, path: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(path.rsplit("/", 1)[-1])
        screen = (parent.screen() if parent else QGuiApplication.primaryScreen()).availableSize()
        label = QLabel()
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        pixmap = load_pixmap(path, int(min(screen.width(), screen.height()) * 0.85))
        if pixmap.isNull():
            label.setText(translate("ConversationView", "This image can no longer be read."))
        else:
            label.setPixmap(pixmap)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(label)


class ContextNotice(QFrame):
    """Above an answer the model wrote without the chat's first messages: says so, in the warning colours, and
    offers to go on in a new chat that starts with the latest images."""

    continue_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("contextNotice")
        self.icon_label = QLabel(self)
        self.icon_label.setPixmap(icon("warning").pixmap(QSize(18, 18)))
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.dropped = 0
        self.continue_button = QPushButton(self)
        self.continue_button.clicked.connect(self.continue_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        layout.addWidget(self.icon_label, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.continue_button, 0, Qt.AlignmentFlag.AlignVCenter)
        self.retranslate()
        self.hide()

    def text(self) -> str:
        return self.label.text()

    def retranslate(self) -> None:
        self.continue_button.setText(translate("ConversationView", "Continue in a new chat"))
        self.continue_button.setToolTip(translate("ConversationView", "Start a new chat with this chat's latest "
                                                                      "images attached"))
        self.setAccessibleName(translate("ConversationView", "Left out"))
        self.label.setText(dropped_notice(self.dropped) if self.dropped else "")
        self.setAccessibleDescription(self.label.text())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:  # the icon is drawn in the theme's text colour
            self.icon_label.setPixmap(icon("warning").pixmap(QSize(18, 18)))
        elif event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def show_dropped(self, dropped: int) -> None:
        """Say that the first `dropped` messages were left out (nothing when none were)."""
        self.dropped = dropped
        self.retranslate()
        self.setVisible(bool(dropped))


def _tool_button(icon_name: str, text: str, parent: QWidget) -> QToolButton:
    button = QToolButton(parent)
    button.setIcon(icon(icon_name))
    button.setIconSize(QSize(16, 16))
    button.setToolTip(text)
    button.setAccessibleName(text)
    button.setAutoRaise(True)
    return button


class VersionSwitch(QWidget):
    """"< 2/3 >" beside an answer Regenerate wrote more than once: which version is shown, with arrows to the others.
    Hidden for an answer written once."""

    chosen = Signal(int)  # the index of the version to show

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("versionSwitch")
        self.previous_button = _tool_button("previous", "", self)
        self.label = QLabel(self)
        self.label.setObjectName("footer")  # in the footer's muted colour
        self.next_button = _tool_button("next", "", self)
        for button, step in ((self.previous_button, -1), (self.next_button, 1)):
            button.clicked.connect(lambda _checked=False, step=step: self.chosen.emit(self.index + step))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 6, 0)
        layout.setSpacing(0)
        layout.addWidget(self.previous_button)
        layout.addWidget(self.label)
        layout.addWidget(self.next_button)
        self.index, self.count = 0, 1
        self._retranslate()
        self.hide()

    def show_place(self, index: int, count: int, enabled: bool) -> None:
        """Version `index` (from 0) of `count` is shown; `enabled`: the arrows may be used now."""
        self.index, self.count = index, count
        self.label.setText(f"{index + 1}/{count}")
        self.previous_button.setEnabled(enabled and index > 0)
        self.next_button.setEnabled(enabled and index < count - 1)
        self._retranslate()
        self.setVisible(count > 1)

    def _retranslate(self) -> None:
        for button, text in ((self.previous_button, translate("ConversationView", "Previous version of this answer")),
                             (self.next_button, translate("ConversationView", "Next version of this answer"))):
            button.setToolTip(text)
            button.setAccessibleName(text)
        self.label.setAccessibleName(translate("ConversationView", "Version {number} of {count}")
                                     .format(number=self.index + 1, count=self.count))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self._retranslate()


class MessageWidget(QFrame):
    """One message. User messages sit in a bubble on the right; answers use the full width."""

    copy_requested = Signal(object)  # self
    edit_requested = Signal(object)
    regenerate_requested = Signal()
    continue_requested = Signal()  # in a new chat: this one outgrew the model
    image_clicked = Signal(str)

    def __init__(self, message: ChatMessage, parent: QWidget | None = None):
        super().__init__(parent)
        self.message = message
        self.is_user = message.role == "user"
        self.setObjectName("userMessage" if self.is_user else "assistantMessage")
        self.unseen = False  # the model no longer sees this message (set by the view)
        self._rendered: tuple[str, Status, bool] | None = None
        # A long message opens collapsed; one arriving while it is shown stays open, as the person reads it.
        self.expanded = message.in_flight
        # The parts are made in reading order, which is the order Tab takes: notice, pictures, text, buttons.
        self.context_notice = ContextNotice(self)  # answers: "The first 2 messages no longer fit…"
        self.context_notice.continue_requested.connect(self.continue_requested)
        bubble = QFrame(self)  # a question's pictures and text
        bubble.setObjectName("bubble")
        bubble.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Preferred)
        bubble.setVisible(self.is_user)
        side = THUMBNAIL_SIDE if len(message.images) == 1 else SMALL_THUMBNAIL_SIDE
        self.thumbnails = [Thumbnail(image_path(image), side, bubble) for image in message.images]
        self.body = MarkdownView(self) if not self.is_user else None
        self.label = QLabel(self) if self.is_user else None
        self.reader = Reader(self)  # an expanded message past MARKDOWN_LIMIT, instead of the label or body
        self.reader.hide()
        self.more_button = QToolButton(self)
        self.more_button.setObjectName("showMore")
        self.more_button.setAutoRaise(True)
        self.more_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.more_button.clicked.connect(self.toggle_expanded)
        self.more_button.hide()
        self.versions = VersionSwitch(self) if not self.is_user else None  # "< 2/3 >" after Regenerate
        self.copy_button = _tool_button("copy", "", self)  # named in retranslate()
        self.copy_button.clicked.connect(lambda: self.copy_requested.emit(self))
        self.edit_button = self.regenerate_button = None
        if self.is_user:
            self.edit_button = _tool_button("edit", "", self)
            self.edit_button.clicked.connect(lambda: self.edit_requested.emit(self))
        else:
            self.regenerate_button = _tool_button("regenerate", "", self)
            self.regenerate_button.clicked.connect(self.regenerate_requested)
        self.footer = QLabel(self)
        self.footer.setObjectName("footer")
        self.footer.setWordWrap(True)
        self.footer.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 4, 0, 4)
        outer.setSpacing(2)
        actions = QHBoxLayout()
        actions.setSpacing(0)
        if self.is_user:
            inner = QVBoxLayout(bubble)
            inner.setContentsMargins(12, 8, 12, 8)
            if self.thumbnails:
                pictures = QHBoxLayout()
                pictures.addStretch(1)
                for thumb in self.thumbnails:
                    thumb.clicked.connect(self.image_clicked)
                    pictures.addWidget(thumb)
                inner.addLayout(pictures)
            assert self.label is not None
            self.label.setWordWrap(True)
            self.label.setTextFormat(Qt.TextFormat.PlainText)
            self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            inner.addWidget(self.label)
            inner.addWidget(self.reader)
            inner.addWidget(self.more_button, 0, Qt.AlignmentFlag.AlignRight)
            row = QHBoxLayout()
            row.addStretch(1)
            row.addWidget(bubble)
            outer.addLayout(row)
            actions.addStretch(1)
            actions.addWidget(self.copy_button)
            actions.addWidget(self.edit_button)
        else:
            assert self.body is not None
            outer.addWidget(self.context_notice)
            outer.addWidget(self.body)
            outer.addWidget(self.reader)
            outer.addWidget(self.more_button, 0, Qt.AlignmentFlag.AlignLeft)
            assert self.versions is not None
            actions.addWidget(self.versions)
            actions.addWidget(self.footer, 1)
            actions.addWidget(self.copy_button)
            actions.addWidget(self.regenerate_button)
        outer.addLayout(actions)
        self.retranslate()
        if self.label is not None:
            self._show_question()
        self.refresh()

    def retranslate(self) -> None:
        """The message's own texts (its name, buttons, tooltips) in the language of the moment; the footer and the
        words shown while an answer waits are the view's to word again (`refresh`)."""
        self.setAccessibleName(translate("ConversationView", "Your message") if self.is_user
                               else translate("ConversationView", "Answer"))
        for button, text in ((self.copy_button, translate("ConversationView", "Copy message")),
                             (self.edit_button, translate("ConversationView", "Edit and resend")),
                             (self.regenerate_button, translate("ConversationView", "Regenerate answer"))):
            if button is not None:
                button.setToolTip(text)
                button.setAccessibleName(text)
        self._name_more_button()
        self._say_unseen()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def _name_more_button(self) -> None:
        self.more_button.setText(translate("ConversationView", "Show less") if self.expanded
                                 else translate("ConversationView", "Show more"))

    def toggle_expanded(self) -> None:
        """Show the whole of a long message, or only its preview again."""
        self.expanded = not self.expanded
        if self.label is not None:
            self._show_question()
            self.set_bubble_width(self.label.maximumWidth())
        else:
            self.refresh()

    def _show_text(self, shown: ShownText, view: QWidget, show_in_view: Callable[[str], None]) -> None:
        """`shown` in the message's own `view`, or in the reader when it is too long for it."""
        if shown.in_reader:
            self.reader.show_text(shown.text, follow_end=self.message.in_flight)
        else:
            show_in_view(shown.text)
            self.reader.show_text("")  # its copy of a long message is not kept while hidden
        view.setVisible(not shown.in_reader and bool(shown.text))
        self.reader.setVisible(shown.in_reader)
        self._name_more_button()
        self.more_button.setVisible(shown.collapsible)

    def _show_question(self) -> None:
        assert self.label is not None
        self._show_text(shown_text(self.message.text, self.expanded), self.label, self.label.setText)

    def set_bubble_width(self, width: int) -> None:
        """At most `width` wide; a short question on one line (QLabel's own guess wraps early)."""
        if self.label is not None:
            # the widest line is among the longest: measuring a few keeps a resize cheap for a long message
            longest = heapq.nlargest(8, self.label.text().splitlines() or [""], key=len)
            natural = max(self.label.fontMetrics().horizontalAdvance(line) for line in longest)
            self.label.setMaximumWidth(width)
            self.label.setMinimumWidth(min(natural + 4, width))
            self.reader.setFixedWidth(width)

    def set_unseen(self, unseen: bool) -> None:
        """Dim the text of a message the model no longer sees (its images it still sees)."""
        if unseen == self.unseen:
            return
        self.unseen = unseen
        self.setProperty("unseen", unseen)
        self._say_unseen()
        for widget in (self, self.label, self.body):
            if widget is not None:
                widget.style().unpolish(widget)
                widget.style().polish(widget)
                widget.update()

    def _say_unseen(self) -> None:
        self.setToolTip(translate("ConversationView", "The model no longer sees this message: the chat has outgrown "
                                                      "what it can read at once.") if self.unseen else "")

    def refresh(self, stage: str = "") -> None:
        """Show the message's current text and status (cheap when nothing changed)."""
        message = self.message
        if self.is_user:
            return
        assert self.body is not None
        text = message.text
        if message.in_flight:
            self.expanded = True  # an answer arriving is read as it comes (Regenerate writes into this widget)
        if message.status is Status.WAITING:
            text = "*{}*".format(translate("ConversationView", "Waiting for the model to load…")) + (
                f" *{stage_text(stage)}*" if stage else "")
        elif message.status is Status.STREAMING and not text:
            text = "*{}*".format(translate("ConversationView", "Reading…"))
        if self._rendered != (text, message.status, self.expanded):
            shown = shown_text(text, self.expanded)
            body = self.body
            self._show_text(shown, body, lambda text: body.show_markdown(text, shown.whole))
            body.setVisible(not shown.in_reader)
            self._rendered = (text, message.status, self.expanded)
        self.context_notice.show_dropped(message.stats.dropped_messages)
        if message.status is Status.FAILED:
            self.footer.setText(failure_text(message.stats.error, message.stats.error_code))
            self.footer.setProperty("error", True)
        else:
            self.footer.setText(answer_footer(message))
            self.footer.setProperty("error", False)
        self.footer.style().polish(self.footer)
        finished = not message.in_flight
        self.copy_button.setVisible(finished and bool(message.text))
        assert self.regenerate_button is not None
        self.regenerate_button.setVisible(finished)


class ConversationView(QScrollArea):
    """All messages of the chat, drawn from the controller's state and redrawn on its signals."""

    edit_requested = Signal(int)  # index of the user message
    continue_requested = Signal()  # a notice's "Continue in a new chat"

    def __init__(self, controller: ChatController, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setObjectName("conversationView")
        # Reached with Tab, to scroll with the keys (its focus mark is in the theme); a click goes to what it hit.
        self.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        self._canvas = QWidget()
        self._canvas.setObjectName("conversation")
        self._layout = QVBoxLayout(self._canvas)
        self._layout.setContentsMargins(24, 16, 24, 16)
        self._layout.setSpacing(10)
        self._empty = QLabel()
        self._empty.setObjectName("emptyState")
        self._empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._empty.setWordWrap(True)
        self._layout.addStretch(1)
        self._layout.addWidget(self._empty)
        self._layout.addStretch(1)
        self.setWidget(self._canvas)
        self.widgets: list[MessageWidget] = []

        self._follow = True
        bar = self.verticalScrollBar()
        bar.valueChanged.connect(self._on_scrolled)
        bar.rangeChanged.connect(self._on_range_changed)

        self._dirty: set[int] = set()
        self._last_render = 0.0
        self._render_cost = 0.0  # seconds the last streaming re-render took on this thread
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.timeout.connect(self._render_dirty)

        controller.conversation_replaced.connect(self.rebuild)
        controller.message_added.connect(self._on_added)
        controller.message_changed.connect(self._on_changed)
        controller.load_stage_changed.connect(lambda _stage: self._on_changed(len(self.widgets) - 1))
        QShortcut(QKeySequence(Qt.Key.Key_End), self, self.scroll_to_bottom)
        self.retranslate()
        self.rebuild()

    def retranslate(self) -> None:
        """The view's texts, and what each message shows that the app words (footers, notices, the words shown while
        an answer waits), in the language of the moment; the answers themselves are not laid out again."""
        self.setAccessibleName(translate("ConversationView", "Conversation"))
        self._empty.setText(translate(
            "ConversationView", "<h2>Ask about an image</h2><p>Drop an image anywhere in this window, paste one, or "
                                "use the picture button below. Then type a question and press Enter.</p>"))
        self._dirty.update(range(len(self.widgets)))
        self._render_dirty()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    # -- building ------------------------------------------------------------------------------------------

    def rebuild(self) -> None:
        for widget in self.widgets:
            widget.deleteLater()
        self.widgets = []
        self._dirty.clear()
        for index in range(len(self.controller.messages)):
            self._append(index)
        self._update_empty_state()
        self._mark_unseen()
        self._follow = True
        self.scroll_to_bottom()

    def _append(self, index: int) -> None:
        widget = MessageWidget(self.controller.messages[index], self._canvas)
        widget.copy_requested.connect(self._copy)
        widget.edit_requested.connect(lambda w: self.edit_requested.emit(self.widgets.index(w)))
        widget.regenerate_requested.connect(self.controller.regenerate)
        if widget.versions is not None:
            widget.versions.chosen.connect(self.controller.show_version)
        widget.continue_requested.connect(self.continue_requested)
        if widget.regenerate_button is not None:
            widget.regenerate_button.installEventFilter(self)  # its tooltip follows the chat's temperature
        widget.image_clicked.connect(self.show_image)
        widget.set_bubble_width(self._bubble_width())
        # before the trailing stretch; the leading stretch and the empty-state label stay first
        self._layout.insertWidget(self._layout.count() - 1, widget)
        self.widgets.append(widget)
        self._update_regenerate_buttons()

    def _on_added(self, index: int) -> None:
        if index != len(self.widgets):
            self.rebuild()
            return
        self._append(index)
        self._update_empty_state()
        if self.controller.messages[index].role == "user":
            self._follow = True  # the person just asked: show them the answer arriving
            QTimer.singleShot(0, self.scroll_to_bottom)

    def _on_changed(self, index: int) -> None:
        if not 0 <= index < len(self.widgets):
            return
        self._dirty.add(index)
        message = self.widgets[index].message
        wait = self._render_interval() - (time.monotonic() - self._last_render)
        if not message.in_flight or wait <= 0:
            self._render_dirty()
        elif not self._render_timer.isActive():
            self._render_timer.start(max(1, int(wait * 1000)))

    def _render_interval(self) -> float:
        """Seconds between re-renders of a growing answer, so that rendering keeps to RENDER_SHARE of this
        thread's time however long the answer gets to lay out. How often text arrives is the model thread's
        one throttle (app/model/worker.py); this one is about the cost of painting it.

        Re-rendering holds Python's lock, which the model thread needs between its torch operations: with a
        fast model (a GPU, a small checkpoint) and a long answer, unthrottled rendering cut decoding several-fold.
        """
        return self._render_cost / RENDER_SHARE

    def _render_dirty(self) -> None:
        self._render_timer.stop()
        started = time.monotonic()
        stage = self.controller.load_stage
        for index in sorted(self._dirty):
            if index < len(self.widgets):
                self.widgets[index].refresh(stage)
        self._dirty.clear()
        self._update_regenerate_buttons()
        self._mark_unseen()
        self._last_render = time.monotonic()
        self._render_cost = self._last_render - started

    def eventFilter(self, watched, event) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(watched, QToolButton):
            watched.setToolTip(regenerate_tooltip(self.controller.settings.sampling()))
        return super().eventFilter(watched, event)

    def _update_regenerate_buttons(self) -> None:
        last = len(self.widgets) - 1
        for index, widget in enumerate(self.widgets):
            if widget.regenerate_button is not None:
                widget.regenerate_button.setVisible(index == last and not widget.message.in_flight)
                widget.regenerate_button.setToolTip(regenerate_tooltip(self.controller.settings.sampling()))
            if widget.versions is not None:  # only the last answer's versions can be seen: the chat went on from it
                count = len(self.controller.versions) if index == last else 1
                widget.versions.show_place(self.controller.version, count, not self.controller.busy)
            if widget.edit_button is not None:
                widget.edit_button.setEnabled(not self.controller.busy)

    def _mark_unseen(self) -> None:
        unseen = unseen_count([widget.message for widget in self.widgets])
        for index, widget in enumerate(self.widgets):
            widget.set_unseen(index < unseen)

    def _update_empty_state(self) -> None:
        self._empty.setVisible(not self.widgets)

    def _bubble_width(self) -> int:
        return max(240, int(self.viewport().width() * 0.7))

    # -- scrolling -----------------------------------------------------------------------------------------

    @property
    def following(self) -> bool:
        return self._follow

    def scroll_to_bottom(self) -> None:
        self._follow = True
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _on_scrolled(self, value: int) -> None:
        self._follow = value >= self.verticalScrollBar().maximum() - FOLLOW_SLACK_PX

    def _on_range_changed(self, _minimum: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        width = self._bubble_width()
        for widget in self.widgets:
            widget.set_bubble_width(width)

    def reveal_message(self, message_id: int) -> None:
        """Scroll to a saved message (a search hit) and mark it for a moment."""
        widget = next((widget for widget in self.widgets if widget.message.id == message_id), None)
        if widget is None:
            return
        self._follow = False
        self.revealed = widget
        widget.setProperty("found", True)
        widget.style().polish(widget)
        QTimer.singleShot(0, lambda: self.ensureWidgetVisible(widget, 0, 60))

        def unmark() -> None:
            if widget in self.widgets:
                widget.setProperty("found", False)
                widget.style().polish(widget)

        QTimer.singleShot(2500, self, unmark)  # dropped with the view, should the window close first

    # -- actions -------------------------------------------------------------------------------------------

    def _copy(self, widget: MessageWidget) -> None:
        QGuiApplication.clipboard().setText(widget.message.text)

    def show_image(self, path: str) -> None:
        viewer = ImageViewer(path, self.window())
        viewer.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        viewer.open()
