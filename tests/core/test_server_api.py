"""The server's protocol on a scripted model: queue bound, time limit, cancel, stop strings, failures, images."""

from __future__ import annotations

import base64
import http.server
import io
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import openai
import pytest
from PIL import Image

from xvlm_core.answers import Answer, AnswerResult, GenerationStats
from xvlm_core.cli import main
from xvlm_core.errors import XvlmError
from xvlm_core.model import images as image_module
from xvlm_core.openai_compat import images as server_images
from xvlm_core.openai_compat.images import ImageStore
from xvlm_core.openai_compat.protocol import ApiError, ChatRequest
from xvlm_core.openai_compat.server import Api, ServerOptions, http_server, is_loopback, listen
from xvlm_core.openai_compat.stops import StopMatcher
from xvlm_core.openai_compat.worker import Worker

HOLD_S = 30.0  # the longest a scripted answer waits to be released or cancelled


@dataclass
class ScriptedModel:
    """Stands in for the model: yields `deltas`, then (if `hold`) waits until released or cancelled."""

    deltas: list[str] = field(default_factory=lambda: ["Hello", " there"])
    hold: bool = False
    error: Exception | None = None
    release: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)
    requests: list[ChatRequest] = field(default_factory=list)

    def answer(self, request: ChatRequest, cancel: threading.Event) -> Answer:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return Answer(self._steps(cancel))

    def _steps(self, cancel: threading.Event) -> Generator[str, None, AnswerResult]:
        for delta in self.deltas:
            yield delta
            if cancel.is_set():
                break
        deadline = time.monotonic() + HOLD_S
        while self.hold and not self.release.is_set() and not cancel.is_set() and time.monotonic() < deadline:
            time.sleep(0.005)
        if cancel.is_set():
            self.cancelled.set()
        stats = GenerationStats(prompt_tokens=7, output_tokens=len(self.deltas), reused_tokens=3,
                                stop_reason="cancelled" if cancel.is_set() else "eos")
        return AnswerResult("".join(self.deltas), stats)


@dataclass
class Running:
    url: str
    api: Api
    model: ScriptedModel

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="none", max_retries=0, timeout=HOLD_S)


@contextmanager
def running(model: ScriptedModel, **options) -> Iterator[Running]:
    """The real HTTP stack in this process, on a free loopback port, with `model` behind it."""
    settings = ServerOptions(port=0, **options)
    with ImageStore(settings.allow_remote_images) as store:
        api = Api(Worker(model.answer, settings.max_waiting), store, "scripted", 64, settings)
        server = http_server(api)
        sock = listen("127.0.0.1", 0)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            _wait_for(lambda: server.started, "the server to start")
            yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api, model)
        finally:
            model.release.set()
            server.should_exit = True
            thread.join(HOLD_S)
            sock.close()


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HOLD_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


HELLO = [{"role": "user", "content": "Hello"}]


def test_a_full_queue_is_429():
    model = ScriptedModel(hold=True)
    with running(model, max_waiting=1) as server, server.client() as client:
        first = client.chat.completions.create(model="scripted", messages=HELLO, stream=True)
        next(iter(first))  # answering now, and held
        waiting: list[str] = []
        second = threading.Thread(target=lambda: waiting.append(
            client.chat.completions.create(model="scripted", messages=HELLO).choices[0].message.content))
        second.start()
        _wait_for(lambda: server.api.worker.waiting == 1, "the second request to queue")
        with pytest.raises(openai.RateLimitError) as error:
            client.chat.completions.create(model="scripted", messages=HELLO)
        assert error.value.status_code == 429
        assert error.value.code == "queue_full"
        model.release.set()
        assert "".join(chunk.choices[0].delta.content or "" for chunk in first) == "Hello there"
        second.join(HOLD_S)
        assert waiting == ["Hello there"]


def test_an_answer_over_the_time_limit_is_503_and_stops_the_model():
    model = ScriptedModel(hold=True)
    with running(model, request_timeout_s=0.2) as server, server.client() as client:
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(model="scripted", messages=HELLO)
        assert error.value.status_code == 503
        assert error.value.code == "timeout"
        assert model.cancelled.wait(HOLD_S)


def test_a_stream_over_the_time_limit_ends_with_an_error_event():
    model = ScriptedModel(hold=True)
    with running(model, request_timeout_s=0.2) as server, server.client() as client:
        stream = client.chat.completions.create(model="scripted", messages=HELLO, stream=True)
        with pytest.raises(openai.APIError, match="took longer than this server's limit"):
            for _ in stream:
                pass
        assert model.cancelled.wait(HOLD_S)


def test_closing_a_stream_cancels_the_generation():
    model = ScriptedModel(hold=True)
    with running(model) as server, server.client() as client:
        with client.chat.completions.create(model="scripted", messages=HELLO, stream=True) as stream:
            assert next(iter(stream)).choices[0].delta.role == "assistant"
        assert model.cancelled.wait(HOLD_S)
        # The worker is free again at once.
        model.hold = False
        answer = client.chat.completions.create(model="scripted", messages=HELLO)
        assert answer.choices[0].message.content == "Hello there"


def test_stop_strings_end_the_answer_and_are_never_shown():
    model = ScriptedModel(deltas=["Once up", "on a ti", "me. THE", " END and more", " text"])
    with running(model) as server, server.client() as client:
        whole = client.chat.completions.create(model="scripted", messages=HELLO, stop=["THE END", "never"])
        streamed = list(client.chat.completions.create(model="scripted", messages=HELLO, stop="THE END", stream=True))
    assert whole.choices[0].message.content == "Once upon a time. "
    assert whole.choices[0].finish_reason == "stop"
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == "Once upon a time. "
    assert not any("THE" in (chunk.choices[0].delta.content or "") for chunk in streamed)


def test_stop_matcher_releases_what_turned_out_not_to_be_a_stop():
    matcher = StopMatcher(["<END>"])
    assert matcher.push("a <E") == "a "
    assert matcher.push("ND") == ""
    assert matcher.push("!") == "<END!"
    assert matcher.push(" <") == " "
    assert matcher.finish() == "<"
    assert not matcher.stopped


def test_sampling_settings_and_system_prompt_reach_the_model():
    model = ScriptedModel()
    with running(model) as server, server.client() as client:
        client.chat.completions.create(
            model="scripted", max_tokens=9, temperature=0.7, top_p=0.9, seed=5,
            messages=[{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Be kind."},
                      *HELLO, {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
                      {"role": "user", "content": [{"type": "text", "text": "Line one"},
                                                   {"type": "text", "text": "line two"}]}],
        )
    request = model.requests[0]
    assert (request.max_tokens, request.temperature, request.top_p, request.seed) == (9, 0.7, 0.9, 5)
    assert request.system == "Be brief.\nBe kind."
    assert [(m.role, m.text) for m in request.messages] == [
        ("user", "Hello"), ("assistant", "Hi!"), ("user", "Line one\nline two")]


def test_a_model_failure_is_500_without_its_details():
    model = ScriptedModel(error=RuntimeError("secret internal detail"))
    with running(model) as server, server.client() as client, pytest.raises(openai.InternalServerError) as error:
        client.chat.completions.create(model="scripted", messages=HELLO)
    assert error.value.status_code == 500
    assert "secret" not in str(error.value.body) and "Traceback" not in str(error.value.body)
    assert "server log" in error.value.message


def test_a_question_the_model_refuses_is_400_with_its_reason():
    model = ScriptedModel(error=XvlmError("This model has no vision tower, so it cannot look at images."))
    with (running(model) as server, server.client() as client,
          pytest.raises(openai.BadRequestError, match="no vision tower")):
        client.chat.completions.create(model="scripted", messages=HELLO, stream=True)


def _png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_images_are_kept_under_their_hash_and_removed_on_close():
    with ImageStore() as store:
        first = store.resolve(_data_url(_png()), "messages[0].content[1]")
        again = store.resolve(_data_url(_png()), "messages[2].content[0]")
        assert first == again
        assert Path(first.path).name.endswith(".png") and Path(first.path).name.startswith(first.sha256)
        assert Path(first.path).read_bytes() == _png()
        folder = store.folder
    assert not folder.exists()


def test_an_image_with_too_many_pixels_is_refused(monkeypatch):
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", 1000)
    with ImageStore() as store, pytest.raises(ApiError) as error:
        store.resolve(_data_url(_png(40, 40)), "messages[0].content[0]")
    assert error.value.status == 400
    assert "40x40 pixels is too large" in error.value.message


def test_a_data_url_that_is_not_base64_is_refused():
    with ImageStore() as store, pytest.raises(ApiError, match="not valid base64"):
        store.resolve("data:image/png;base64,@@@@", "messages[0].content[0]")


@contextmanager
def image_host(body: bytes) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=host.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{host.server_address[1]}/picture.png"
    finally:
        host.shutdown()
        host.server_close()
        thread.join(HOLD_S)


def test_remote_images_only_when_allowed():
    with image_host(_png()) as url:
        with ImageStore() as store, pytest.raises(ApiError, match="--allow-remote-images"):
            store.resolve(url, "messages[0].content[0]")
        with ImageStore(allow_remote=True) as store:
            assert Path(store.resolve(url, "messages[0].content[0]").path).read_bytes() == _png()


def test_a_remote_image_over_the_size_bound_is_refused(monkeypatch):
    monkeypatch.setattr(server_images, "MAX_REMOTE_IMAGE_BYTES", 100)
    with (image_host(_png(64, 64) + b"\0" * 200) as url, ImageStore(allow_remote=True) as store,
          pytest.raises(ApiError, match="larger than")):
        store.resolve(url, "messages[0].content[0]")


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("0.0.0.0", False), ("192.168.1.5", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_serving_beyond_this_machine_needs_a_key(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("XVLM_API_KEY", raising=False)
    # The check comes before the model loads: the model folder need not even exist.
    assert main(["serve", "--model", str(tmp_path / "none"), "--host", "0.0.0.0"]) == 1
    error = capsys.readouterr().err
    assert "--api-key" in error and "--insecure-no-key" in error


def test_a_busy_port_is_reported():
    with listen("127.0.0.1", 0) as taken, pytest.raises(XvlmError, match="choose another with --port"):
        listen("127.0.0.1", taken.getsockname()[1])


def test_the_server_keeps_only_the_most_recently_sent_images(monkeypatch):
    from PIL import Image

    from xvlm_core.openai_compat import images as server_images

    monkeypatch.setattr(server_images, "KEPT_IMAGES", 2)
    urls = []
    for colour in ("red", "green", "blue"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
        urls.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    with server_images.ImageStore() as store:
        red = store.resolve(urls[0], "messages[0]")
        store.resolve(urls[1], "messages[1]")
        store.resolve(urls[0], "messages[2]")  # sent again: now the most recent
        blue = store.resolve(urls[2], "messages[3]")
        kept = sorted(path.name for path in store.folder.iterdir())
    assert kept == sorted([Path(red.path).name, Path(blue.path).name])
