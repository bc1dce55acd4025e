"""One window per user: a second launch hands its arguments (files to open, a model) to the running one and quits.

The second launch writes one line to the first's local socket: its `Launch` (app/launch.py), encoded.
"""

from __future__ import annotations

import getpass
import hashlib
import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from app.launch import Launch

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = 500
MAX_MESSAGE_BYTES = 1 << 20  # a launch is a few paths; more than this is not one


def server_name(data_dir: str) -> str:
    """A local-socket name of this user and this history folder (tests and portable set-ups get their own)."""
    digest = hashlib.sha256(f"{getpass.getuser()}\0{data_dir}".encode()).hexdigest()[:16]
    return f"xvlm-chat-{digest}"


class SingleInstance(QObject):
    """`forward_to_running()` in a second launch; `listen()` in the first, which emits `launched_again`."""

    launched_again = Signal(object)  # Launch: another launch asked for this window, with its arguments

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.server: QLocalServer | None = None
        self._received: dict[QLocalSocket, bytearray] = {}

    def forward_to_running(self, launch: Launch | None = None) -> bool:
        """True when another instance took `launch` (it shows itself; this one should quit)."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
            return False
        socket.write((launch or Launch()).encode())
        socket.waitForBytesWritten(CONNECT_TIMEOUT_MS)
        socket.disconnectFromServer()
        if socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
            socket.waitForDisconnected(CONNECT_TIMEOUT_MS)
        return True

    def listen(self) -> bool:
        """Serve later launches. False when the name cannot be taken (the app then simply runs alone)."""
        self.server = QLocalServer(self)
        self.server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not self.server.listen(self.name):
            # Nobody answered forward_to_running, so a socket file left by a crashed instance is stale.
            QLocalServer.removeServer(self.name)
            if not self.server.listen(self.name):
                log.warning("single instance: cannot listen on %s: %s", self.name, self.server.errorString())
                return False
        self.server.newConnection.connect(self._on_connection)
        return True

    def _on_connection(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            self._received[socket] = bytearray()
            socket.readyRead.connect(self._on_ready_read)
            socket.disconnected.connect(self._on_disconnected)
            socket.disconnected.connect(socket.deleteLater)

    def _on_ready_read(self) -> None:
        self._on_data(self.sender())

    def _on_disconnected(self) -> None:
        self._on_data(self.sender(), closed=True)

    def _on_data(self, socket: QLocalSocket, closed: bool = False) -> None:
        received = self._received.get(socket)
        if received is None:
            return
        received += bytes(socket.readAll().data())
        if b"\n" in received:  # one launch per connection
            self._forget(socket)
            launch = Launch.decode(bytes(received).split(b"\n", 1)[0])
            if launch is not None:
                self.launched_again.emit(launch)
        elif len(received) > MAX_MESSAGE_BYTES or closed:
            log.warning("single instance: dropped an incomplete message (%d bytes)", len(received))
            self._forget(socket)

    def _forget(self, socket: QLocalSocket) -> None:
        """Done with this connection: end it (it deletes itself once disconnected)."""
        if self._received.pop(socket, None) is not None:
            socket.abort()

    def close(self) -> None:
        for socket in list(self._received):
            self._forget(socket)
        if self.server is not None:
            self.server.close()
            self.server.deleteLater()
            self.server = None
