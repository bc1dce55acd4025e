"""`xvlm bench --server`: concurrent streamed image questions to an OpenAI-compatible server, against a fake one."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xvlm_core.bench.serving import BenchError, Server, busy_time, run_server_benchmark
from xvlm_core.cli import main

HOLD_S = 10.0  # how long the fake waits for a level's other clients; only a client that never sends them waits it out


class FakeServer(ThreadingHTTPServer):
    """Streams `tokens` pieces per answer. Arrivals are grouped by `groups` (sizes in order): each request is held
    until its whole group has arrived, so a group's requests are in flight together only if they were sent together.
    Request number `fail` (counting from 0), if any, gets HTTP 503."""

    daemon_threads = True

    def __init__(self, groups: list[int], tokens: int = 5, usage: bool = True, fail: int | None = None):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.groups, self.tokens, self.usage, self.fail = groups, tokens, usage, fail
        self.bodies: list[dict] = []
        self.in_flight = self.most_in_flight = 0
        self.changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def arrive(self, body: dict) -> int:
        with self.changed:
            number = len(self.bodies)
            self.bodies.append(body)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.changed.notify_all()
            ends = [sum(self.groups[: i + 1]) for i in range(len(self.groups))]
            group_end = next((end for end in ends if number < end), number + 1)
            self.changed.wait_for(lambda: len(self.bodies) >= group_end, timeout=HOLD_S)
            return number

    def leave(self) -> None:
        with self.changed:
            self.in_flight -= 1


class FakeHandler(BaseHTTPRequestHandler):
    server: FakeServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.reply(200, b'{"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        number = self.server.arrive(body)
        try:
            if number == self.server.fail:
                self.reply(503, b'{"error": {"message": "busy"}}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(self.server.tokens):
                self.event({"choices": [{"index": 0, "delta": {"content": f" w{i}"}}]})
            if self.server.usage:
                self.event({"choices": [], "usage": {"prompt_tokens": 200, "completion_tokens": self.server.tokens}})
            self.wfile.write(b"data: [DONE]\n\n")
        finally:
            self.server.leave()

    def event(self, chunk: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serving(server: FakeServer) -> Iterator[FakeServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def fake(request) -> Iterator[FakeServer]:
    yield from serving(FakeServer(**getattr(request, "param", {"groups": [1, 1, 3]})))


def image_of(body: dict) -> str:
    [image, text] = body["messages"][0]["content"]
    assert text["type"] == "text" and len(text["text"].split()) > 40  # the bench's long question
    return image["image_url"]["url"]


def test_each_level_sends_its_clients_at_once_each_with_an_image_of_its_own(fake):
    result = run_server_benchmark(Server(fake.url, timeout_s=30), [1, 3], max_tokens=7)
    assert result["model"] == "fake-vlm"  # the first the server lists
    assert fake.most_in_flight == 3  # the three clients of the last level were answered at the same time
    assert len(fake.bodies) == 1 + 1 + 3  # the untimed first request, then each level's
    assert len({image_of(body) for body in fake.bodies}) == 5  # no request can be answered from another's cache
    assert all(body["max_tokens"] == 7 and body["temperature"] == 0 and body["stream"] for body in fake.bodies)
    one, three = result["levels"]
    assert (one["clients"], one["requests"], one["errors"], one["output_tokens"]) == (1, 1, 0, 5)
    assert (three["clients"], three["requests"], three["errors"], three["output_tokens"]) == (3, 3, 0, 15)
    assert three["aggregate_tok_s"] > 0 and 0 <= three["ttft_s_median"] <= three["ttft_s_p90"]


@pytest.mark.parametrize("fake", [{"groups": [1, 2], "tokens": 4, "usage": False}], indirect=True)
def test_without_a_usage_chunk_the_streamed_pieces_are_counted(fake):
    [level] = run_server_benchmark(Server(fake.url, timeout_s=30), [2], max_tokens=4, model="named")["levels"]
    assert (level["output_tokens"], level["errors"]) == (8, 0)
    assert {body["model"] for body in fake.bodies} == {"named"}


@pytest.mark.parametrize("fake", [{"groups": [1, 3], "fail": 2}], indirect=True)
def test_a_refused_request_is_counted_as_an_error_and_the_others_still_measured(fake):
    [level] = run_server_benchmark(Server(fake.url, timeout_s=30), [3])["levels"]
    assert (level["requests"], level["errors"], level["output_tokens"]) == (3, 1, 10)
    assert level["error_kinds"] == {'HTTP 503: {"error": {"message": "busy"}}': 1}


def test_decoding_time_counts_overlapping_streams_once():
    assert busy_time([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.75)]) == 4.0
    assert busy_time([]) == 0.0


def test_an_unreachable_server_is_a_sentence():
    with pytest.raises(BenchError, match=r"Cannot list the models of the server at http://127\.0\.0\.1:9/v1"):
        run_server_benchmark(Server("http://127.0.0.1:9/v1", timeout_s=5), [1])


@pytest.mark.parametrize("fake", [{"groups": [1, 2]}], indirect=True)
def test_the_command_prints_one_json_object(fake, capsys):
    assert main(["bench", "--server", fake.url, "--clients", "2", "--new-tokens", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [level["clients"] for level in result["levels"]] == [2]
    assert result["levels"][0]["output_tokens"] == 10


def test_the_command_refuses_a_client_count_out_of_range(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--server", "http://127.0.0.1:9/v1", "--clients", "4,0"])
    assert exited.value.code == 2
    assert "give numbers from 1 to 256 separated by commas" in capsys.readouterr().err
