"""A model on an OpenAI-compatible server (`xvlm serve`, vLLM, LM Studio...) behind the worker's load/session calls.

`connect` stands in for loading a model and `RemoteSession` for `xvlm_core.session.ChatSession`: the worker
drives them the same way, on its own thread, so the window cannot tell a local model from a remote one.
Plain Python (httpx2); no Qt, no torch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import mimetypes
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
from xvlm_core.answers import Answer, AnswerResult, GenerationStats
from xvlm_core.errors import XvlmError
from xvlm_core.messages import Message, image_path
from xvlm_core.prompt import SYSTEM_V1
from xvlm_core.sampling import SamplingSettings

from app import APP_NAME
from app.i18n import translate

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 300.0  # between two streamed chunks: a busy server queues requests
LIST_TIMEOUT_S = 10.0
# What is read from a server is bounded before it is decoded: a server that never ends a line or a body (a fault,
# or not a model server at all) ends the request with a message instead of filling memory.
MAX_LINE_BYTES = 1 << 20  # one line of the answer's event stream; a chunk of it is a few hundred bytes
MAX_BODY_BYTES = 4 << 20  # the model list, an error's explanation
SHOWN_DETAIL_CHARS = 300  # of a server's own words, in a message for a person


class ServerError(XvlmError):
    """The model server could not be reached or refused a request; the message says what to do."""


def api_url(address: str) -> str:
    """The API's base URL from what a person typed: `gpu-box:8000` -> `http://gpu-box:8000/v1`."""
    url = address.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url if url.endswith("/v1") else f"{url}/v1"


# --- the API key: the system keyring when there is one, else the settings file ----------------------------


def _keyring() -> Any:
    try:
        import keyring
    except ImportError:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def api_key(settings: Settings) -> str:
    """The key for the settings' server (the keyring's, else the one in the settings file)."""
    return server_key(settings.server_url, settings.server_api_key)


def server_key(address: str, file_key: str) -> str:
    """The keyring's key for the server at `address`, else `file_key`. A keyring may wait on the system (an unlock
    prompt): call it off the UI thread where it can be."""
    keyring = _keyring()
    if keyring is not None and address:
        try:
            return keyring.get_password(APP_NAME, api_url(address)) or file_key
        except Exception:  # any keyring backend failure: fall back to the file's copy
            log.exception("reading the API key from the keyring failed")
    return file_key


def keep_api_key(settings: Settings) -> Settings:
    """Move a key typed in Settings into the keyring if there is one; what is left is saved to the file."""
    keyring = _keyring()
    if keyring is None or not settings.server_url:
        if settings.server_api_key:
            log.warning("no system keyring: the model server's API key is kept in the settings file")
        return settings
    if not settings.server_api_key:  # the key box was emptied: forget the key, or `api_key` keeps finding it
        try:
            keyring.delete_password(APP_NAME, api_url(settings.server_url))
        except Exception:  # no key was stored (PasswordDeleteError) or the backend failed: nothing more to do
            log.info("no API key removed from the keyring", exc_info=True)
        return settings
    try:
        keyring.set_password(APP_NAME, api_url(settings.server_url), settings.server_api_key)
    except Exception:  # any keyring backend failure: keep it in the file rather than lose it
        log.exception("saving the API key to the keyring failed; it stays in the settings file")
        return settings
    return replace(settings, server_api_key="")


# --- talking to the server -----------------------------------------------------------------------------


def _headers(key: str) -> dict[str, str]:
    # Uncompressed: a compressed body is bounded only once inflated, so what is read is what is bounded.
    return {"Accept-Encoding": "identity", **({"Authorization": f"Bearer {key}"} if key else {})}


def _raw_chunks(response: httpx2.Response, url: str) -> Iterator[bytes]:
    """The body as sent; a compressed one (sent although _headers asked for none) is refused."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ServerError(translate("RemoteModel", "The model server at {url} sent its answer compressed "
                                                   "({encoding}), which this app does not read. Check that the "
                                                   "address in Settings is the model server itself.")
                          .format(url=url, encoding=encoding[:40]))
    return response.iter_raw()


def _read_body(response: httpx2.Response, url: str) -> bytes:
    """The whole body of a short answer (a list, an error), at most MAX_BODY_BYTES."""
    body = bytearray()
    for chunk in _raw_chunks(response, url):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _too_long(url, MAX_BODY_BYTES)
    return bytes(body)


def _stream_lines(chunks: Iterable[bytes], url: str) -> Iterator[str]:
    """The lines of an event stream (without their line ends), each at most MAX_LINE_BYTES."""
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            pending += chunk[start:end]
            if len(pending) > MAX_LINE_BYTES:
                raise _too_long(url, MAX_LINE_BYTES)
            yield pending.decode("utf-8", "replace").removesuffix("\r")
            pending.clear()
            start = end + 1
        pending += chunk[start:]
        if len(pending) > MAX_LINE_BYTES:
            raise _too_long(url, MAX_LINE_BYTES)
    if pending:
        yield pending.decode("utf-8", "replace").removesuffix("\r")


def _too_long(url: str, limit: int) -> ServerError:
    return ServerError(translate("RemoteModel", "The model server at {url} sent more than {size} MiB without a "
                                                "break, so the app stopped reading. Check that the address in "
                                                "Settings is a model server; if it is, its log may say what went "
                                                "wrong.").format(url=url, size=f"{limit / (1 << 20):g}"))


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_DETAIL_CHARS else text[:SHOWN_DETAIL_CHARS] + "…"


def _failure(response: httpx2.Response, body: bytes, url: str) -> ServerError:
    try:
        detail = _short(str(json.loads(body)["error"]["message"]))
    except (ValueError, KeyError, TypeError):
        detail = response.reason_phrase or ""
    status = response.status_code
    if status in (401, 403):
        return ServerError(translate("RemoteModel", "The model server at {url} refused the API key ({detail}). "
                                                    "Check the key in Settings → Model server.")
                           .format(url=url, detail=detail))
    if status == 404:
        return ServerError(translate("RemoteModel", "The model server at {url} has no such page (HTTP 404). Check "
                                                    "the address in Settings: it is usually the server's address "
                                                    "followed by /v1.").format(url=url))
    if status == 429:
        return ServerError(translate("RemoteModel", "The model server at {url} is busy ({detail}). Try again in a "
                                                    "moment.").format(url=url, detail=detail))
    if status >= 500:
        return ServerError(translate("RemoteModel", "The model server at {url} failed (HTTP {status}: {detail}). "
                                                    "Try again; if it keeps failing, the server's log says why.")
                           .format(url=url, status=status, detail=detail))
    return ServerError(translate("RemoteModel", "The model server at {url} refused the request (HTTP {status}): "
                                                "{detail}").format(url=url, status=status, detail=detail))


def _unreachable(exc: Exception, url: str) -> ServerError:
    return ServerError(translate("RemoteModel", "Cannot reach the model server at {url} ({error}). Check the address "
                                                "in Settings and that the server is running.")
                       .format(url=url, error=type(exc).__name__))


def list_models(address: str, key: str) -> list[dict[str, Any]]:
    """The models a server offers (`GET /v1/models`), as its model cards."""
    url = api_url(address)
    try:
        with httpx2.stream("GET", f"{url}/models", headers=_headers(key), timeout=LIST_TIMEOUT_S) as response:
            body = _read_body(response, url)
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise _unreachable(exc, url) from None
    if response.status_code != 200:
        raise _failure(response, body, url)
    try:
        cards = json.loads(body)["data"]
        return [card for card in cards if isinstance(card, dict) and isinstance(card.get("id"), str)]
    except (ValueError, KeyError, TypeError):
        raise ServerError(translate("RemoteModel", "{url} did not answer like an OpenAI-compatible server. Check the "
                                                   "address.").format(url=url)) from None


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


def connect(address: str, key: str, model: str, on_stage: Callable[[str], None]) -> RemoteModel:
    """Check that the server answers and serves `model` ("" = its first model)."""
    url = api_url(address)
    on_stage(translate("RemoteModel", "Connecting to {url}…").format(url=url))
    cards = list_models(address, key)
    if not cards:
        raise ServerError(translate("RemoteModel", "The model server at {url} serves no model.").format(url=url))
    names = [card["id"] for card in cards]
    name = model or names[0]
    if name not in names:
        raise ServerError(translate("RemoteModel", "The model server at {url} does not serve {name}; it serves "
                                                   "{names}. Choose one in Settings.")
                          .format(url=url, name=repr(name), names=", ".join(names)))
    card = cards[names.index(name)]
    context = card.get("context_length")
    return RemoteModel(url, key, name, context if isinstance(context, int) else 0)


class RemoteSession:
    """Answers through the server; the conversation is sent whole each time (the server reuses its cache)."""

    def __init__(self, remote: RemoteModel):
        self.remote = remote

    def answer(self, messages: list[Message], settings: SamplingSettings, system: str = SYSTEM_V1,
               cancel: threading.Event | None = None) -> Answer:
        """The same call as the core's `ChatSession.answer`, answered by the server."""
        body: dict[str, Any] = {
            "model": self.remote.name,
            "messages": ([] if system == SYSTEM_V1 else [{"role": "system", "content": system}])
            + [_message(message) for message in messages],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if settings.seed is not None:
            body["seed"] = settings.seed
        return Answer(_RemoteStream(self.remote, body, cancel or threading.Event()).run())


def _message(message: Message) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": _data_url(Path(image_path(image)))}}
                                   for image in message.images]
    return {"role": message.role, "content": [*parts, {"type": "text", "text": message.text}]}


def _data_url(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServerError(translate("RemoteModel", "{path}: cannot read the image to send it ({reason}).")
                          .format(path=path, reason=exc.strerror or exc)) from None
    kind = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


class _Hangup:
    """Shuts an answer's connection once `cancel` is set: a read waiting on a silent server (up to READ_TIMEOUT_S)
    then ends at once, as does one waiting for the server's first byte."""

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


class _RemoteStream:
    """One answer streamed from the server; setting `cancel` closes the stream."""

    def __init__(self, remote: RemoteModel, body: dict[str, Any], cancel: threading.Event):
        self.remote = remote
        self.body = body
        self.cancel = cancel
        self.text = ""
        self.stats = GenerationStats()  # measured on this side of the connection, counts as the server says

    def run(self) -> Generator[str, None, AnswerResult]:
        url = self.remote.url
        started = time.perf_counter()
        first_at = 0.0
        timeout = httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
        hangup = _Hangup(self.cancel)
        try:
            with httpx2.Client(timeout=timeout) as client, client.stream(
                    "POST", f"{url}/chat/completions", json=self.body, headers=_headers(self.remote.key),
                    extensions={"trace": hangup.trace}) as response:
                if response.status_code != 200:
                    raise _failure(response, _read_body(response, url), url)
                for line in _stream_lines(_raw_chunks(response, url), url):
                    if self.cancel.is_set():
                        self.stats.stop_reason = "cancelled"
                        break  # leaving the block closes the connection: the server stops generating
                    data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
                    if not data:
                        continue
                    if data == "[DONE]":
                        break
                    for delta in self._read_chunk(data):
                        if not first_at:
                            first_at = time.perf_counter()
                            self.stats.ttft_s = first_at - started
                        self.text += delta
                        yield delta
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            if not self.cancel.is_set():
                raise _unreachable(exc, url) from None
            self.stats.stop_reason = "cancelled"  # Stop shut the connection under a waiting read
        finally:
            hangup.ended.set()
        if first_at:
            self.stats.decode_s = time.perf_counter() - first_at
        return AnswerResult(self.text, self.stats)

    def _read_chunk(self, data: str) -> list[str]:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ServerError(translate("RemoteModel", "The model server at {url} sent something that is not JSON.")
                              .format(url=self.remote.url)) from None
        if not isinstance(chunk, dict):
            return []
        if isinstance(chunk.get("error"), dict):
            reason = chunk["error"].get("message") or translate("RemoteModel", "no reason given")
            raise ServerError(translate("RemoteModel", "The model server at {url} stopped the answer: {reason}")
                              .format(url=self.remote.url, reason=_short(str(reason))))

        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.stats.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.stats.output_tokens = _count(usage.get("completion_tokens"))
            details = usage.get("prompt_tokens_details")
            self.stats.reused_tokens = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
        choices = chunk.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
            raise self._unreadable("choices", choices)
        deltas = []
        for choice in choices:
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise self._unreadable("delta", delta)
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                raise self._unreadable("content", content)
            if content:
                deltas.append(content)
                if not isinstance(usage, dict):
                    self.stats.output_tokens += 1  # a server that reports no usage: count chunks instead
            finish = choice.get("finish_reason")
            if finish:
                self.stats.stop_reason = "length" if finish == "length" else "eos"
        return deltas

    def _unreadable(self, field: str, value: Any) -> ServerError:
        return ServerError(translate("RemoteModel", "The model server at {url} sent an answer this app cannot read: "
                                                    "its \"{field}\" was {value}, not what the OpenAI chat API "
                                                    "sends. Check that the address in Settings is an "
                                                    "OpenAI-compatible model server.")
                           .format(url=self.remote.url, field=field, value=_short(json.dumps(value))))


def _count(value: Any) -> int:
    """A token count from the server's usage; anything but a whole number of at least 0 counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
