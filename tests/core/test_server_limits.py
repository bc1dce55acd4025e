"""`xvlm serve` under hostile input: stop strings, log lines, bodies in flight, option values, odd numbers."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2
import pytest
import torch
from PIL import Image
from test_server_api import HELLO, HOLD_S, ScriptedModel, _wait_for, running

from xvlm_core.cli import main
from xvlm_core.engines.generation import TokenPicker
from xvlm_core.log_lines import LogFormatter, printable
from xvlm_core.openai_compat import stops as stop_module
from xvlm_core.openai_compat.protocol import MAX_STOP_CHARS, ApiError
from xvlm_core.openai_compat.stops import StopMatcher
from xvlm_core.sampling import SamplingSettings


def _post(url: str, body: dict | bytes) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(f"{url}/chat/completions", content=content, timeout=HOLD_S,
                       headers={"content-type": "application/json"})


@contextmanager
def raw_connection(url: str) -> Iterator[socket.socket]:
    """A plain TCP connection to the server behind `url`, for requests no HTTP client would send."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=HOLD_S) as sock:
        yield sock


def _headers(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def _status(sock: socket.socket) -> int:
    """The status of the response the server sends on `sock`."""
    data = b""
    while b"\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            break
        data += piece
    return int(data.split(b" ", 2)[1])


# --- Stop strings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [["x" * 1_500_000], ["x" * (MAX_STOP_CHARS + 1)], ["a", "b", "c", "d", "e"]])
def test_stop_strings_beyond_the_bounds_are_refused_before_the_model_runs(stop):
    model = ScriptedModel()
    with running(model) as server:
        response = _post(server.url, {"messages": HELLO, "stop": stop})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stop"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert model.requests == []


def test_a_stop_string_at_the_bound_is_taken():
    model = ScriptedModel(deltas=["Once", " upon", " a time"])
    stop = "y" * MAX_STOP_CHARS
    with running(model) as server:
        response = _post(server.url, {"messages": HELLO, "stop": [stop, "upon"]})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Once "
    assert model.requests[0].stop == [stop, "upon"]


def _lines_run_in_the_matcher(stops: list[str], deltas: list[str]) -> int:
    """Python lines executed in the stop matcher's module while it takes `deltas`: its work, without a clock."""
    module = stop_module.__file__
    count = [0]

    def local(frame, event, arg):
        if event == "line":
            count[0] += 1
        return local

    def start(frame, event, arg):
        return local if frame.f_code.co_filename == module else None

    previous = sys.gettrace()
    sys.settrace(start)
    try:
        matcher = StopMatcher(stops)
        for delta in deltas:
            matcher.push(delta)
        matcher.finish()
    finally:
        sys.settrace(previous)
    return count[0]


def test_stop_matching_work_grows_with_the_text_not_with_its_square():
    # The worst case for matching: the answer keeps being the start of a long stop string, one character a token.
    stop = "ab" * 500
    deltas = ["a", "b"] * 200
    lines = _lines_run_in_the_matcher([stop], deltas)
    # A bounded amount per character taken and per character of the stop string (its table is built once);
    # rebuilding every prefix of the stop string for each token ran about 400,000 lines here.
    assert lines < 20 * (len(deltas) + len(stop))


def test_stop_matching_finds_a_stop_that_starts_in_held_back_text():
    matcher = StopMatcher(["abcd", "bc", "zz"])
    assert matcher.push("xab") == "x"
    assert matcher.push("cdy") == ""
    assert matcher.stopped and matcher.text == "x"  # "abcd" began in the held "ab" and starts before "bc"
    assert matcher.push("more") == ""


# --- Log lines ---------------------------------------------------------------------------------------------


def _request_records(caplog, status: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "xvlm.serve" and f" {status} " in r.getMessage()]


def test_outside_text_in_a_path_or_client_name_cannot_forge_log_lines(caplog):
    caplog.set_level(logging.INFO)
    forged_path = "/v1/models%0D%0A2030-01-01T00:00:00%20INFO%2010.0.0.1%20GET%20/admin%20200%1B[2J"
    with running(ScriptedModel()) as server, raw_connection(server.url) as sock:
        # The proxy header names the client when the connection comes from loopback (as from a reverse proxy);
        # \x9b is the one-byte form of ESC [ in some terminals.
        sock.sendall(f"GET {forged_path} HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: evil\x9b2J\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        assert _status(sock) == 404
        _wait_for(lambda: _request_records(caplog, "404"), "the request's log line")
    [record] = _request_records(caplog, "404")
    # Escaped in the message itself, whatever handler shows it, and again in the server's own format.
    for line in (record.getMessage(), LogFormatter().format(record)):
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x9b" not in line
        assert "/v1/models\\x0d\\x0a2030-01-01T00:00:00 INFO" in line
        assert "evil\\x9b2J" in line


def test_every_log_record_is_one_escaped_line_with_a_time():
    formatter = LogFormatter()
    record = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, "bad request %s", ("a\r\nb\x1b[31m",),
                               None)
    line = formatter.format(record)
    assert line.endswith("WARNING bad request a\\x0d\\x0ab\\x1b[31m")
    assert time.strftime("%Y-%m-%dT") in line.split(" ")[0]
    try:
        raise ValueError("made up\nFORGED LINE \x1b[2J")
    except ValueError:
        failed = logging.LogRecord("xvlm.serve", logging.ERROR, __file__, 1, "request failed", None, sys.exc_info())
        warned = logging.LogRecord("xvlm.serve", logging.WARNING, __file__, 1, "odd", None, sys.exc_info())
    first, *rest = formatter.format(failed).split("\n")
    assert first.endswith("ERROR request failed")
    assert rest and all(part.startswith("    ") and "\x1b" not in part for part in rest)  # a traceback, marked
    assert any("FORGED LINE \\x1b[2J" in part for part in rest)
    assert formatter.format(warned).endswith("WARNING odd (ValueError: made up\\x0aFORGED LINE \\x1b[2J)")


def test_printable_keeps_readable_text_and_escapes_the_rest():
    assert printable("Grüße 你好 ok") == "Grüße 你好 ok"
    assert printable("tab\there\u2028\u202e\x85") == "tab\\x09here\\u2028\\u202e\\x85"


def test_a_client_that_hangs_up_mid_upload_is_one_info_line(caplog):
    caplog.set_level(logging.INFO)
    with running(ScriptedModel()) as server:
        with raw_connection(server.url) as sock:
            sock.sendall(_headers("/v1/chat/completions", 1000) + b'{"messages": [')
            _wait_for(lambda: server.api.budget.used > 0, "the server to read the start of the body")
        _wait_for(lambda: _request_records(caplog, "499"), "the request's log line")
        assert server.api.budget.used == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    [record] = _request_records(caplog, "499")
    assert record.levelno == logging.INFO and "POST /v1/chat/completions" in record.getMessage()


def test_a_client_that_hangs_up_mid_stream_is_one_info_line_and_gives_its_bytes_back(caplog):
    caplog.set_level(logging.INFO)
    model = ScriptedModel(hold=True)
    with running(model) as server:
        with httpx2.stream("POST", f"{server.url}/chat/completions", json={"messages": HELLO, "stream": True},
                           timeout=HOLD_S) as response:
            lines = response.iter_lines()  # kept: a dropped line iterator closes the response
            assert next(lines).startswith("data: ")  # streaming, then silent: the model holds
            assert server.api.budget.used > 0
        assert model.cancelled.wait(HOLD_S)  # the hangup stopped the model, which was not sending anything
        _wait_for(lambda: _request_records(caplog, "200"), "the request's log line")
        assert server.api.budget.used == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    [record] = _request_records(caplog, "200")
    assert record.levelno == logging.INFO and "finish=cancelled" in record.getMessage()


def test_a_server_failure_is_one_record_with_its_traceback(caplog, monkeypatch):
    caplog.set_level(logging.INFO)

    def broken(self):
        raise RuntimeError("a bug")

    with running(ScriptedModel()) as server:
        monkeypatch.setattr(type(server.api), "_authorize", lambda self, request: broken(self))
        response = httpx2.get(f"{server.url}/models", timeout=HOLD_S)
        _wait_for(lambda: _request_records(caplog, "500"), "the request's log line")
    assert response.status_code == 500 and "a bug" not in response.text
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None  # uvicorn does not log it a second time


# --- Bodies in flight --------------------------------------------------------------------------------------


def test_bodies_in_flight_share_one_memory_budget():
    with running(ScriptedModel(), max_bytes_in_flight=4000) as server:
        budget = server.api.budget
        with raw_connection(server.url) as slow:
            slow.sendall(_headers("/v1/chat/completions", 3900) + b" " * 3000)
            _wait_for(lambda: budget.used >= 3000, "the server to read the slow upload")
            padded = {"messages": HELLO, "padding": "x" * 1500}
            refused = _post(server.url, padded)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "server_busy"
            assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        _wait_for(lambda: budget.used == 0, "the slow upload's bytes to be given back")
        # Room again; and every way a request ends gives its bytes back.
        assert _post(server.url, padded).status_code == 200
        assert _post(server.url, {**padded, "stream": True}).status_code == 200
        assert _post(server.url, {"messages": []}).status_code == 400
        assert budget.used == 0


def test_a_body_that_does_not_arrive_within_the_time_limit_is_408():
    model = ScriptedModel()
    with running(model, request_timeout_s=0.3) as server, raw_connection(server.url) as sock:
        sock.sendall(_headers("/v1/chat/completions", 100) + b'{"messages"')
        assert _status(sock) == 408
        _wait_for(lambda: server.api.budget.used == 0, "the bytes to be given back")
    assert model.requests == []


def test_a_body_announced_larger_than_the_bound_is_refused_unread(monkeypatch):
    from xvlm_core.openai_compat import server as server_module

    monkeypatch.setattr(server_module, "MAX_REQUEST_BYTES", 1000)
    with running(ScriptedModel()) as server, raw_connection(server.url) as sock:
        sock.sendall(_headers("/v1/chat/completions", 5000))
        assert _status(sock) == 413
        assert server.api.budget.used == 0


# --- What runs before the first token is bounded by the request ---------------------------------------------


def test_one_turn_longer_than_the_bound_is_refused():
    model = ScriptedModel()
    part = "word " * 80_000  # 400,000 characters: each message is allowed, three in a row are not
    with running(model) as server:
        response = _post(server.url, {"messages": [{"role": "user", "content": part}] * 3})
        answered = _post(server.url, {"messages": [{"role": "user", "content": part},
                                                   {"role": "assistant", "content": part},
                                                   {"role": "user", "content": part}]})
    assert response.status_code == 400
    assert "messages[0] to messages[2]" in response.json()["error"]["message"]
    assert answered.status_code == 200  # the same text over two turns: tokenized one turn at a time
    assert len(model.requests) == 1


def _png_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 200, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_more_images_than_the_bound_are_refused():
    url = _png_url()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}] * 32}
    model = ScriptedModel()
    with running(model) as server:
        response = _post(server.url, {"messages": [message] * 16})  # 512 images
    assert response.status_code == 400
    assert "more than 500 images" in response.json()["error"]["message"]
    assert model.requests == []


def test_no_image_is_read_once_the_request_is_out_of_time():
    with running(ScriptedModel()) as server:
        resolve = server.api.image_resolver(deadline=time.monotonic() - 1)
        with pytest.raises(ApiError) as error:
            resolve(_png_url(), "messages[0].content[0]")
    assert error.value.status == 503 and error.value.code == "timeout"
    assert not list(server.api.images.folder.glob("*.png"))


# --- Numbers and option values -----------------------------------------------------------------------------


def test_an_integer_too_long_for_python_to_read_is_400():
    body = b'{"messages": [{"role": "user", "content": "Hi"}], "seed": ' + b"7" * 5000 + b"}"
    with running(ScriptedModel()) as server:
        response = _post(server.url, body)
    assert response.status_code == 400
    assert "too many digits" in response.json()["error"]["message"]


def test_an_error_quotes_a_huge_bad_value_short():
    with running(ScriptedModel()) as server:
        response = _post(server.url, {"messages": HELLO, "max_tokens": "9" * 1_000_000})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert len(response.content) < 1000


def test_a_tiny_temperature_picks_greedily_instead_of_failing():
    logits = torch.tensor([[0.5, 3.0, -1.0, 2.9]])
    for temperature in (1e-320, 5e-324, 1e-6):
        settings = SamplingSettings(temperature=temperature, seed=3)
        assert settings.greedy
        assert TokenPicker(settings, [1], torch.device("cpu"))(logits) == 1
    assert not SamplingSettings(temperature=0.01).greedy


@pytest.mark.parametrize(
    ("option", "value"),
    [("--port", "99999"), ("--port", "-1"), ("--port", "80.5"), ("--request-timeout", "nan"),
     ("--request-timeout", "inf"), ("--request-timeout", "0"), ("--request-timeout", "-3"),
     ("--max-waiting", "0")],
)
def test_serve_option_values_out_of_range_are_usage_errors(capsys, tmp_path, option, value):
    # Refused while reading the command line: the model folder need not even exist.
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model", str(tmp_path / "none"), option, value])
    assert exited.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err
