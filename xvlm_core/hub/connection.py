"""Talking to a model hub: its address and token, huggingface_hub's API with retries and cancel, errors for people.

The address, token, cache folder and offline switch are read from the environment when a download starts;
huggingface_hub reads its own once, at import, which would ignore a mirror or token set later (or by a test).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import httpx2
from huggingface_hub import HfApi
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
from xvlm_core.errors import Cancelled, XvlmError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ENDPOINT = "https://huggingface.co"
POLL_S = 0.1  # how often a waiting download looks at its cancel flag
TIMEOUT_S = 30.0
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class DownloadError(XvlmError):
    """A download that cannot go on; `str()` says what happened and what to do, `kind` lets the UI react."""

    KINDS = ("offline", "unreachable", "not_found", "auth", "disk_full", "permission", "integrity", "cancelled", "http")

    def __init__(self, message: str, kind: str = "http"):
        if kind not in self.KINDS:
            raise ValueError(f"unknown download error kind: {kind}")
        super().__init__(message)
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
        raise DownloadError(f"The hub address '{url}' is not a web address (http:// or https://).", "unreachable")
    return url


def _token() -> str | None:
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if value := os.environ.get(name, "").strip():
            return value
    path = Path(os.path.expanduser(os.environ.get("HF_TOKEN_PATH") or str(_hf_home() / "token")))
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# One download's view of the hub


class HubConnection:
    """Endpoint, token, huggingface_hub's API client and headers, the cancel flag, retries and error wording."""

    def __init__(self, endpoint: str | None, cancel: threading.Event, retry: RetryPolicy):
        self.endpoint = _endpoint(endpoint)
        token = _token()
        self.authenticated = token is not None
        identity = dict(token=token or False, library_name="xvlm-chat", library_version=__version__)
        self.api = HfApi(endpoint=self.endpoint, **identity)
        # For the file transfers, which go around HfApi: exact sizes, and Range requests that mean raw bytes.
        self.headers = {**build_hf_headers(**identity), "Accept-Encoding": "identity"}
        self.cancel = cancel
        self.retry = retry

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
                # `retry_in_s` is for whoever shows the wait (the first-run page): a fact, not the wording.
                log.warning("%s; trying again in %.1f s", exc, delay, extra={"retry_in_s": delay})
                self.pause(delay)

    def call(self, request: Callable[[HfApi], T], repo_id: str, revision: str | None = None) -> T:
        """An HfApi request, retried after transient failures, its errors turned into DownloadErrors."""

        def attempt() -> T:
            try:
                return request(self.api)
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status in TRANSIENT_STATUS:
                    raise Transient(f"HTTP {status}", status=status) from None
                raise self.http_error(exc, repo_id, revision=revision) from None
            except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError, OfflineModeIsEnabled) as exc:
                raise transport_error(exc) from None
            except (ValueError, TypeError, KeyError, AttributeError):
                raise DownloadError(f"{self.endpoint} did not answer like a model hub about {repo_id}. "
                                    "Check the endpoint setting (HF_ENDPOINT).", "http") from None

        return self.retrying(attempt)

    def response_error(self, response: httpx2.Response, repo_id: str, filename: str | None = None) -> DownloadError:
        """The person-readable error for a 4xx answer to one of our own requests."""
        try:
            hf_raise_for_status(response)
        except HfHubHTTPError as exc:
            return self.http_error(exc, repo_id, filename)
        return DownloadError(f"{self.endpoint} answered '{response.status_code} {response.reason_phrase}'.", "http")

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
        host = urlparse(self.endpoint).netloc
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


def transport_error(exc: Exception) -> Exception:
    """What a failed request means: offline mode, a bad address (final), or a network failure worth a retry."""
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError("Offline mode is on (HF_HUB_OFFLINE), so nothing can be downloaded.", "offline")
    if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
        return DownloadError(f"Not a usable hub address: {exc}.", "unreachable")
    if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
        return Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, cause=exc)
    return exc


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
