"""A model server that is down, at launch or mid-chat: a banner with Retry, and the status bar says so."""

from __future__ import annotations

import http.server
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPushButton
from serving import LoopbackServer
from test_window import ask, wait_answered

from app.history.records import Status
from app.settings import Settings


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound for a moment by the system's choice, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def model_list_server(port: int) -> Iterator[None]:
    """A model server on `port` that lists one model, "listed-model" (enough to load it)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": "listed-model", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with LoopbackServer(Handler, port):
        yield


def banner_button(window, text: str) -> QPushButton:
    return next(button for button in window.banner.findChildren(QPushButton) if button.text() == text)


def test_a_server_down_at_launch_shows_a_banner_with_retry_and_the_status_says_unreachable(qtbot, make_window):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    window = make_window(settings=Settings(use_server=True, server_url=url))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "not answering" in window.banner.text.text() and url in window.banner.text.text()
    assert window.model_label.text() == "Model server unreachable"
    assert window.device_label.text() == f"at {url}"

    with model_list_server(port):  # the server is back: Retry reloads the server's model
        qtbot.mouseClick(banner_button(window, "Retry"), Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: window.model_label.text() == "listed-model", timeout=20_000)
        assert window.device_label.text() == f"on {url}"
        assert not window.banner.isVisible()


def test_a_server_that_goes_down_mid_chat_shows_the_banner_and_the_status_says_unreachable(qtbot, make_window):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with model_list_server(port):
        window = make_window(settings=Settings(use_server=True, server_url=url))
        qtbot.waitUntil(lambda: window.model_label.text() == "listed-model", timeout=20_000)
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window, Status.FAILED)
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=5_000)
    assert "not answering" in window.banner.text.text()
    assert window.model_label.text() == "Model server unreachable"
    assert window.device_label.text() == f"at {url}"
    assert banner_button(window, "Retry").isVisible()
