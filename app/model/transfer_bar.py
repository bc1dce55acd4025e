"""A slim bar for a file job running in the background (import, export): what it does, how far, Cancel."""

from __future__ import annotations

import threading

from PySide6.QtCore import QEvent
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.i18n import Wording, translate


class TransferBar(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("editBar")
        self.label = QLabel(self)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(160)
        self.progress.setMaximumHeight(12)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton(self)
        self.cancel_button.clicked.connect(self.cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel_button)
        self._cancel = threading.Event()
        self._running = False  # not isVisible(): the bar is out of sight while the first-run page shows
        self._wording: Wording = str  # what the bar says it does
        self.retranslate()
        self.hide()

    def retranslate(self) -> None:
        self.cancel_button.setText(translate("TransferBar", "Cancel"))
        self.label.setText(self._wording())

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.LanguageChange:
            self.retranslate()

    @property
    def running(self) -> bool:
        return self._running

    def begin(self, text: str | Wording) -> threading.Event:
        """Show the bar for a new job (`text` says what it does: a function that words it is worded again in a new
        language); the event it returns is set when the person cancels."""
        self._cancel = threading.Event()
        self._running = True
        self._say(text if callable(text) else lambda: text)
        self.progress.setRange(0, 0)  # busy until the first count arrives
        self.cancel_button.setEnabled(True)
        self.show()
        return self._cancel

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def cancel(self) -> None:
        self._cancel.set()
        self._say(lambda: translate("TransferBar", "Cancelling…"))
        self.cancel_button.setEnabled(False)

    def _say(self, wording: Wording) -> None:
        self._wording = wording
        self.label.setText(wording())

    def finish(self) -> None:
        self._running = False
        self.hide()
