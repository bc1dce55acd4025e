"""A client for OpenAI-compatible model servers (`xvlm serve`, vLLM, LM Studio...): torch-free and Qt-free.

`connect` finds a served model and `ServerSession.answer` streams its answer as an `Answer`, as the local session
does, so the model thread cannot tell them apart. What a server sends is bounded before it is decoded: a server
that never ends an event or a body (a fault, or not a model server at all) ends the request with an error instead
of filling memory. Every failure is a `ServerError`: a `Fault` with its facts, so each front end words it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import mimetypes
import socket
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx2

from xvlm_core.answers import Answer, AnswerResult, GenerationStats
from xvlm_core.errors import XvlmError
from xvlm_core.messages import Image, Message, image_path
from xvlm_core.model.prompt import SYSTEM_V1
from xvlm_core.openai_compat.protocol import (
    ModelCard,
    StreamedChunk,
    UnexpectedShape,
    error_message,
    read_chunk,
    read_model_list,
    request_body,
)
from xvlm_core.sampling import SamplingSettings

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # between two streamed events: a busy server queues requests
LIST_TIMEOUT_S = 10.0
MAX_EVENT_BYTES = 1 << 20  # one event of the answer's stream (its lines together); a chunk is a few hundred bytes
MAX_BODY_BYTES = 4 << 20  # the model list, an error's explanation
SHOWN_DETAIL_CHARS = 300  # of a server's own words, in a message for a person


class Fault(Enum):
    """What went wrong with a model server; the comment names the facts a ServerError carries with it."""

    UNREACHABLE = "unreachable"  # url, error (the exception's name)
    KEY_REFUSED = "key_refused"  # url, detail
    NO_SUCH_PAGE = "no_such_page"  # url
    BUSY = "busy"  # url, detail
    SERVER_FAILED = "server_failed"  # url, status, detail
    REQUEST_REFUSED = "request_refused"  # url, status, detail
    TOO_LONG = "too_long"  # url, size (MiB)
    COMPRESSED = "compressed"  # url, encoding
    NOT_OPENAI = "not_openai"  # url: a model list or an answer not in the OpenAI API's shape
    NOT_JSON = "not_json"  # url: an event of the answer that is not JSON
    UNREADABLE = "unreadable"  # url, field, value (as JSON): a part of an answer of the wrong type
    ANSWER_STOPPED = "answer_stopped"  # url, reason ("" when the server gave none)
    NO_MODEL = "no_model"  # url
    MODEL_NOT_SERVED = "model_not_served"  # url, name, names
    IMAGE_UNREADABLE = "image_unreadable"  # path, reason


ENGLISH = {
    Fault.UNREACHABLE: "Cannot reach the model server at {url} ({error}).",
    Fault.KEY_REFUSED: "The model server at {url} refused the API key ({detail}).",
    Fault.NO_SUCH_PAGE: "The model server at {url} has no such page (HTTP 404); the API's address usually ends "
                        "in /v1.",
    Fault.BUSY: "The model server at {url} is busy ({detail}).",
    Fault.SERVER_FAILED: "The model server at {url} failed (HTTP {status}: {detail}).",
    Fault.REQUEST_REFUSED: "The model server at {url} refused the request (HTTP {status}): {detail}",
    Fault.TOO_LONG: "The model server at {url} sent more than {size} MiB without a break, so reading stopped.",
    Fault.COMPRESSED: "The model server at {url} sent its answer compressed ({encoding}), which is not read.",
    Fault.NOT_OPENAI: "{url} did not answer like an OpenAI-compatible server.",
    Fault.NOT_JSON: "The model server at {url} sent something that is not JSON.",
    Fault.UNREADABLE: "The model server at {url} sent an answer that cannot be read: its \"{field}\" was {value}, "
                      "not what the OpenAI chat API sends.",
    Fault.ANSWER_STOPPED: "The model server at {url} stopped the answer: {reason}",
    Fault.NO_MODEL: "The model server at {url} serves no model.",
    Fault.MODEL_NOT_SERVED: "The model server at {url} does not serve {name}; it serves {names}.",
    Fault.IMAGE_UNREADABLE: "{path}: cannot read the image to send it ({reason}).",
}


class ServerError(XvlmError):
    """A model server could not be reached, refused a request or sent what cannot be read."""

    def __init__(self, fault: Fault, **facts: str):
        super().__init__(ENGLISH[fault].format(**facts))
        self.fault = fault
        self.facts = facts


def api_url(address: str) -> str:
    """The API's base URL from what a person typed: `gpu-box:8000` -> `http://gpu-box:8000/v1`."""
    url = address.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url if url.endswith("/v1") else f"{url}/v1"


def list_models(address: str, key: str) -> list[ModelCard]:
    """The models a server offers (`GET /v1/models`)."""
    url = api_url(address)
    try:
        with httpx2.stream("GET", f"{url}/models", headers=_headers(key), timeout=LIST_TIMEOUT_S) as response:
            body = _read_body(response, url)
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise ServerError(Fault.UNREACHABLE, url=url, error=type(exc).__name__) from None
    if response.status_code != 200:
        raise _refusal(response, body, url)
    try:
        return read_model_list(body)
    except UnexpectedShape:
        raise ServerError(Fault.NOT_OPENAI, url=url) from None


@dataclass(frozen=True)
class RemoteModel:
    """A model on a server, in the place of a loaded one."""

    url: str
    key: str
    name: str
    context_length: int = 0

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "device": "server", "dtype": "", "memory_mb": 0.0, "load_s": 0.0,
                "can_see_images": True, "context_length": self.context_length, "server": self.url}


def connect(address: str, key: str, model: str) -> RemoteModel:
    """Check that the server answers and serves `model` ("" = its first model)."""
    url = api_url(address)
    cards = list_models(url, key)
    if not cards:
        raise ServerError(Fault.NO_MODEL, url=url)
    names = [card.id for card in cards]
    name = model or names[0]
    if name not in names:
        raise ServerError(Fault.MODEL_NOT_SERVED, url=url, name=repr(name), names=", ".join(names))
    return RemoteModel(url, key, name, cards[names.index(name)].context_length)


class ServerSession:
    """Answers through the server; the conversation is sent whole each time (the server reuses its cache)."""

    def __init__(self, remote: RemoteModel):
        self.remote = remote

    def answer(self, messages: Sequence[Message], settings: SamplingSettings, system: str = SYSTEM_V1,
               cancel: threading.Event | None = None) -> Answer:
        """The same call as the core's `ChatSession.answer`, answered by the server; nothing is sent before the
        answer is iterated. Setting `cancel` closes the connection, which stops the server generating."""
        return Answer(_stream(self.remote, messages, settings, system, cancel or threading.Event()))

    def look_at(self, images: Sequence[Image], cancel: threading.Event | None = None,
                before: Sequence[Message] | None = (), system: str = SYSTEM_V1) -> int:
        """Nothing: the images travel with the question, and the server reads them then."""
        return 0


def _stream(remote: RemoteModel, messages: Sequence[Message], settings: SamplingSettings, system: str,
            cancel: threading.Event) -> Generator[str, None, AnswerResult]:
    url = remote.url
    body = request_body(remote.name, messages, settings, system, _data_url)
    texts: list[str] = []
    stats = GenerationStats()  # times measured on this side of the connection, counts as the server says
    started = time.perf_counter()
    first_at = 0.0
    hangup = _Hangup(cancel)
    try:
        for event_data in _events(url, remote.key, body, hangup):
            if cancel.is_set():
                stats.stop_reason = "cancelled"
                break  # leaving the stream closes the connection: the server stops generating
            if event_data == "[DONE]":
                break
            chunk = _read_chunk(event_data, url)
            if chunk.usage is not None:
                stats.prompt_tokens = chunk.usage.prompt_tokens
                stats.output_tokens = chunk.usage.completion_tokens
                stats.reused_tokens = chunk.usage.cached_tokens
            elif chunk.texts:
                stats.output_tokens += len(chunk.texts)  # a server that reports no usage: count chunks instead
            if chunk.finish_reason:
                stats.stop_reason = "length" if chunk.finish_reason == "length" else "eos"
            for text in chunk.texts:
                if not first_at:
                    first_at = time.perf_counter()
                    stats.ttft_s = first_at - started
                texts.append(text)
                yield text
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        if not cancel.is_set():
            raise ServerError(Fault.UNREACHABLE, url=url, error=type(exc).__name__) from None
        stats.stop_reason = "cancelled"  # Stop shut the connection under a waiting read
    finally:
        hangup.ended.set()
    if first_at:
        stats.decode_s = time.perf_counter() - first_at
    return AnswerResult("".join(texts), stats)


def _events(url: str, key: str, body: dict[str, Any], hangup: _Hangup) -> Iterator[str]:
    """The data of each event the server streams, each event at most MAX_EVENT_BYTES.

    httpx2's own server-sent-events reader (the maintained httpx-sse decoder) bounds an event, the line it is
    still waiting the end of included, so only the encoding and the content type are checked here, before it reads.
    """
    timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    with httpx2.Client(timeout=timeout) as client, client.sse(
            f"{url}/chat/completions", method="POST", json=body, headers=_headers(key),
            extensions={"trace": hangup.trace}, max_event_size=MAX_EVENT_BYTES) as events:
        response = events.response
        if response.status_code != 200:
            raise _refusal(response, _read_body(response, url), url)
        _check_encoding(response, url)
        if response.headers.get("content-type", "").partition(";")[0].strip().lower() != "text/event-stream":
            raise ServerError(Fault.NOT_OPENAI, url=url)
        response.encoding = "utf-8"  # an event stream is UTF-8, whatever else the header says
        try:
            for event in events:
                yield event.data.strip()
        except httpx2.SSEError:  # the one it raises once the content type is right: an event beyond the bound
            raise _too_long(url, MAX_EVENT_BYTES) from None


def _read_chunk(data: str, url: str) -> StreamedChunk:
    try:
        chunk = read_chunk(data)
    except UnexpectedShape as exc:
        if not exc.field:
            raise ServerError(Fault.NOT_JSON, url=url) from None
        raise ServerError(Fault.UNREADABLE, url=url, field=exc.field, value=_short(json.dumps(exc.value))) from None
    if chunk.error is not None:
        raise ServerError(Fault.ANSWER_STOPPED, url=url, reason=_short(chunk.error))
    return chunk


def _data_url(image: Image) -> str:
    path = Path(image_path(image))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServerError(Fault.IMAGE_UNREADABLE, path=str(path), reason=str(exc.strerror or exc)) from None
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


# --- bounded reading -------------------------------------------------------------------------------------


def _headers(key: str) -> dict[str, str]:
    # Uncompressed: a compressed body is bounded only once inflated, so what is read is what is bounded.
    return {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {key}"} if key else {})}


def _check_encoding(response: httpx2.Response, url: str) -> None:
    """Refuse a compressed body (sent although _headers asked for none): it would be inflated before it is bounded."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ServerError(Fault.COMPRESSED, url=url, encoding=encoding[:40])


def _read_body(response: httpx2.Response, url: str) -> bytes:
    """The whole body of a short answer (a list, an error), at most MAX_BODY_BYTES."""
    _check_encoding(response, url)
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_long(url, MAX_BODY_BYTES)
    return bytes(body)


def _too_long(url: str, limit: int) -> ServerError:
    return ServerError(Fault.TOO_LONG, url=url, size=f"{limit / (1 << 20):g}")


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_DETAIL_CHARS else text[:SHOWN_DETAIL_CHARS] + "…"


def _refusal(response: httpx2.Response, body: bytes, url: str) -> ServerError:
    message = error_message(body)
    detail = _short(message) if message is not None else response.reason_phrase or ""
    status = response.status_code
    if status in (401, 403):
        return ServerError(Fault.KEY_REFUSED, url=url, detail=detail)
    if status == 404:
        return ServerError(Fault.NO_SUCH_PAGE, url=url)
    if status == 429:
        return ServerError(Fault.BUSY, url=url, detail=detail)
    if status >= 500:
        return ServerError(Fault.SERVER_FAILED, url=url, status=str(status), detail=detail)
    return ServerError(Fault.REQUEST_REFUSED, url=url, status=str(status), detail=detail)


class _Hangup:
    """Shuts an answer's connection once `cancel` is set: a read waiting on a silent server (up to READ_TIMEOUT_S)
    then ends at once, as does one waiting for the server's first byte.

    Closing the response or the client from another thread would not do: it closes the socket, and a read
    blocked on a closed socket goes on waiting; a shutdown ends it. httpx2 gives the socket before the response
    (which a silent server never sends) only through httpcore's trace hook.
    """

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.ended = threading.Event()
        self._socket: socket.socket | None = None
        threading.Thread(target=self._watch, name="answer-hangup", daemon=True).start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's trace hook: keeps the socket of the connection as it opens."""
        if event == "connection.connect_tcp.complete":
            self._socket = info["return_value"].get_extra_info("socket")
            if self.cancel.is_set():  # Stop came while connecting, before the watcher could see a socket
                self._shut()

    def _watch(self) -> None:
        while not self.ended.is_set():
            if self.cancel.wait(0.1):
                self._shut()
                return

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):  # already closed by the stream ending at the same moment
                self._socket.shutdown(socket.SHUT_RDWR)
