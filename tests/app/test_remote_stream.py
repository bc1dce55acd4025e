"""A model server that misbehaves mid-answer: an endless line, a piece of text that is not text. The answer ends
with a sentence that says what happened, and the app's memory stays bounded."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import BinaryIO

import pytest
from serving import LoopbackServer
from test_window import ask, wait_answered

from app.history.records import Status
from app.model.remote_model import RemoteModel, RemoteSession, ServerError, list_models
from app.settings import Settings
from xvlm_core.messages import Message
from xvlm_core.openai_compat.client import MAX_EVENT_BYTES
from xvlm_core.sampling import SamplingSettings

ENDLESS_LINE_LIMIT = 16 << 20  # what the fake server sends of its endless line at most: the test stays bounded
PIECE = 64 << 10


Send = Callable[[BinaryIO, "StreamingServer"], None]


def one_model(output: BinaryIO, server: StreamingServer) -> None:
    output.write(json.dumps({"object": "list", "data": [{"id": "odd-model", "object": "model"}]}).encode())


class StreamingServer(LoopbackServer):
    """An OpenAI-compatible server on 127.0.0.1 that answers the model list with `models(output, self)` and each
    chat request with `answer(output, self)`; `sent` counts the bytes those got out, `hung_up` whether the app
    closed the connection first."""

    def __init__(self, answer: Send, models: Send = one_model):
        self.sent = 0
        self.hung_up = threading.Event()
        self.done = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._respond("application/json", models)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._respond("text/event-stream", answer)

            def _respond(self, kind: str, send: Send) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.end_headers()  # no length: the body ends when the connection closes
                try:
                    send(self.wfile, server)
                except OSError:  # the app closed the connection
                    server.hung_up.set()
                finally:
                    server.done.set()

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def endless(start: bytes) -> Send:
    """`start`, then one line that never ends (until ENDLESS_LINE_LIMIT)."""

    def send(output: BinaryIO, server: StreamingServer) -> None:
        output.write(start)
        piece = b"x" * PIECE
        while server.sent < ENDLESS_LINE_LIMIT:
            output.write(piece)
            output.flush()
            server.sent += len(piece)

    return send


# A first piece of the answer, then a second one whose text never ends.
endless_line = endless(b'data: {"choices": [{"delta": {"content": "Hello"}}]}\n\n'
                       b'data: {"choices": [{"delta": {"content": "')
endless_body = endless(b'{"object": "list", "data": [{"id": "')


def content_of(value: object) -> Send:
    def send(output: BinaryIO, server: StreamingServer) -> None:
        output.write(b'data: {"choices": [{"delta": {"content": "Hi "}}]}\n\n')
        output.write(b"data: " + json.dumps({"choices": [{"delta": {"content": value}}]}).encode() + b"\n\n")
        output.write(b"data: [DONE]\n\n")
        output.flush()

    return send


def answer_from(server: StreamingServer) -> tuple[list[str], ServerError]:
    """The deltas a RemoteSession yields before it fails, and its error."""
    answer = RemoteSession(RemoteModel(server.url, "", "odd-model")).answer(
        [Message("user", "Hello?")], SamplingSettings(max_new_tokens=8))
    deltas: list[str] = []
    with pytest.raises(ServerError) as failure:
        deltas.extend(answer)
    return deltas, failure.value


def test_an_endless_line_ends_the_answer_once_it_passes_the_bound():
    with StreamingServer(endless_line) as server:
        deltas, error = answer_from(server)
        assert server.done.wait(30)
    assert deltas == ["Hello"]
    assert f"sent more than {MAX_EVENT_BYTES >> 20} MiB without a break" in str(error)
    # the app hung up soon after the bound, instead of reading the line for as long as the server sent it
    assert server.hung_up.is_set() and server.sent < ENDLESS_LINE_LIMIT


def test_an_endless_model_list_is_refused_once_it_passes_the_bound():
    with StreamingServer(content_of("unused"), models=endless_body) as server:
        with pytest.raises(ServerError, match="sent more than 4 MiB without a break"):
            list_models(server.url, "")
        assert server.done.wait(30)
    assert server.hung_up.is_set() and server.sent < ENDLESS_LINE_LIMIT


@pytest.mark.parametrize("value", [42, ["a", "b"], {"text": "hi"}, True])
def test_content_of_the_wrong_type_is_named_in_the_message(value):
    with StreamingServer(content_of(value)) as server:
        deltas, error = answer_from(server)
    assert deltas == ["Hi "]
    assert f'its "content" was {json.dumps(value)}' in str(error)
    assert "OpenAI-compatible" in str(error)


def test_the_window_says_what_went_wrong_with_an_endless_line(qtbot, make_window):
    with StreamingServer(endless_line) as server:
        window = make_window(settings=Settings(use_server=True, server_url=server.url))
        qtbot.waitUntil(lambda: server.url in window.device_label.text(), timeout=20_000)
        ask(qtbot, window, "Hello?")
        wait_answered(qtbot, window, Status.FAILED)
        footer = window.view.widgets[-1].footer.text()
        assert "sent more than 1 MiB without a break" in footer and "Settings" in footer
        assert server.done.wait(30)


def test_the_window_says_what_went_wrong_with_content_that_is_not_text(qtbot, make_window):
    with StreamingServer(content_of(12345)) as server:
        window = make_window(settings=Settings(use_server=True, server_url=server.url))
        qtbot.waitUntil(lambda: server.url in window.device_label.text(), timeout=20_000)
        ask(qtbot, window, "Hello?")
        wait_answered(qtbot, window, Status.FAILED)
        footer = window.view.widgets[-1].footer.text()
        assert 'its "content" was 12345' in footer
        assert "TypeError" not in footer and "Something went wrong" not in footer
