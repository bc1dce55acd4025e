"""The model-server client on its own, against scripted servers on 127.0.0.1: what it reads is bounded, what it
cannot read is a ServerError naming the fault, Stop ends even a silent server's answer, and counts come through."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest
from serving import LoopbackServer

from xvlm_core.messages import Message
from xvlm_core.openai_compat.client import (
    MAX_BODY_BYTES,
    MAX_EVENT_BYTES,
    Fault,
    RemoteModel,
    ServerError,
    ServerSession,
    connect,
    list_models,
)
from xvlm_core.sampling import SamplingSettings

SENT_LIMIT = 16 << 20  # what a scripted server sends of an endless body at most: the test stays bounded
PIECE = 64 << 10
HOLD_S = 30.0


@dataclass
class Reply:
    """What a scripted server answers: a status, headers, then `body(output, server)` writes the body."""

    body: Callable[[BinaryIO, ScriptedServer], None]
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/event-stream"})


def events(*data: str) -> Callable[[BinaryIO, ScriptedServer], None]:
    def send(output: BinaryIO, server: ScriptedServer) -> None:
        for item in data:
            output.write(f"data: {item}\n\n".encode())
        output.flush()

    return send


def endless(start: bytes, piece: bytes = b"x" * PIECE) -> Callable[[BinaryIO, ScriptedServer], None]:
    """`start`, then `piece` again and again, until SENT_LIMIT."""

    def send(output: BinaryIO, server: ScriptedServer) -> None:
        output.write(start)
        while server.sent < SENT_LIMIT:
            output.write(piece)
            output.flush()
            server.sent += len(piece)

    return send


def silent(output: BinaryIO, server: ScriptedServer) -> None:
    server.holding.set()
    server.released.wait(2 * HOLD_S)  # longer than the test waits for the client: it ends first, or fails
    server.holding.clear()


CHUNK = json.dumps({"choices": [{"delta": {"content": "Hello"}}]})
ONE_MODEL = Reply(lambda output, server: output.write(json.dumps(
    {"object": "list", "data": [{"id": "scripted", "context_length": 4096}, {"id": "other"}]}).encode()),
    headers={"Content-Type": "application/json"})


class ScriptedServer(LoopbackServer):
    """An HTTP server on 127.0.0.1 that answers GET with `models` and POST with `answer` (headers before the body,
    except for a silent answer, which sends nothing). `requests` holds the chat requests' bodies; `hung_up` is set
    when the client closed the connection while the body was being sent."""

    def __init__(self, answer: Reply | None = None, models: Reply = ONE_MODEL):
        self.sent = 0
        self.requests: list[dict] = []
        self.hung_up = threading.Event()
        self.done = threading.Event()
        self.released = threading.Event()
        self.holding = threading.Event()  # a silent answer holds the request
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._respond(models)

            def do_POST(self):
                server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self._respond(answer)

            def _respond(self, reply: Reply | None) -> None:
                try:
                    if reply is None:
                        silent(self.wfile, server)
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()  # no length: the body ends when the connection closes
                    reply.body(self.wfile, server)
                except OSError:
                    server.hung_up.set()
                finally:
                    server.done.set()

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def __exit__(self, *exc) -> None:
        self.released.set()
        super().__exit__(*exc)


def session(server: ScriptedServer) -> ServerSession:
    return ServerSession(RemoteModel(server.url, "key-1", "scripted"))


def deltas_and_error(server: ScriptedServer) -> tuple[list[str], ServerError]:
    answer = session(server).answer([Message("user", "Hello?")], SamplingSettings(max_new_tokens=8))
    deltas: list[str] = []
    with pytest.raises(ServerError) as failure:
        deltas.extend(answer)
    return deltas, failure.value


def test_an_answer_streams_its_text_and_the_server_s_counts():
    usage = {"prompt_tokens": 20, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 12}}
    chunks = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]},
              {"choices": [{"delta": {"content": "Hi"}}]},
              {"choices": [{"delta": {"content": " there"}, "finish_reason": "length"}]},
              {"choices": [], "usage": usage}]
    with ScriptedServer(Reply(events(*map(json.dumps, chunks), "[DONE]"))) as server:
        answer = session(server).answer([Message("user", "Hello?")], SamplingSettings(max_new_tokens=8, seed=3),
                                        system="Be brief.")
        assert list(answer) == ["Hi", " there"]
    stats = answer.result.stats
    assert answer.result.text == "Hi there"
    assert (stats.prompt_tokens, stats.output_tokens, stats.reused_tokens, stats.stop_reason) == (20, 2, 12, "length")
    [sent] = server.requests
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    assert (sent["model"], sent["max_tokens"], sent["seed"], sent["stream"]) == ("scripted", 8, 3, True)


def test_without_usage_the_chunks_are_counted():
    with ScriptedServer(Reply(events(CHUNK, CHUNK, "[DONE]"))) as server:
        answer = session(server).answer([Message("user", "Hello?")], SamplingSettings())
        assert "".join(answer) == "HelloHello"
    assert answer.result.stats.output_tokens == 2


def test_nothing_is_sent_or_read_before_the_answer_is_iterated(tmp_path):
    with ScriptedServer(Reply(events(CHUNK, "[DONE]"))) as server:
        answer = session(server).answer([Message("user", "Look", [str(tmp_path / "gone.png")])], SamplingSettings())
        assert server.requests == []
        with pytest.raises(ServerError) as failure:
            list(answer)
    assert failure.value.fault is Fault.IMAGE_UNREADABLE and "gone.png" in str(failure.value)


def test_an_event_that_never_ends_stops_the_answer_at_the_bound():
    with ScriptedServer(Reply(endless(f"data: {CHUNK}\n\ndata: ".encode()))) as server:
        deltas, error = deltas_and_error(server)
        assert server.done.wait(HOLD_S)
    assert deltas == ["Hello"]
    assert error.fault is Fault.TOO_LONG and error.facts["size"] == f"{MAX_EVENT_BYTES >> 20}"
    assert server.hung_up.is_set() and server.sent < SENT_LIMIT


def test_an_event_of_endless_short_lines_stops_at_the_bound_too():
    with ScriptedServer(Reply(endless(f"data: {CHUNK}\n\n".encode(), b"data: x\n" * 1000))) as server:
        deltas, error = deltas_and_error(server)
        assert server.done.wait(HOLD_S)
    assert deltas == ["Hello"] and error.fault is Fault.TOO_LONG
    assert server.hung_up.is_set() and server.sent < SENT_LIMIT


def test_a_model_list_that_never_ends_is_refused_at_the_bound():
    endless_list = Reply(endless(b'{"object": "list", "data": [{"id": "'), headers={})
    with ScriptedServer(models=endless_list) as server:
        with pytest.raises(ServerError) as failure:
            list_models(server.url, "")
        assert server.done.wait(HOLD_S)
    assert failure.value.fault is Fault.TOO_LONG and failure.value.facts["size"] == f"{MAX_BODY_BYTES >> 20}"
    assert server.hung_up.is_set() and server.sent < SENT_LIMIT


def test_a_compressed_answer_is_refused_before_it_is_inflated():
    gzip = {"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
    with ScriptedServer(Reply(endless(b"\x1f\x8b"), headers=gzip)) as server:
        deltas, error = deltas_and_error(server)
    assert deltas == [] and error.fault is Fault.COMPRESSED and error.facts["encoding"] == "gzip"


def test_an_answer_that_is_not_an_event_stream_is_not_openai():
    plain = Reply(lambda output, server: output.write(b'{"choices": []}'), headers={"Content-Type": "application/json"})
    with ScriptedServer(plain) as server:
        deltas, error = deltas_and_error(server)
    assert deltas == [] and error.fault is Fault.NOT_OPENAI


@pytest.mark.parametrize(("data", "fault", "facts"), [
    ("not json", Fault.NOT_JSON, {}),
    (json.dumps({"choices": [{"delta": {"content": 42}}]}), Fault.UNREADABLE, {"field": "content", "value": "42"}),
    (json.dumps({"choices": {"a": 1}}), Fault.UNREADABLE, {"field": "choices"}),
    (json.dumps({"error": {"message": "out of memory"}}), Fault.ANSWER_STOPPED, {"reason": "out of memory"}),
    (json.dumps({"error": {}}), Fault.ANSWER_STOPPED, {"reason": ""}),
])
def test_what_cannot_be_read_is_named(data, fault, facts):
    with ScriptedServer(Reply(events(CHUNK, data, "[DONE]"))) as server:
        deltas, error = deltas_and_error(server)
    assert deltas == ["Hello"] and error.fault is fault
    assert facts.items() <= error.facts.items()


@pytest.mark.parametrize(("status", "fault"), [(401, Fault.KEY_REFUSED), (404, Fault.NO_SUCH_PAGE),
                                               (429, Fault.BUSY), (503, Fault.SERVER_FAILED),
                                               (400, Fault.REQUEST_REFUSED)])
def test_a_refusal_says_which_with_the_server_s_words(status, fault):
    body = json.dumps({"error": {"message": "because " + "x" * 1000}}).encode()
    refusal = Reply(lambda output, server: output.write(body), status, {"Content-Type": "application/json"})
    with ScriptedServer(refusal) as server:
        deltas, error = deltas_and_error(server)
    assert deltas == [] and error.fault is fault
    if "detail" in error.facts:
        assert error.facts["detail"].startswith("because x") and len(error.facts["detail"]) <= 301


def test_the_english_says_what_happened_without_the_app_s_advice():
    with ScriptedServer(Reply(events("not json"))) as server:
        _, error = deltas_and_error(server)
    assert str(error) == f"The model server at {server.url} sent something that is not JSON."
    assert "Settings" not in str(error)


def test_stop_ends_the_answer_of_a_server_that_says_nothing():
    with ScriptedServer(answer=None) as server:
        cancel = threading.Event()
        answer = session(server).answer([Message("user", "Hello?")], SamplingSettings(), cancel=cancel)
        deltas: list[str] = []
        reading = threading.Thread(target=lambda: deltas.extend(answer))
        reading.start()
        assert server.holding.wait(HOLD_S)
        cancel.set()
        reading.join(HOLD_S)
        # The answer ended while the server still held the request: Stop closed the connection under the read.
        assert not reading.is_alive() and server.holding.is_set()
    assert deltas == [] and answer.result.stats.stop_reason == "cancelled"


def test_connect_finds_the_model_and_its_context():
    with ScriptedServer() as server:
        assert connect(server.url.removesuffix("/v1"), "", "") == RemoteModel(server.url, "", "scripted", 4096)
        assert connect(server.url, "", "other").context_length == 0
        with pytest.raises(ServerError) as failure:
            connect(server.url, "", "missing")
    assert failure.value.fault is Fault.MODEL_NOT_SERVED and failure.value.facts["names"] == "scripted, other"


def test_an_unreachable_server_is_named():
    with pytest.raises(ServerError) as failure:
        list_models("127.0.0.1:9", "")
    assert failure.value.fault is Fault.UNREACHABLE and failure.value.facts["url"] == "http://127.0.0.1:9/v1"
