"""The sidebar: saved chats (pinned first, then the newest), search across them, rename, pin, delete with undo."""

from __future__ import annotations

import html
import math
from pathlib import Path

from PySide6.QtCore import QEvent, QLocale, QModelIndex, QObject, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QIcon, QKeySequence, QPainter, QPixmap, QTextDocument, QTextOption
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.history.service import History
from app.i18n import translate
from app.icons import icon
from app.theme import match_colour

SEARCH_DELAY_MS = 200
RENAME_DIALOG_WIDTH = 400  # the name field: room for a long title
UNDO_SHOWN_MS = 10_000
THUMBNAIL_SIDE = 32
# VERSION: a hit in another version of a regenerated answer, its index among the answer's versions (else None)
CHAT_ID, MESSAGE_ID, PINNED, HIT_HTML, VERSION = (Qt.ItemDataRole.UserRole + offset for offset in range(5))
HIT_PADDING = 6  # around a search hit's text, as the list's items have


class SearchHitDelegate(QStyledItemDelegate):
    """Draws a search hit (an item with HIT_HTML): its chat's title, then the snippet with the matches marked,
    wrapped within the list's width, so that the list never scrolls sideways. Other items are drawn as usual."""

    def _document(self, option: QStyleOptionViewItem, html_text: str) -> QTextDocument:
        document = QTextDocument()
        document.setDefaultFont(option.font)
        document.setDocumentMargin(0)
        wrap = QTextOption()
        wrap.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)  # a long word too
        document.setDefaultTextOption(wrap)
        document.setHtml(html_text)
        document.setTextWidth(max(40, self.parent().viewport().width() - 2 * HIT_PADDING))
        return document

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        html_text = index.data(HIT_HTML)
        if html_text is None:
            super().paint(painter, option, index)
            return
        item = QStyleOptionViewItem(option)
        self.initStyleOption(item, index)
        item.text = ""
        style = item.widget.style() if item.widget is not None else QStyle()
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, item, painter, item.widget)
        painter.save()
        painter.translate(item.rect.left() + HIT_PADDING, item.rect.top() + HIT_PADDING)
        painter.setClipRect(0, 0, item.rect.width() - HIT_PADDING, item.rect.height())
        self._document(option, html_text).drawContents(painter)
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        html_text = index.data(HIT_HTML)
        if html_text is None:  # a title too long for the list is cut short ("…") at its width
            size = super().sizeHint(option, index)
            return QSize(min(size.width(), self.parent().viewport().width()), size.height())
        height = math.ceil(self._document(option, html_text).size().height()) + 2 * HIT_PADDING
        return QSize(self.parent().viewport().width(), height)


class RenameDialog(QDialog):
    """A chat's new name, in a field wide enough for a long one; OK only with a name."""

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(translate("ChatList", "Rename chat"))
        self.name_edit = QLineEdit(title)
        self.name_edit.setAccessibleName(translate("ChatList", "Chat name"))
        self.name_edit.setMinimumWidth(RENAME_DIALOG_WIDTH)
        self.name_edit.selectAll()
        label = QLabel(translate("ChatList", "&Name:"))
        label.setBuddy(self.name_edit)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.name_edit.textChanged.connect(lambda text: ok.setEnabled(bool(text.strip())))
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(self.name_edit)
        layout.addWidget(buttons)


class ChatList(QWidget):
    chat_chosen = Signal(int)
    message_chosen = Signal(int, int, object)  # chat id, message id, the answer's version or None (a search hit)
    new_chat_requested = Signal()
    renamed = Signal(int, str)  # chat id, new title
    deleted = Signal(int)
    typed = Signal(str)  # text typed while the list had the focus: meant for the message box

    def __init__(self, history: History, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("chatListPane")
        self.history = history
        self._thumbnails: dict[Path, QIcon] = {}  # files named by content never change: read each once
        self.current_chat: int | None = None
        self.answering: set[int] = set()  # chats whose answer is being written while another is shown
        self._undo_chat: int | None = None
        self._undo_title = ""

        self.new_button = QPushButton(icon("new-chat"), "")
        self.new_button.clicked.connect(lambda: self.new_chat_requested.emit())
        self.search_edit = QLineEdit()
        self.search_edit.setClearButtonEnabled(True)
        self.search_edit.addAction(icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.refresh)
        self.search_edit.textChanged.connect(lambda _text: self._search_timer.start())

        self.list = QListWidget()
        self.list.setObjectName("chatList")
        self.list.setIconSize(QSize(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        self.list.setUniformItemSizes(False)
        self.list.setWordWrap(True)
        # Titles and search hits wrap within the sidebar; what is wider is never scrolled to sideways.
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setResizeMode(QListView.ResizeMode.Adjust)
        self._hit_delegate = SearchHitDelegate(self.list)  # kept: Qt does not own a delegate
        self.list.setItemDelegate(self._hit_delegate)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        self.list.installEventFilter(self)
        self.empty_label = QLabel()
        self.empty_label.setObjectName("footer")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        self.undo_bar = QFrame()
        self.undo_bar.setObjectName("editBar")
        self.undo_label = QLabel()
        self.undo_label.setWordWrap(True)
        self.undo_button = QPushButton()
        self.undo_button.clicked.connect(self.undo_delete)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(8, 4, 4, 4)
        undo_layout.addWidget(self.undo_label, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()
        self._undo_timer = QTimer(self)
        self._undo_timer.setSingleShot(True)
        self._undo_timer.timeout.connect(self.undo_bar.hide)

        self.rename_action, self.delete_action = QAction(self.list), QAction(self.list)
        for action, shortcut, slot in ((self.rename_action, "F2", self.rename_selected),
                                       (self.delete_action, QKeySequence.StandardKey.Delete, self.delete_selected)):
            action.setShortcut(shortcut)
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
            action.triggered.connect(slot)
            self.list.addAction(action)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 0, 8)
        layout.setSpacing(6)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search_edit)
        layout.addWidget(self.list, 1)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.undo_bar)
        self.retranslate()

    def retranslate(self) -> None:
        """The sidebar's texts in the language of the moment (from __init__ and on LanguageChange); the list is
        made again, as its untitled chats, dates and tooltips are worded in it."""
        self.new_button.setText(" " + translate("ChatList", "New chat"))
        self.new_button.setAccessibleName(translate("ChatList", "New chat"))
        self.new_button.setToolTip(translate("ChatList", "New chat (Ctrl+N)"))
        self.search_edit.setPlaceholderText(translate("ChatList", "Search chats"))
        self.search_edit.setAccessibleName(translate("ChatList", "Search chats"))
        self.list.setAccessibleName(translate("ChatList", "Chats"))
        self.undo_button.setText(translate("ChatList", "Undo"))
        self.undo_button.setAccessibleName(translate("ChatList", "Undo delete"))
        self.undo_label.setText(translate("ChatList", "Deleted “{title}”.").format(title=self._undo_title))
        self.rename_action.setText(translate("ChatList", "Rename…"))
        self.delete_action.setText(translate("ChatList", "Delete"))
        self.refresh()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Choosing a chat leaves the focus here (F2 renames it, Delete deletes it); typing goes on in the
        message box, as the person means to write there."""
        if watched is self.list and event.type() == QEvent.Type.KeyPress:
            text = event.text()
            modifiers = event.modifiers() & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                                             | Qt.KeyboardModifier.MetaModifier)
            if text and text.isprintable() and not modifiers:
                self.typed.emit(text)
                return True
        return super().eventFilter(watched, event)

    # -- showing -------------------------------------------------------------------------------------------

    def refresh(self, current_chat: int | None = -1) -> None:
        """List the chats again (or the search's hits); `current_chat` is selected (-1: keep the selection)."""
        if current_chat != -1:
            self.current_chat = current_chat
        query = self.search_edit.text().strip()
        self.list.clear()
        if query:
            hits = self.history.search(query)
            mark = f'<span style="background-color: {match_colour(self.palette()).name()}">', "</span>"
            for hit in hits:
                title = hit.chat_title or translate("ChatList", "Untitled")
                where = "" if hit.version is None else " · " + translate(
                    "ChatList", "answer version {number}").format(number=hit.version + 1)
                item = QListWidgetItem(f"{title}{where}\n{hit.snippet}")
                item.setData(HIT_HTML, f"<b>{html.escape(title)}</b>{html.escape(where)}<br>{hit.snippet_html(*mark)}")
                item.setData(CHAT_ID, hit.chat_id)
                item.setData(MESSAGE_ID, hit.message_id)
                item.setData(VERSION, hit.version)
                item.setToolTip(hit.snippet)
                self.list.addItem(item)
            self.empty_label.setText(translate("ChatList", "Nothing found.") if not hits else "")
        else:
            chats = self.history.list_chats()
            for chat in chats:
                item = QListWidgetItem(chat.title or translate("ChatList", "Untitled"))
                item.setData(CHAT_ID, chat.id)
                pinned = translate("ChatList", "Pinned · ") if chat.pinned else ""
                answering = "\n" + translate("ChatList", "An answer is being written") if chat.id in self.answering \
                    else ""
                facts = translate("ChatList", "{count} messages · {date}").format(
                    count=chat.message_count, date=QLocale().toString(chat.updated, QLocale.FormatType.ShortFormat))
                item.setToolTip(f"{chat.title}\n{pinned}{facts}{answering}")
                if answering:
                    font = item.font()
                    font.setItalic(True)
                    item.setFont(font)
                item.setData(PINNED, chat.pinned)
                # The chat's first picture is what people recognise a chat by; a pinned chat shows the pin, and
                # a chat of words only a placeholder, so that every title starts at the same place.
                if chat.pinned:
                    item.setIcon(icon("pin"))
                elif chat.thumbnail is not None:
                    item.setIcon(self._thumbnail_icon(chat.thumbnail))
                else:
                    item.setIcon(icon("chat"))
                self.list.addItem(item)
                if chat.id == self.current_chat:
                    item.setSelected(True)
                    self.list.setCurrentItem(item)
            self.empty_label.setText(translate("ChatList", "No chats yet.") if not chats else "")
        self.empty_label.setVisible(self.list.count() == 0)

    def _thumbnail_icon(self, path: Path) -> QIcon:
        if path not in self._thumbnails:
            self._thumbnails[path] = QIcon(QPixmap(str(path)))
        return self._thumbnails[path]

    def chat_ids(self) -> list[int]:
        return [self.list.item(row).data(CHAT_ID) for row in range(self.list.count())]

    # -- acting ----------------------------------------------------------------------------------------------

    def _activated(self, item: QListWidgetItem) -> None:
        message_id = item.data(MESSAGE_ID)
        if message_id is not None:
            self.message_chosen.emit(item.data(CHAT_ID), message_id, item.data(VERSION))
        elif item.data(CHAT_ID) != self.current_chat:
            self.chat_chosen.emit(item.data(CHAT_ID))

    def _selected_chat(self) -> int | None:
        item = self.list.currentItem()
        return item.data(CHAT_ID) if item is not None else None

    def _context_menu(self, position) -> None:
        item = self.list.itemAt(position)
        if item is None:
            return
        chat_id = item.data(CHAT_ID)
        pinned = bool(item.data(PINNED))
        menu = QMenu(self)
        menu.addAction(translate("ChatList", "Rename…"), lambda: self.rename(chat_id))
        menu.addAction(translate("ChatList", "Unpin") if pinned else translate("ChatList", "Pin to the top"),
                       lambda: self.set_pinned(chat_id, not pinned))
        menu.addSeparator()
        menu.addAction(icon("delete"), translate("ChatList", "Delete"), lambda: self.delete(chat_id))
        menu.exec(self.list.viewport().mapToGlobal(position))

    def rename_selected(self) -> None:
        chat_id = self._selected_chat()
        if chat_id is not None:
            self.rename(chat_id)

    def rename(self, chat_id: int, title: str | None = None) -> None:
        if title is None:
            current = next((self.list.item(row).text() for row in range(self.list.count())
                            if self.list.item(row).data(CHAT_ID) == chat_id), "")
            dialog = RenameDialog(current.split("\n")[0], self)
            accepted = dialog.exec() == RenameDialog.DialogCode.Accepted
            title = dialog.name_edit.text()
            dialog.deleteLater()
            if not accepted or not title.strip():
                return
        self.renamed.emit(chat_id, " ".join(title.split()))
        self.refresh()

    def set_pinned(self, chat_id: int, pinned: bool) -> None:
        self.history.set_pinned(chat_id, pinned)
        self.refresh()

    def delete_selected(self) -> None:
        chat_id = self._selected_chat()
        if chat_id is not None:
            self.delete(chat_id)

    def delete(self, chat_id: int) -> None:
        """Hide the chat; Undo brings it back until the app closes (deleted chats are purged then)."""
        title = next((self.list.item(row).text().split("\n")[0] for row in range(self.list.count())
                      if self.list.item(row).data(CHAT_ID) == chat_id), translate("ChatList", "the chat"))
        if not self.history.delete_chat(chat_id):
            return
        self._undo_chat, self._undo_title = chat_id, title
        self.undo_label.setText(translate("ChatList", "Deleted “{title}”.").format(title=title))
        self.undo_bar.show()
        self._undo_timer.start(UNDO_SHOWN_MS)
        self.deleted.emit(chat_id)
        self.refresh()

    def undo_delete(self) -> None:
        if self._undo_chat is not None:
            chat_id, self._undo_chat = self._undo_chat, None
            self.history.restore_chat(chat_id)
            self.undo_bar.hide()
            self.refresh()
            self.chat_chosen.emit(chat_id)
