"""A slim bar for a file job running in the background (import, export): what it does, how far, Cancel."""

from __future__ import annotations

import threading

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.i18n import translate


class TransferBar(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("editBar")
        self.label = QLabel(self)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(160)
        self.progress.setMaximumHeight(12)
        self.progress.setTextVisible(False)
        self.cancel_button = QPushButton(translate("TransferBar", "Cancel"), self)
        self.cancel_button.clicked.connect(self.cancel)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 4, 6, 4)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.cancel_button)
        self._cancel = threading.Event()
        self._running = False  # not isVisible(): the bar is out of sight while the first-run page shows
        self.hide()

    @property
    def running(self) -> bool:
        return self._running

    def begin(self, text: str) -> threading.Event:
        """Show the bar for a new job; the event it returns is set when the person cancels."""
        self._cancel = threading.Event()
        self._running = True
        self.label.setText(text)
        self.progress.setRange(0, 0)  # busy until the first count arrives
        self.cancel_button.setEnabled(True)
        self.show()
        return self._cancel

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def cancel(self) -> None:
        self._cancel.set()
        self.label.setText(translate("TransferBar", "Cancelling…"))
        self.cancel_button.setEnabled(False)

    def finish(self) -> None:
        self._running = False
        self.hide()
