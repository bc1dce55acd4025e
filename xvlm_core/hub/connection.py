"""Talking to a model hub: its address and token, bounded reads with retries and cancel, errors for people.

The address, token, cache folder and offline switch are read from the environment when a download starts;
huggingface_hub reads its own once, at import, which would ignore a mirror or token set later (or by a test).

Every request goes through BodyStream (huggingface_hub's session and headers, read by a helper thread so that
cancel never waits on the network), and every body kept in memory through `read_at_most`: what a server sends, or
says it will send, never decides how much is held. huggingface_hub's HfApi is not used for the API: it reads each
answer whole, so a mirror that streams without end would fill memory.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlparse

import httpx2
from huggingface_hub import get_session
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

from xvlm_core import __version__
from xvlm_core.errors import Cancelled, Remedy, XvlmError
from xvlm_core.hub.progress import format_size
from xvlm_core.local_files import read_regular_file

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ENDPOINT = "https://huggingface.co"
POLL_S = 0.1  # how often a waiting download looks at its cancel flag
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
JSON_LIMIT = 16 * 2**20  # one answer of the hub's API (a repo's info, a page of its file list): far smaller
ERROR_BODY_LIMIT = 64 * 2**10  # an error answer's details are a line of JSON
TOKEN_FILE_LIMIT = 64 * 2**10  # an access token is a line of text
_TIMEOUT = httpx2.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)

# A download error's kind, and what a person can do about it.
KIND_REMEDIES = {"offline": Remedy.CHECK_NETWORK, "unreachable": Remedy.CHECK_NETWORK, "not_found": Remedy.CHOOSE_MODEL,
                 "auth": Remedy.SIGN_IN, "disk_full": Remedy.FREE_DISK, "permission": Remedy.CHOOSE_FOLDER,
                 "integrity": Remedy.TRY_AGAIN, "cancelled": Remedy.NONE, "http": Remedy.TRY_AGAIN}


class DownloadError(XvlmError):
    """A download that cannot go on; `str()` says what happened and what to do, `kind` lets the UI react,
    `code` (from the kind unless given) says what a person can do."""

    KINDS = tuple(KIND_REMEDIES)

    def __init__(self, message: str, kind: str = "http", code: Remedy | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"unknown download error kind: {kind}")
        super().__init__(message, code=code or KIND_REMEDIES[kind])
        self.kind = kind


class DownloadCancelled(DownloadError, Cancelled):
    """The user cancelled; the bytes already on disk are kept for the next run."""

    def __init__(self) -> None:
        super().__init__("The download was cancelled; what was already downloaded is kept for next time.", "cancelled")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; a file's count restarts whenever bytes arrive."""

    attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 16.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))


class Transient(Exception):
    """A failure worth another try: a dropped connection, a timeout, a 5xx or 429 answer."""

    def __init__(self, detail: str, cause: BaseException | None = None, status: int | None = None):
        super().__init__(detail)
        self.cause = cause
        self.status = status


# ---------------------------------------------------------------------------------------------------------------
# Settings from the environment, read at call time


def _hf_home() -> Path:
    raw = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(raw)))


def default_cache_dir() -> Path:
    """The hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    raw = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if raw:
        return Path(os.path.expandvars(os.path.expanduser(raw)))
    return _hf_home() / "hub"


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint(endpoint: str | None) -> str:
    url = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    if urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        raise DownloadError(f"The hub address '{url}' is not a web address (http:// or https://).", "unreachable",
                            Remedy.CHECK_MIRROR)
    return url


def _token() -> str | None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if value := os.environ.get(name, "").strip():
            return value
    path = Path(os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or str(_hf_home() / "token")))
    if not path.exists():
        return None  # not logged in: anonymous
    try:
        return read_regular_file(path, TOKEN_FILE_LIMIT, what="a token file").decode("utf-8").strip() or None
    except (XvlmError, UnicodeDecodeError) as exc:
        reason = str(exc).rstrip(".") if isinstance(exc, XvlmError) else f"{path}: it is not UTF-8 text"
        raise DownloadError(f"The hub access token could not be read: {reason}. Replace or remove that file, or "
                            "set HF_TOKEN to the token.", "auth") from None


# ---------------------------------------------------------------------------------------------------------------
# One download's view of the hub


@dataclass(frozen=True)
class JsonAnswer:
    """An answer of the hub's API: its JSON, its size in bytes, and the address of the next page if it has one."""

    document: Any
    size: int
    next_page: str | None


class HubConnection:
    """Endpoint, token and huggingface_hub's headers, the cancel flag, retries and error wording."""

    def __init__(self, endpoint: str | None, cancel: threading.Event, retry: RetryPolicy,
                 on_retry: Callable[[float], None] = lambda _delay_s: None):
        """`on_retry(delay_s)` hears of each wait before the hub is asked again (a progress event, see progress.py)."""
        self.endpoint = _endpoint(endpoint)
        self.host = urlparse(self.endpoint).netloc
        token = _token()
        self.authenticated = token is not None
        identity = dict(token=token or False, library_name="xvlm-chat", library_version=__version__)
        # Exact sizes, and Range requests that mean raw bytes.
        self.headers = {**build_hf_headers(**identity), "Accept-Encoding": "identity"}
        self.cancel = cancel
        self.retry = retry
        self.on_retry = on_retry

    def headers_for(self, url: str) -> dict[str, str]:
        """The headers of a request to `url`: the token goes to the hub's own address only.

        A page link or any address the hub names may lead elsewhere; redirects are handled the same way by httpx.
        """
        if _origin(url) == _origin(self.endpoint):
            return dict(self.headers)
        return {key: value for key, value in self.headers.items() if key.lower() != "authorization"}

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled()

    def pause(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise DownloadCancelled()

    def retrying(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, tried again after transient failures, up to `retry.attempts` times."""
        failures = 0
        while True:
            self.check_cancel()
            try:
                return attempt()
            except Transient as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise self.gave_up(exc, failures) from None
                delay = self.retry.delay(failures)
                log.warning("%s; trying again in %.1f s", exc, delay)
                self.on_retry(delay)
                self.pause(delay)

    def get_json(self, url: str, repo_id: str, revision: str | None = None) -> JsonAnswer:
        """An answer of the hub's API, read up to JSON_LIMIT bytes, retried after transient failures."""

        def attempt() -> JsonAnswer:
            with BodyStream(self, url, repo_id, revision=revision) as body:
                raw = body.read(JSON_LIMIT + 1)
                link = body.response.links.get("next", {}).get("url")
                answered_at = str(body.response.url)
            if len(raw) > JSON_LIMIT:
                raise DownloadError(
                    f"{self.host} sent more than {format_size(JSON_LIMIT)} about {repo_id}, far more than a model "
                    "hub's answer, so the rest was not read. Check the hub address (HF_ENDPOINT).", "http",
                    Remedy.CHECK_MIRROR)
            try:
                document = json.loads(raw)
            except (ValueError, RecursionError):
                raise self.not_a_hub(repo_id) from None
            return JsonAnswer(document, len(raw), urljoin(answered_at, link) if link else None)

        return self.retrying(attempt)

    def not_a_hub(self, repo_id: str) -> DownloadError:
        return DownloadError(f"{self.endpoint} did not answer like a model hub about {repo_id}. "
                             "Check the endpoint setting (HF_ENDPOINT).", "http", Remedy.CHECK_MIRROR)

    def response_error(self, response: httpx2.Response, repo_id: str, filename: str | None = None,
                       revision: str | None = None) -> DownloadError:
        """The person-readable error for an answer that is neither a success nor worth another try."""
        try:
            hf_raise_for_status(response)
        except HfHubHTTPError as exc:
            return self.http_error(exc, repo_id, filename, revision)
        return DownloadError(f"{self.endpoint} answered '{response.status_code} {response.reason_phrase}'.", "http")

    def transport_error(self, exc: Exception) -> Exception:
        """What a failed request means: offline mode, a bad address or a redirect loop (final), or a network
        failure worth a retry."""
        if isinstance(exc, OfflineModeIsEnabled):
            return DownloadError("Offline mode is on (HF_HUB_OFFLINE), so nothing can be downloaded.", "offline")
        if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
            return DownloadError(f"Not a usable hub address: {exc}.", "unreachable", Remedy.CHECK_MIRROR)
        if isinstance(exc, httpx2.TooManyRedirects):
            return DownloadError(f"The hub or mirror at {self.host} redirects in a loop, so nothing can be fetched "
                                 "from it. Check its address (HF_ENDPOINT).", "unreachable", Remedy.CHECK_MIRROR)
        if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
            return Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, cause=exc)
        return exc

    def http_error(self, error: HfHubHTTPError, repo_id: str, filename: str | None = None,
                   revision: str | None = None) -> DownloadError:
        what = f"'{filename}' of {repo_id}" if filename else f"'{repo_id}'"
        if isinstance(error, GatedRepoError):
            return DownloadError(
                f"The model {repo_id} is gated: accept its conditions on its page at {self.endpoint}, "
                "then set HF_TOKEN to an access token of that account.", "auth")
        if isinstance(error, RevisionNotFoundError):
            return DownloadError(f"{repo_id} has no revision '{revision or '?'}' at {self.endpoint}; check the "
                                 "branch, tag or commit you asked for.", "not_found")
        if isinstance(error, RemoteEntryNotFoundError):
            return DownloadError(f"The file {what} is not on {self.endpoint} (any more).", "not_found")
        if isinstance(error, RepositoryNotFoundError):
            hint = "your access token (HF_TOKEN) cannot read it" if self.authenticated else (
                "a private model also needs an access token in HF_TOKEN")
            return DownloadError(f"The model {repo_id} was not found at {self.endpoint}: check its name; {hint}.",
                                 "not_found")
        response = error.response
        status = response.status_code if response is not None else 0
        if status in (401, 403):
            reason = "rejected the access token in HF_TOKEN" if self.authenticated else "asks for an access token"
            return DownloadError(f"{self.endpoint} {reason} for {what}: set HF_TOKEN to a valid token.", "auth")
        if status == 404:
            return DownloadError(f"{what} was not found at {self.endpoint}.", "not_found")
        answer = f"{status} {response.reason_phrase}" if response is not None else str(error)
        return DownloadError(f"{self.endpoint} answered '{answer}' for {what}.", "http")

    def gave_up(self, exc: Transient, attempts: int) -> DownloadError:
        """The error once retries are spent: no network, hub unreachable or failing, in words a person can act on."""
        host = self.host
        if exc.status is not None:
            return DownloadError(
                f"The model hub at {host} keeps failing ({exc}, {attempts} tries): it may be down or overloaded. "
                "Try again later, or use a mirror (HF_ENDPOINT).", "unreachable")
        if _no_network(exc.cause):
            return DownloadError(
                f"No network connection: cannot look up {host}. Check that this computer is online; "
                "behind a firewall set a proxy (HTTPS_PROXY) or a mirror (HF_ENDPOINT).", "offline")
        if isinstance(exc.cause, httpx2.ProxyError):
            return DownloadError(f"The proxy refused the connection to {host} ({exc.cause}); check HTTPS_PROXY.",
                                 "unreachable")
        return DownloadError(
            f"Cannot reach the model hub at {host} ({exc}, {attempts} tries). Check your connection and proxy "
            "settings, or use a mirror (HF_ENDPOINT).", "unreachable")


def _origin(url: str) -> tuple[str, str]:
    parts = urlparse(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _no_network(exc: BaseException | None) -> bool:
    """Whether a connection failed before reaching any server: no DNS answer, no route."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH):
            return True
        text = str(exc).lower()
        if any(sign in text for sign in ("name or service not known", "nodename nor servname", "getaddrinfo",
                                         "temporary failure in name resolution", "no address associated")):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# ---------------------------------------------------------------------------------------------------------------
# Reading from the network


def read_at_most(chunks: Iterable[bytes], limit: int) -> bytes:
    """The first `limit` bytes of `chunks` (all of them when fewer); nothing after them is read.

    Every body kept in memory is read through here, whatever its Content-Length says or does not say. Ask for one
    byte more than is allowed to tell a body that is too long from one that fits exactly.
    """
    data = bytearray()
    if limit <= 0:
        return b""
    for chunk in chunks:
        data += chunk[: limit - len(data)]
        if len(data) >= limit:
            break
    return bytes(data)


class BodyStream:
    """One GET's body, read by a helper thread so that cancelling never waits on a stalled network.

    The consumer thread does all file writing; the helper only receives. `start` is where the body begins in the
    file: the requested offset, or 0 when the server ignored the Range header.
    """

    def __init__(self, hub: HubConnection, url: str, repo_id: str, filename: str | None = None, start: int = 0,
                 end: int | None = None, revision: str | None = None):
        self._hub = hub
        self._chunks: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        headers = hub.headers_for(url)
        if start or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        threading.Thread(target=self._receive, args=(url, headers), name="xvlm-download", daemon=True).start()
        try:
            self.response: httpx2.Response = self._expect_response()
            self.start = self._body_start(start, repo_id, filename, revision)
        except BaseException:
            self.close()
            raise

    def _receive(self, url: str, headers: dict[str, str]) -> None:
        try:
            with get_session().stream("GET", url, headers=headers, timeout=_TIMEOUT, follow_redirects=True) as answer:
                if answer.status_code >= 300:
                    self._put(("response", bounded_error(answer)))
                    return
                if not self._put(("response", answer)):
                    return
                for chunk in answer.iter_bytes():
                    if not self._put(("data", chunk)):
                        return
            self._put(("end", None))
        except Exception as exc:  # handed over to the consumer, which decides what it means
            self._put(("error", exc))

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._chunks.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _take(self) -> tuple[str, Any]:
        while True:
            self._hub.check_cancel()
            try:
                kind, value = self._chunks.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if kind == "error":
                raise self._hub.transport_error(value)
            return kind, value

    def _expect_response(self) -> httpx2.Response:
        kind, value = self._take()
        assert kind == "response", kind
        return value

    def _body_start(self, requested: int, repo_id: str, filename: str | None, revision: str | None) -> int:
        status = self.response.status_code
        if status in TRANSIENT_STATUS:
            raise Transient(f"HTTP {status} {self.response.reason_phrase}", status=status)
        if status >= 300:  # a redirect that names no address has no body to read, like an error
            raise self._hub.response_error(self.response, repo_id, filename, revision)
        if status != 206:
            return 0
        match = re.match(r"bytes (\d+)-", self.response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != requested:
            raise Transient(f"the server sent another part of {filename} than the one asked for")
        return requested

    def __iter__(self) -> Iterator[bytes]:
        while True:
            kind, value = self._take()
            if kind == "end":
                return
            yield value

    def read(self, limit: int) -> bytes:
        """The body's first `limit` bytes at most."""
        return read_at_most(self, limit)

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> BodyStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def bounded_error(response: httpx2.Response) -> httpx2.Response:
    """An error answer with its body read up to ERROR_BODY_LIMIT: the hub's details fit; an endless one is cut."""
    body = read_at_most(response.iter_bytes(), ERROR_BODY_LIMIT)
    # The body is decoded already: the copy must not claim an encoding or a length it no longer has.
    headers = {key: value for key, value in response.headers.items()
               if key.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
    return httpx2.Response(response.status_code, headers=headers, content=body, request=response.request)
