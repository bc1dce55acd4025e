"""Model downloads and the local hub cache: which files, a resumable download, and what counts as installed.

Everything here is Qt-free and torch-free, so the first-run page can import it without loading torch.

Where files go
    The Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), in its standard
    layout, so models a user already has are found and every other tool finds ours:

        models--<org>--<name>/
            blobs/<etag>                     a finished, verified file (etag: SHA-256 for LFS files, git blob id else)
            blobs/<etag>.incomplete          a partial download, continued later with an HTTP Range request
            blobs/<etag>.incomplete.json     its sidecar: expected size and hash, and `durable_bytes`
            snapshots/<commit>/<filename>    relative symlink to ../../blobs/<etag> (the file itself without symlinks)
            refs/<revision>                  the commit; written only when the repo's files are all in place

    With `local_dir`, the model's files go straight into that folder (partials under `<local_dir>/.cache/xvlm/`)
    while its vision tower still goes to the hub cache, where the loader finds it by its repo id.

Resume
    huggingface_hub throws partial data away, so resuming is done here: a file is appended to `<etag>.incomplete`
    with unbuffered writes, and every 8 MiB (and whenever a download stops: cancel, error, Ctrl+C) the data is
    fsync'ed and `durable_bytes` recorded in the sidecar. A later run keeps exactly `durable_bytes` and asks for the
    rest with `Range: bytes=<durable_bytes>-`, so a killed process or a power cut costs at most the last 8 MiB of a
    file. The SHA-256 (git blob id for small files) is checked before a file is placed; a mismatch deletes it.

Installed
    A model is installed when its snapshot (found through refs/<revision>) holds a config, a tokenizer and whole
    weights, and its vision tower's snapshot holds a config, the image processor config and, unless the model's
    weights embed the tower (`model.vision_tower.vision_tower.*`), whole weights. Refs are written once every file is
    in place and the model's weights come last, so a half-downloaded model never looks usable. These checks never
    touch the network.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import logging
import math
import os
import pickletools
import queue
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlparse

import httpx2
import huggingface_hub
from filelock import FileLock
from filelock import Timeout as LockTimeout
from huggingface_hub import get_session, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import hf_raise_for_status

from xvlm_core import __version__
from xvlm_core.checkpoint import EMBEDDED_TOWER_PREFIX, INDEX_FILES, WEIGHT_FILES
from xvlm_core.errors import Cancelled, CheckpointError, XvlmError
from xvlm_core.safepath import UnsafePathError, path_inside

log = logging.getLogger(__name__)

T = TypeVar("T")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_ETAG = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # a git blob id or a SHA-256: a blob's file name
DEFAULT_ENDPOINT = "https://huggingface.co"
# Mirrors model.EMBEDDED_TOWER_PREFIX; repeated here because model.py imports torch.

_POLL_S = 0.1  # how often a waiting download looks at its cancel flag
_SYNC_EVERY = 8 * 2**20  # bytes between fsyncs of a partial file: what a power cut can cost per file
_SPACE_MARGIN = 200 * 10**6  # free space kept beyond the download, so the disk is not filled to the last byte
_MAX_HEADER = 100 * 2**20  # a larger safetensors header is not a real one
_TIMEOUT = httpx2.Timeout(connect=10.0, read=30.0, write=30.0, pool=10.0)
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_SIDECAR_BYTES = 256  # a sidecar's length beyond its file name: room for every field at its longest


# ---------------------------------------------------------------------------------------------------------------
# Errors


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


# ---------------------------------------------------------------------------------------------------------------
# Registry: what each model needs, as data


@dataclass(frozen=True)
class RepoSpec:
    """One hub repo and the files of it that the app loads."""

    repo_id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    role: str = "model"  # or "vision_tower": its weights are skipped when the model embeds the tower


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user picks it: its checkpoint repo first, then what it needs besides."""

    repo_id: str
    display_name: str
    repos: tuple[RepoSpec, ...]

    @property
    def model_repo(self) -> RepoSpec:
        return next(repo for repo in self.repos if repo.role == "model")

    def with_revision(self, revision: str) -> ModelSpec:
        """The same model at another branch, tag or commit (the vision tower keeps its own)."""
        repos = tuple(replace(repo, revision=revision) if repo.role == "model" else repo for repo in self.repos)
        return replace(self, repos=repos)


# One weight format is fetched: the first of these that the repo has (never the TensorFlow or Flax copies).
WEIGHT_FORMATS: tuple[tuple[str, ...], ...] = (
    ("model*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
)
_WEIGHT_PATTERNS = tuple(pattern for patterns in WEIGHT_FORMATS for pattern in patterns)
MODEL_FILES = (
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "*.model", *_WEIGHT_PATTERNS,
)
TOWER_FILES = ("config.json", "preprocessor_config.json", *_WEIGHT_PATTERNS)
# Towers the app knows by name, so a config naming one by a path from its authors' machine still finds it.
KNOWN_TOWER_REPOS = ("openai/clip-vit-large-patch14-336", "openai/clip-vit-large-patch14")

DEFAULT_MODEL = ModelSpec(
    repo_id="XiaoduoAILab/Xmodel_VLM",
    display_name="Xmodel-VLM",
    repos=(
        RepoSpec("XiaoduoAILab/Xmodel_VLM", allow_patterns=MODEL_FILES),
        RepoSpec("openai/clip-vit-large-patch14-336", allow_patterns=TOWER_FILES, role="vision_tower"),
    ),
)
MODELS: dict[str, ModelSpec] = {DEFAULT_MODEL.repo_id.lower(): DEFAULT_MODEL}


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.startswith((".", "/", "~"))


def model_spec(name: str | None) -> ModelSpec:
    """The registry's entry for `name` (None: the default model); any other repo id gets a generic spec."""
    if name is None:
        return DEFAULT_MODEL
    if name.lower() in MODELS:
        return MODELS[name.lower()]
    if not looks_like_repo_id(name):
        raise DownloadError(f"'{name}' is not a model hub name; expected the form organisation/model.", "not_found")
    # The vision tower is added once the checkpoint's config names it (see _tower_repos).
    return ModelSpec(name, name.split("/")[-1], (RepoSpec(name, allow_patterns=MODEL_FILES),))


def tower_repo_id(name: str) -> str | None:
    """The hub repo of a tower named by a config: a repo id as it is, a path from another machine by its folder."""
    if looks_like_repo_id(name):
        return name
    folder_name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return next((repo for repo in KNOWN_TOWER_REPOS if repo.split("/")[1] == folder_name), None)


# ---------------------------------------------------------------------------------------------------------------
# Settings from the environment, read at call time (huggingface_hub reads its own at import)


def _hf_home() -> Path:
    raw = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(raw)))


def default_cache_dir() -> Path:
    """The hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    raw = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if raw:
        return Path(os.path.expandvars(os.path.expanduser(raw)))
    return _hf_home() / "hub"


def _offline() -> bool:
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


def format_size(size: float) -> str:
    """Bytes for people, in decimal units as the hub shows them: '3.2 GB'."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '2 h 10 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# ---------------------------------------------------------------------------------------------------------------
# Talking to the hub: retries, cancellation, errors for people

@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; a file's count restarts whenever bytes arrive."""

    attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 16.0

    def delay(self, failures: int) -> float:
        return min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1))


RETRY = RetryPolicy()


class _Transient(Exception):
    """A failure worth another try: a dropped connection, a timeout, a 5xx or 429 answer."""

    def __init__(self, detail: str, cause: BaseException | None = None, status: int | None = None):
        super().__init__(detail)
        self.cause = cause
        self.status = status


class _Session:
    """One download's view of the hub: endpoint, auth headers, the cancel flag, retries and error wording."""

    def __init__(self, endpoint: str | None, cancel: threading.Event):
        self.endpoint = _endpoint(endpoint)
        token = _token()
        self.authenticated = token is not None
        # Our own headers: huggingface_hub's would look up a token file and an "agent" list on the default hub,
        # both chosen when it was imported, not by this download's settings.
        self.headers = {
            "User-Agent": f"xvlm-chat/{__version__}; hf_hub/{huggingface_hub.__version__}",
            "Accept-Encoding": "identity",  # exact sizes, and Range requests that mean raw bytes
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.cancel = cancel

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled()

    def pause(self, seconds: float) -> None:
        if self.cancel.wait(seconds):
            raise DownloadCancelled()

    def retrying(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, tried again after transient failures, up to RETRY.attempts times."""
        failures = 0
        while True:
            try:
                return attempt()
            except _Transient as exc:
                failures += 1
                if failures >= RETRY.attempts:
                    raise self.gave_up(exc, failures) from None
                log.warning("%s; trying again in %.1f s", exc, RETRY.delay(failures))
                self.pause(RETRY.delay(failures))

    def file_url(self, repo_id: str, commit: str, filename: str) -> str:
        return hf_hub_url(repo_id, filename, revision=commit, endpoint=self.endpoint)

    def get_json(self, url: str, repo_id: str, revision: str | None = None) -> tuple[Any, str | None]:
        """A JSON answer and the next page's address (Link header), with retries."""

        def attempt() -> tuple[Any, str | None]:
            with _BodyStream(self, url, repo_id, revision=revision) as body:
                raw = b"".join(body)
                next_page = body.response.links.get("next", {}).get("url")
            try:
                return json.loads(raw), next_page
            except ValueError:
                raise DownloadError(
                    f"{self.endpoint} did not answer like a model hub (no JSON at {url}). "
                    "Check the endpoint setting (HF_ENDPOINT).", "http"
                ) from None

        return self.retrying(attempt)

    def read_range(self, url: str, repo_id: str, filename: str, start: int, length: int) -> bytes:
        """`length` bytes of a remote file from `start` on, without fetching the rest."""

        def attempt() -> bytes:
            data = bytearray()
            with _BodyStream(self, url, repo_id, filename, start=start, end=start + length - 1) as body:
                skip = start - body.start  # a server that ignores Range sends the file from its first byte
                for chunk in body:
                    data += chunk
                    if len(data) >= skip + length:
                        break
            return bytes(data[skip : skip + length])

        return self.retrying(attempt)

    def http_error(self, response: httpx2.Response, repo_id: str, filename: str | None = None,
                   revision: str | None = None) -> DownloadError:
        """The person-readable error for a 4xx answer."""
        what = f"'{filename}' of {repo_id}" if filename else f"'{repo_id}'"
        try:
            hf_raise_for_status(response)
        except GatedRepoError:
            return DownloadError(
                f"The model {repo_id} is gated: accept its conditions on its page at {self.endpoint}, "
                "then set HF_TOKEN to an access token of that account.", "auth")
        except RevisionNotFoundError:
            return DownloadError(f"{repo_id} has no revision '{revision or '?'}' at {self.endpoint}; check the "
                                 "branch, tag or commit you asked for.", "not_found")
        except RemoteEntryNotFoundError:
            return DownloadError(f"The file {what} is not on {self.endpoint} (any more).", "not_found")
        except RepositoryNotFoundError:
            hint = "your access token (HF_TOKEN) cannot read it" if self.authenticated else (
                "a private model also needs an access token in HF_TOKEN")
            return DownloadError(f"The model {repo_id} was not found at {self.endpoint}: check its name; {hint}.",
                                 "not_found")
        except HfHubHTTPError:
            pass
        status = response.status_code
        if status in (401, 403):
            reason = "rejected the access token in HF_TOKEN" if self.authenticated else "asks for an access token"
            return DownloadError(f"{self.endpoint} {reason} for {what}: set HF_TOKEN to a valid token.", "auth")
        if status == 404:
            return DownloadError(f"{what} was not found at {self.endpoint}.", "not_found")
        return DownloadError(f"{self.endpoint} answered '{status} {response.reason_phrase}' for {what}.", "http")

    def gave_up(self, exc: _Transient, attempts: int) -> DownloadError:
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


class _BodyStream:
    """One GET's body, read by a helper thread so that cancelling never waits on a stalled network.

    The consumer thread does all file writing; the helper only receives. `start` is where the body begins in the
    file: the requested offset, or 0 when the server ignored the Range header.
    """

    def __init__(self, session: _Session, url: str, repo_id: str, filename: str | None = None,
                 start: int = 0, end: int | None = None, revision: str | None = None):
        self._session = session
        self._chunks: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        headers = dict(session.headers)
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
                    answer.read()  # small error bodies, needed for the hub's error details
                if not self._put(("response", answer)) or answer.status_code >= 300:
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
                self._chunks.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _take(self) -> tuple[str, Any]:
        while True:
            self._session.check_cancel()
            try:
                kind, value = self._chunks.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if kind == "error":
                raise _transport_error(value)
            return kind, value

    def _expect_response(self) -> httpx2.Response:
        kind, value = self._take()
        assert kind == "response", kind
        return value

    def _body_start(self, requested: int, repo_id: str, filename: str | None, revision: str | None) -> int:
        status = self.response.status_code
        if status in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {status} {self.response.reason_phrase}", status=status)
        if status >= 400:
            raise self._session.http_error(self.response, repo_id, filename, revision)
        if status != 206:
            return 0
        match = re.match(r"bytes (\d+)-", self.response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != requested:
            raise _Transient(f"the server sent another part of {filename} than the one asked for")
        return requested

    def __iter__(self) -> Iterator[bytes]:
        while True:
            kind, value = self._take()
            if kind == "end":
                return
            yield value

    def close(self) -> None:
        self._stop.set()

    def __enter__(self) -> _BodyStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _transport_error(exc: Exception) -> Exception:
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError("Offline mode is on (HF_HUB_OFFLINE), so nothing can be downloaded.", "offline")
    if isinstance(exc, (httpx2.UnsupportedProtocol, httpx2.InvalidURL)):
        return DownloadError(f"Not a usable hub address: {exc}.", "unreachable")
    if isinstance(exc, (httpx2.TransportError, httpx2.StreamError)):
        return _Transient(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, cause=exc)
    return exc


# ---------------------------------------------------------------------------------------------------------------
# The plan: which files, how big, how much is already here


@dataclass(frozen=True)
class PlannedFile:
    """One file to fetch, as the hub lists it, and how much of it is already on disk."""

    repo_id: str
    filename: str
    size: int
    sha256: str | None  # LFS files; small files are checked against their git blob id instead
    done_bytes: int  # already in the cache, or kept from an earlier partial download
    revision: str = "main"
    commit: str = ""
    blob_id: str = ""
    role: str = "model"

    @property
    def etag(self) -> str:
        """The name the hub cache gives the file's blob."""
        return self.sha256 or self.blob_id

    @property
    def is_weights(self) -> bool:
        return _matches(self.filename, _WEIGHT_PATTERNS)


@dataclass(frozen=True)
class DownloadPlan:
    """What a download will do, to show before it starts: files, sizes, where they go, the space there."""

    spec: ModelSpec
    files: tuple[PlannedFile, ...]
    total_bytes: int
    missing_bytes: int
    destination: Path
    free_bytes: int
    tower_embedded: bool | None = None  # None: not known before the model's weights are here

    @property
    def needed_bytes(self) -> int:
        """Free space the download needs, with a margin."""
        return self.missing_bytes + _SPACE_MARGIN if self.missing_bytes else 0

    @property
    def enough_space(self) -> bool:
        return self.free_bytes >= self.needed_bytes


@dataclass(frozen=True)
class DownloadProgress:
    """Over all files: bytes on disk of the total, the file being fetched, speed (smoothed) and time left."""

    done_bytes: int
    total_bytes: int
    current_file: str
    speed_bps: float
    eta_s: float | None


def plan_download(spec: ModelSpec, endpoint: str | None = None, cache_dir: Path | None = None,
                  local_dir: Path | None = None) -> DownloadPlan:
    """What `download_model` would fetch: files and sizes from the hub's listing, and what is already here."""
    stores = _Stores(_cache_root(cache_dir), local_dir)
    if _offline():
        return _offline_plan(spec, stores)
    return _plan(_Session(endpoint, threading.Event()), spec, stores)


def _plan(session: _Session, spec: ModelSpec, stores: _Stores) -> DownloadPlan:
    model_repo = spec.model_repo
    model_files = _list_files(session, model_repo, stores.for_role("model"))
    embedded = _tower_embedded(session, model_files, stores.for_role("model"))
    files = list(model_files)
    for tower in _tower_repos(spec, lambda name: _read_small(session, name, model_files, stores.for_role("model"))):
        tower_files = _list_files(session, tower, stores.for_role("vision_tower"))
        files += [file for file in tower_files if not (embedded and file.is_weights)]
    return _make_plan(spec, files, stores, embedded)


def _make_plan(spec: ModelSpec, files: list[PlannedFile], stores: _Stores, embedded: bool | None) -> DownloadPlan:
    total = sum(file.size for file in files)
    missing = total - sum(file.done_bytes for file in files)
    destination = stores.destination
    return DownloadPlan(spec, tuple(files), total, missing, destination, _free_bytes(destination), embedded)


def _list_files(session: _Session, repo: RepoSpec, store: _Store) -> list[PlannedFile]:
    """The repo's files that `repo.allow_patterns` asks for, one weight format only, at the revision's commit."""
    commit = _resolve_commit(session, repo)
    listing = _tree(session, repo.repo_id, commit)
    source = f"the file list of {repo.repo_id} at {session.endpoint}"
    try:
        # Every listed name, wanted or not: a listing that names a file outside its repo is not trusted at all.
        for entry in listing:
            path_inside(store.repo_folder(repo.repo_id, commit), entry.path, source=source)
    except UnsafePathError as exc:
        raise DownloadError(f"{exc} Nothing was downloaded.", "integrity") from None
    wanted = [entry for entry in listing if _matches(entry.path, repo.allow_patterns)]
    files = []
    for entry in _one_weight_format(wanted):
        file = PlannedFile(
            repo_id=repo.repo_id, filename=entry.path, size=entry.size,
            sha256=entry.lfs.sha256 if entry.lfs else None, done_bytes=0, revision=repo.revision,
            commit=commit, blob_id=entry.blob_id, role=repo.role,
        )
        if not _ETAG.match(file.etag):
            raise DownloadError(f"Refused {entry.path!r} from {source}: its checksum {file.etag!r} is not a hash. "
                                "Nothing was downloaded.", "integrity")
        files.append(replace(file, done_bytes=store.done_bytes(file)))
    return files


def _resolve_commit(session: _Session, repo: RepoSpec) -> str:
    url = f"{session.endpoint}/api/models/{repo.repo_id}/revision/{quote(repo.revision, safe='')}"
    info, _ = session.get_json(url, repo.repo_id, repo.revision)
    commit = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise DownloadError(f"{session.endpoint} did not give a commit for {repo.repo_id}; is it a model hub?", "http")
    return commit


def _tree(session: _Session, repo_id: str, commit: str) -> list[RepoFile]:
    url: str | None = f"{session.endpoint}/api/models/{repo_id}/tree/{commit}?recursive=true"
    entries: list[RepoFile] = []
    for _ in range(1000):  # pages of 1000 entries; no model repo comes near this bound
        if url is None:
            return entries
        page, url = session.get_json(url, repo_id)
        try:
            entries += [RepoFile(**item) for item in page if item.get("type") == "file"]
        except (TypeError, KeyError, AttributeError):
            raise DownloadError(f"{session.endpoint} sent a file listing of {repo_id} this app cannot read.",
                                "http") from None
    raise DownloadError(f"The file listing of {repo_id} does not end.", "http")


def _matches(filename: str, patterns: tuple[str, ...]) -> bool:
    """Whether a pattern matches `filename` component by component: `*` never crosses a `/`."""
    parts = filename.split("/")
    return any(
        len(pattern_parts) == len(parts) and all(map(fnmatch.fnmatchcase, parts, pattern_parts))
        for pattern_parts in (pattern.split("/") for pattern in patterns)
    )


def _one_weight_format(entries: list[RepoFile]) -> list[RepoFile]:
    """Everything that is not weights, plus the weights of the first format in WEIGHT_FORMATS that is there."""
    kept = [entry for entry in entries if not _matches(entry.path, _WEIGHT_PATTERNS)]
    for patterns in WEIGHT_FORMATS:
        weights = [entry for entry in entries if _matches(entry.path, patterns)]
        if any(not entry.path.endswith(".json") for entry in weights):
            return kept + weights
    return kept


def _read_small(session: _Session, filename: str, files: list[PlannedFile], store: _Store) -> bytes | None:
    """A small file of the model repo (config, index), from disk when it is complete, else from the hub."""
    file = next((item for item in files if item.filename == filename), None)
    if file is None:
        return None
    if (path := store.complete_path(file)) is not None:
        return path.read_bytes()
    return session.read_range(session.file_url(file.repo_id, file.commit, filename), file.repo_id, filename,
                              0, file.size) if file.size else b""


def _tower_repos(spec: ModelSpec, read: Callable[[str], bytes | None]) -> list[RepoSpec]:
    """The spec's vision towers, or for a generic spec the one its config names (`mm_vision_tower`)."""
    towers = [repo for repo in spec.repos if repo.role == "vision_tower"]
    if towers:
        return towers
    raw = read("config.json")
    try:
        config = json.loads(raw) if raw else {}
    except ValueError:
        return []
    name = (config.get("mm_vision_tower") or config.get("vision_tower")) if isinstance(config, dict) else None
    if not isinstance(name, str) or not name or Path(name).expanduser().is_dir():
        return []  # text-only, or a tower folder that exists on this machine
    repo_id = tower_repo_id(name)
    return [RepoSpec(repo_id, allow_patterns=TOWER_FILES, role="vision_tower")] if repo_id else []


def _tower_embedded(session: _Session, files: list[PlannedFile], store: _Store) -> bool | None:
    """Whether the model's weights hold the vision tower; None when only the whole .bin file could tell."""
    keys = _remote_weight_keys(session, files, store)
    return None if keys is None else any(key.startswith(EMBEDDED_TOWER_PREFIX) for key in keys)


def _remote_weight_keys(session: _Session, files: list[PlannedFile], store: _Store) -> set[str] | None:
    weights = [file for file in files if file.is_weights]
    index = next((file for file in weights if file.filename.endswith(".index.json")), None)
    if index is not None:
        return _index_keys(_read_small(session, index.filename, files, store) or b"{}")
    single = weights[0] if weights else None
    if single is None:
        return set()
    if (path := store.complete_path(single)) is not None:
        return _file_keys(path)
    if not single.filename.endswith(".safetensors"):
        return None
    # Only the header: 8 bytes of length, then that much JSON naming every tensor.
    url = session.file_url(single.repo_id, single.commit, single.filename)
    length = int.from_bytes(session.read_range(url, single.repo_id, single.filename, 0, 8), "little")
    if not 0 < length <= min(_MAX_HEADER, single.size - 8):
        raise DownloadError(f"{single.filename} of {single.repo_id} is not a safetensors file.", "integrity")
    header = session.read_range(url, single.repo_id, single.filename, 8, length)
    try:
        return set(json.loads(header))
    except ValueError:
        raise DownloadError(f"{single.filename} of {single.repo_id} has an unreadable header.", "integrity") from None


# ---------------------------------------------------------------------------------------------------------------
# Reading weights' key names and checking they are whole, without torch


def _safetensors_header(path: Path) -> tuple[int, dict] | None:
    try:
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= _MAX_HEADER:
                return None
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return None
    return (length, header) if isinstance(header, dict) else None


def _safetensors_whole(path: Path) -> bool:
    parsed = _safetensors_header(path)
    if parsed is None:
        return False
    length, header = parsed
    try:
        end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
        return path.stat().st_size == 8 + length + end
    except (OSError, KeyError, TypeError, IndexError):
        return False


def _bin_keys(path: Path) -> set[str] | None:
    """String constants of a zip-format .bin's pickle, read with pickletools: nothing from the file is run."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((item for item in archive.namelist() if item.endswith("data.pkl")), None)
            if name is None:
                return None
            data = archive.read(name)
        return {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None  # the legacy non-zip format: unknown


def _index_keys(raw: bytes) -> set[str]:
    try:
        weight_map = json.loads(raw).get("weight_map", {})
        return set(weight_map) if isinstance(weight_map, dict) else set()
    except (ValueError, AttributeError):
        return set()


def _file_keys(path: Path) -> set[str] | None:
    if path.name.endswith(".index.json"):
        try:
            return _index_keys(path.read_bytes())
        except OSError:
            return None
    if path.suffix == ".safetensors":
        parsed = _safetensors_header(path)
        return set(parsed[1]) if parsed else None
    return _bin_keys(path)


def _local_weight_files(folder: Path) -> list[Path]:
    for name in (*INDEX_FILES, *WEIGHT_FILES):
        if (folder / name).is_file():
            return [folder / name]
    return []


def embeds_tower(folder: Path) -> bool:
    """Whether the checkpoint in `folder` carries the vision tower's weights."""
    files = _local_weight_files(folder)
    keys = _file_keys(files[0]) if files else None
    return bool(keys) and any(key.startswith(EMBEDDED_TOWER_PREFIX) for key in keys or ())


def _weights_problem(folder: Path) -> str | None:
    """What is wrong with a folder's weights (a file named), or None when they are all there and whole."""
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index_name} is not a valid shard index"
            for shard in shards:
                try:
                    path = path_inside(folder, shard, source=index_name)
                except UnsafePathError as exc:
                    return str(exc).rstrip(".")
                problem = _weight_file_problem(path)
                if problem:
                    return f"{problem} (named in {index_name})"
            return None
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return _weight_file_problem(folder / name)
    return "the weights file (model.safetensors or pytorch_model.bin) is missing"


def _weight_file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    whole = _safetensors_whole(path) if path.suffix == ".safetensors" else (
        zipfile.is_zipfile(path) or path.stat().st_size > 0)
    return None if whole else f"{path.name} is incomplete or damaged"


def _read_config(folder: Path) -> tuple[dict | None, str | None]:
    path = folder / "config.json"
    if not path.is_file():
        return None, "config.json is missing"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"config.json cannot be read ({exc})"
    return (config, None) if isinstance(config, dict) else (None, "config.json is not a JSON object")


def _model_problem(folder: Path) -> str | None:
    """What a checkpoint folder lacks to be loaded (config, tokenizer, whole weights), or None."""
    _, problem = _read_config(folder)
    if problem:
        return problem
    if not any(path.is_file() for path in folder.glob("*.model")):
        return "the tokenizer file (tokenizer.model or *.model) is missing"
    return _weights_problem(folder)


def _tower_problem(folder: Path, need_weights: bool) -> str | None:
    """What a vision tower folder lacks: its config, image processor config, and weights unless embedded."""
    _, problem = _read_config(folder)
    if problem:
        return problem
    if not (folder / "preprocessor_config.json").is_file():
        return "preprocessor_config.json is missing"
    return _weights_problem(folder) if need_weights else None


def _is_tower_config(config: dict) -> bool:
    return config.get("model_type") in ("clip", "clip_vision_model")


# ---------------------------------------------------------------------------------------------------------------
# Where files go: the hub cache, or a plain folder


class _Store:
    """Where a repo's files are kept; subclasses say where finished and partial files live."""

    root: Path

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        """The folder a repo's files go into at `commit`; no file name may lead out of it."""
        raise NotImplementedError

    def final_path(self, file: PlannedFile) -> Path:
        return path_inside(self.repo_folder(file.repo_id, file.commit), file.filename,
                           source=f"the file list of {file.repo_id}")

    def partial_path(self, file: PlannedFile) -> Path:
        raise NotImplementedError

    def lock_path(self, file: PlannedFile) -> Path:
        raise NotImplementedError

    def complete_path(self, file: PlannedFile) -> Path | None:
        """Where the finished file can be read, or None when it is not (completely) here."""
        raise NotImplementedError

    def is_complete(self, file: PlannedFile) -> bool:
        return self.complete_path(file) is not None

    def place(self, file: PlannedFile, partial: Path) -> None:
        raise NotImplementedError

    def adopt(self, file: PlannedFile) -> None:
        """Make a file that `is_complete` found usable under its name (nothing to do for most stores)."""

    def finish_repo(self, repo_id: str, revision: str, commit: str) -> None:
        """Called once every file of the repo is in place."""

    def done_bytes(self, file: PlannedFile) -> int:
        if self.is_complete(file):
            return file.size
        return _PartialFile.kept_bytes(self.partial_path(file), file)


class _CacheStore(_Store):
    def __init__(self, root: Path):
        self.root = root

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / ("models--" + repo_id.replace("/", "--"))

    def blob_path(self, file: PlannedFile) -> Path:
        return path_inside(self.repo_dir(file.repo_id) / "blobs", file.etag, source=f"the file list of {file.repo_id}")

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def partial_path(self, file: PlannedFile) -> Path:
        return self.blob_path(file).with_name(file.etag + ".incomplete")

    def lock_path(self, file: PlannedFile) -> Path:
        # The lock huggingface_hub takes for the same blob, so the two never write it at once.
        return self.root / ".locks" / self.repo_dir(file.repo_id).name / f"{file.etag}.lock"

    def complete_path(self, file: PlannedFile) -> Path | None:
        if self.final_path(file).is_file():
            return self.final_path(file)
        blob = self.blob_path(file)  # maybe there already for another revision
        return blob if blob.is_file() and blob.stat().st_size == file.size else None

    def adopt(self, file: PlannedFile) -> None:
        if not self.final_path(file).is_file():
            _link(self.blob_path(file), self.final_path(file))

    def place(self, file: PlannedFile, partial: Path) -> None:
        blob = self.blob_path(file)
        os.replace(partial, blob)
        _link(blob, self.final_path(file))

    def finish_repo(self, repo_id: str, revision: str, commit: str) -> None:
        if revision == commit:
            return
        ref = path_inside(self.repo_dir(repo_id) / "refs", revision, source="the revision asked for")
        ref.parent.mkdir(parents=True, exist_ok=True)
        _write_durably(ref, commit.encode())

    def snapshot(self, repo_id: str, revision: str) -> Path | None:
        """The snapshot folder a revision points to (through refs/), if there is one; no completeness check."""
        repo_dir = self.repo_dir(repo_id)
        commit = revision
        try:
            if not _COMMIT.match(revision):
                ref = path_inside(repo_dir / "refs", revision, source="the revision asked for")
                commit = ref.read_text(encoding="utf-8").strip()
            folder = path_inside(repo_dir / "snapshots", commit, source=f"the ref {revision} of {repo_id}")
        except (OSError, UnsafePathError):
            return None
        return folder if folder.is_dir() else None


def _link(blob: Path, pointer: Path) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<etag>, or the file itself where symlinks are unavailable."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:
        shutil.copyfile(blob, pointer)  # Windows without developer mode: a copy (the blob may be shared)


class _FolderStore(_Store):
    """A plain folder the user chose; a small record per file says which version of it is there."""

    def __init__(self, root: Path):
        self.root = root

    def _work(self, file: PlannedFile) -> Path:
        return path_inside(self.root / ".cache" / "xvlm", file.filename, source=f"the file list of {file.repo_id}")

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        return self.root

    def partial_path(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".incomplete")

    def lock_path(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".lock")

    def _record(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".json")

    def complete_path(self, file: PlannedFile) -> Path | None:
        final = self.final_path(file)
        try:
            record = json.loads(self._record(file).read_text(encoding="utf-8"))
            return final if final.stat().st_size == file.size and record.get("etag") == file.etag else None
        except (OSError, ValueError, AttributeError):
            return None

    def place(self, file: PlannedFile, partial: Path) -> None:
        final = self.final_path(file)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        _write_durably(self._record(file), json.dumps({"etag": file.etag, "commit": file.commit}).encode())


class _Stores:
    """The cache, and the user's folder for the model when one was given."""

    def __init__(self, cache_root: Path, local_dir: Path | None = None):
        self.cache = _CacheStore(cache_root)
        self.folder = _FolderStore(Path(local_dir).expanduser()) if local_dir else None

    def for_role(self, role: str) -> _Store:
        return self.folder if self.folder is not None and role == "model" else self.cache

    @property
    def destination(self) -> Path:
        return self.folder.root if self.folder else self.cache.root


def _cache_root(cache_dir: Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def _free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path`, which may not exist yet."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Partial files


class _PartialFile:
    """A file being downloaded: unbuffered appends (the byte count is exact) and a sidecar saying what is durable."""

    def __init__(self, path: Path, file: PlannedFile, check_cancel: Callable[[], None]):
        self.path = path
        self.file = file
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = self.kept_bytes(path, file)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0), 0o644)
        try:
            os.ftruncate(self._fd, kept)  # drop what a crash may have left unsynced
            self.size = self.durable = kept
            self._hash = _new_hash(file)
            self._rehash(check_cancel)
            self._write_sidecar()
        except BaseException:
            os.close(self._fd)
            raise

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    @classmethod
    def kept_bytes(cls, path: Path, file: PlannedFile) -> int:
        """How much of an earlier partial can be trusted: what its sidecar recorded as synced to disk."""
        try:
            record = json.loads(cls.sidecar(path).read_text(encoding="utf-8"))
            if record.get("size") != file.size or record.get("etag") != file.etag:
                return 0
            return max(0, min(int(record["durable_bytes"]), path.stat().st_size, file.size))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return 0

    def _rehash(self, check_cancel: Callable[[], None]) -> None:
        with self.path.open("rb") as handle:
            remaining = self.size
            while remaining:
                check_cancel()
                block = handle.read(min(remaining, 4 * 2**20))
                if not block:
                    raise OSError(errno.EIO, "the partial file shrank while it was read", str(self.path))
                self._hash.update(block)
                remaining -= len(block)

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            self._hash.update(view[:written])
            self.size += written
            view = view[written:]
        if self.size - self.durable >= _SYNC_EVERY:
            self.sync()

    def restart(self) -> None:
        """Start again from byte 0 (the server ignored the Range header)."""
        os.ftruncate(self._fd, 0)
        self.size = self.durable = 0
        self._hash = _new_hash(self.file)
        self._write_sidecar()

    def sync(self) -> None:
        os.fsync(self._fd)
        self.durable = self.size
        self._write_sidecar()

    def _write_sidecar(self) -> None:
        record = {"repo_id": self.file.repo_id, "filename": self.file.filename, "size": self.file.size,
                  "etag": self.file.etag, "durable_bytes": self.durable}
        # Padded to one length per file, so that a full disk can still take it in place (see _write_durably).
        data = json.dumps(record).encode().ljust(_SIDECAR_BYTES + len(self.file.filename.encode()))
        _write_durably(self.sidecar(self.path), data, in_place_if_full=True)

    def close(self) -> None:
        """Record what is on disk (best effort: a full disk may refuse even the sidecar) and close."""
        try:
            self.sync()
        except OSError as exc:
            log.warning("could not record the state of %s: %s", self.path, exc)
        finally:
            os.close(self._fd)

    def digest_matches(self) -> bool:
        expected = self.file.sha256 or self.file.blob_id
        return not expected or self._hash.hexdigest() == expected.lower()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.sidecar(self.path).unlink(missing_ok=True)


def _write_durably(path: Path, data: bytes, in_place_if_full: bool = False) -> None:
    """Replace `path` with `data`, synced to disk; a failure leaves the old file and no temporary one.

    `in_place_if_full`: when the disk has no room for a new file, overwrite the old one of the same length instead,
    which needs no new space (its blocks exist); a record smaller than a disk sector is written whole or not at all.
    """
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if not (in_place_if_full and exc.errno in _DISK_FULL and _overwrite(path, data)):
            raise
    _sync_folder(path.parent)


def _overwrite(path: Path, data: bytes) -> bool:
    """Write `data` over a file of exactly its length and sync it; False when there is no such file."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != len(data):
            return False
        _write_all(fd, data)
        os.fsync(fd)
        return True
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; Windows has no folder handles to sync)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_hash(file: PlannedFile) -> Any:
    if file.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1()  # a git blob id: sha1 of "blob <size>\0" and the content
    digest.update(f"blob {file.size}\0".encode())
    return digest


# ---------------------------------------------------------------------------------------------------------------
# Progress


class _Meter:
    """Byte counts -> DownloadProgress events: speed smoothed over a few seconds, at most 20 events a second."""

    INTERVAL_S = 0.05
    SMOOTHING_S = 3.0
    WARMUP_S = 2.0  # no ETA before: the first seconds are small files and round trips, far slower than the rest

    def __init__(self, total: int, done: int, on_progress: Callable[[DownloadProgress], None],
                 clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = done
        self.current = ""
        self._on_progress = on_progress
        self._clock = clock
        self._speed = self._average = self._weight = 0.0
        self._window = 0  # network bytes since the last speed sample
        self._started = self._sampled_at = self._emitted_at = clock()
        self._emit()

    def received(self, size: int, current: str) -> None:
        self.done += size
        self._window += size
        self.current = current
        if self._clock() - self._emitted_at >= self.INTERVAL_S:
            self._emit()

    def adjust(self, done_delta: int = 0, total_delta: int = 0) -> None:
        """Bytes that appeared or vanished without the network: discarded partials, skipped files."""
        self.done += done_delta
        self.total += total_delta

    def finish(self) -> None:
        self._emit()

    def _emit(self) -> None:
        now = self._clock()
        elapsed = now - self._sampled_at
        if elapsed > 0 and (self._window or elapsed >= self.INTERVAL_S):
            # An exponential average with its start-up bias divided out: the plain average over the first seconds,
            # then one that forgets the past within about SMOOTHING_S.
            weight = 1 - math.exp(-elapsed / self.SMOOTHING_S)
            self._average += weight * (self._window / elapsed - self._average)
            self._weight += weight * (1 - self._weight)
            self._speed = self._average / self._weight
            self._window, self._sampled_at = 0, now
        self._emitted_at = now
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            eta: float | None = 0.0
        elif self._speed > 0 and now - self._started >= self.WARMUP_S:
            eta = remaining / self._speed
        else:
            eta = None
        self._on_progress(DownloadProgress(self.done, self.total, self.current, self._speed, eta))


# ---------------------------------------------------------------------------------------------------------------
# Downloading


def _ignore_progress(progress: DownloadProgress) -> None:
    pass


def download_model(
    spec: ModelSpec,
    on_progress: Callable[[DownloadProgress], None] = _ignore_progress,
    cancel: threading.Event | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    plan: DownloadPlan | None = None,
) -> Path:
    """Fetch what `spec` needs (resuming earlier partial downloads) and return the model's folder.

    Blocking; call it from a worker thread. `on_progress` is called from that thread. Setting `cancel` stops it
    within a second with DownloadError(kind="cancelled"). `plan` (from plan_download) saves listing the hub twice.
    """
    stores = _Stores(_cache_root(cache_dir), local_dir)
    if _offline():
        return _offline_folder(spec, stores)
    session = _Session(endpoint, cancel or threading.Event())
    try:
        plan = plan or _plan(session, spec, stores)
    except DownloadError as error:
        folder = _installed_folder(spec, stores) if error.kind in ("offline", "unreachable") else None
        if folder is None:
            raise
        log.warning("%s Using the copy already downloaded.", error)
        return folder
    _check_space(plan)
    meter = _Meter(plan.total_bytes, plan.total_bytes - plan.missing_bytes, on_progress)
    try:
        _fetch_all(session, plan, stores, meter)
    except OSError as exc:
        raise _os_error(exc, plan.destination, meter.total - meter.done) from None
    meter.finish()
    folder = _installed_folder(spec, stores)
    if folder is None:
        raise DownloadError(f"{spec.display_name} was downloaded but is not complete: "
                            f"{_missing_description(spec, stores)}.", "integrity")
    return folder


def _check_space(plan: DownloadPlan) -> None:
    if not plan.enough_space:
        raise DownloadError(
            f"Not enough disk space: {plan.spec.display_name} needs {format_size(plan.needed_bytes)} more in "
            f"{plan.destination} ({format_size(plan.free_bytes)} free). Free up space or choose another folder.",
            "disk_full")


def _fetch_all(session: _Session, plan: DownloadPlan, stores: _Stores, meter: _Meter) -> None:
    embedded = plan.tower_embedded
    for file in _download_order(plan.files, embedded):
        if embedded is None and file.role == "vision_tower" and file.is_weights:
            embedded = embeds_tower(stores.for_role("model").final_path(_model_weights(plan.files)).parent)
        if embedded and file.role == "vision_tower" and file.is_weights:
            meter.adjust(-file.done_bytes, -file.size)  # the model carries the tower: not needed after all
            continue
        _fetch_file(session, stores.for_role(file.role), file, meter)
    # Refs only now: until every file is in place, no revision points at the new snapshots.
    repos = {(file.repo_id, file.revision, file.commit, file.role) for file in plan.files}
    for repo_id, revision, commit, role in repos:
        stores.for_role(role).finish_repo(repo_id, revision, commit)


def _model_weights(files: tuple[PlannedFile, ...]) -> PlannedFile:
    return next(file for file in files if file.role == "model" and file.is_weights)


def _download_order(files: tuple[PlannedFile, ...], embedded: bool | None) -> list[PlannedFile]:
    """Small files first, the model's weights last (so it completes last), unless they decide the tower's."""

    def rank(file: PlannedFile) -> tuple[int, int]:
        if not file.is_weights:
            return (0, 0)
        model_first = embedded is None
        return (1, 0 if (file.role == "model") == model_first else 1)

    return sorted(files, key=rank)


def _fetch_file(session: _Session, store: _Store, file: PlannedFile, meter: _Meter) -> None:
    """One file into the store: resumed, retried, verified, placed."""
    with _file_lock(store.lock_path(file), session):
        if store.is_complete(file):
            store.adopt(file)
            meter.adjust(file.size - file.done_bytes)
            return
        partial = _PartialFile(store.partial_path(file), file, session.check_cancel)
        meter.adjust(partial.size - file.done_bytes)
        try:
            _transfer(session, file, partial, meter)
        finally:
            partial.close()
        if not partial.digest_matches():
            partial.remove()
            meter.adjust(-file.size)
            raise DownloadError(
                f"{file.filename} of {file.repo_id} arrived damaged (its checksum does not match the hub's), "
                "so it was deleted. Download again; if this repeats, a proxy or mirror may be altering files.",
                "integrity")
        store.place(file, partial.path)
        _PartialFile.sidecar(partial.path).unlink(missing_ok=True)


def _transfer(session: _Session, file: PlannedFile, partial: _PartialFile, meter: _Meter) -> None:
    """Append the rest of `file` to `partial`; a dropped connection continues where it stopped."""
    url = session.file_url(file.repo_id, file.commit, file.filename)
    label = f"{file.repo_id}/{file.filename}"
    failures = 0
    while partial.size < file.size:
        before = partial.size
        try:
            with _BodyStream(session, url, file.repo_id, file.filename, start=partial.size) as body:
                if body.start != partial.size:
                    meter.adjust(-partial.size)
                    partial.restart()
                for chunk in body:
                    if partial.size + len(chunk) > file.size:
                        raise _Transient(f"the server sent more of {file.filename} than its listed size")
                    partial.append(chunk)
                    meter.received(len(chunk), label)
            if partial.size < file.size:
                raise _Transient(f"the connection closed early in {file.filename}")
        except _Transient as exc:
            failures = 1 if partial.size > before else failures + 1
            if failures >= RETRY.attempts:
                raise session.gave_up(exc, failures) from None
            log.warning("%s at %s of %s; continuing in %.1f s", exc, format_size(partial.size),
                        format_size(file.size), RETRY.delay(failures))
            partial.sync()
            session.pause(RETRY.delay(failures))


@contextmanager
def _file_lock(path: Path, session: _Session) -> Iterator[None]:
    """Another download of the same file (another window, `hf download`) finishes before this one starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    while True:
        session.check_cancel()
        try:
            lock.acquire(timeout=_POLL_S)
            break
        except LockTimeout:
            continue
    try:
        yield
    finally:
        lock.release()


def _os_error(exc: OSError, destination: Path, remaining: int) -> Exception:
    where = exc.filename or destination
    if exc.errno in _DISK_FULL:
        return DownloadError(
            f"The disk is full: writing to {where} failed ({format_size(_free_bytes(destination))} free). "
            f"Free up at least {format_size(remaining + _SPACE_MARGIN)} and download again; "
            "what was already downloaded is kept.", "disk_full")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(
            f"Cannot write to {where}: permission denied. Choose a folder you can write to "
            "(HF_HUB_CACHE, or a local folder) or fix its permissions.", "permission")
    return exc


# ---------------------------------------------------------------------------------------------------------------
# What is installed (no network)


def installed_model_folder(spec: ModelSpec, cache_dir: Path | None = None) -> Path | None:
    """The model's snapshot folder when it and its vision tower are complete in the cache, else None."""
    return _installed_folder(spec, _Stores(_cache_root(cache_dir)))


def _installed_folder(spec: ModelSpec, stores: _Stores) -> Path | None:
    return None if _missing_description(spec, stores) else _model_folder(spec, stores)


def _model_folder(spec: ModelSpec, stores: _Stores) -> Path | None:
    if stores.folder is not None:
        return stores.folder.root if stores.folder.root.is_dir() else None
    return stores.cache.snapshot(spec.model_repo.repo_id, spec.model_repo.revision)


def _missing_description(spec: ModelSpec, stores: _Stores) -> str | None:
    """What keeps the model from being usable offline (a file or folder named), or None."""
    folder = _model_folder(spec, stores)
    if folder is None:
        return f"{spec.model_repo.repo_id} is not downloaded"
    problem = _model_problem(folder)
    if problem:
        return f"{spec.model_repo.repo_id}: {problem}"
    need_weights = not embeds_tower(folder)
    for tower in _tower_repos(spec, lambda name: _read_local(folder / name)):
        tower_folder = stores.cache.snapshot(tower.repo_id, tower.revision)
        if tower_folder is None:
            return f"the vision tower {tower.repo_id} is not downloaded"
        problem = _tower_problem(tower_folder, need_weights)
        if problem:
            return f"{tower.repo_id}: {problem}"
    return None


def _read_local(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def find_cached(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id` when it is complete in the local hub cache, else None; no network."""
    folder = _CacheStore(default_cache_dir()).snapshot(repo_id, revision or "main")
    if folder is None:
        return None
    config, problem = _read_config(folder)
    if config is not None and _is_tower_config(config):
        # A tower's weights may live in the checkpoint instead; the loader says so if they are missing.
        problem = _tower_problem(folder, need_weights=False)
    else:
        problem = problem or _model_problem(folder)
    return None if problem else folder


def _offline_folder(spec: ModelSpec, stores: _Stores) -> Path:
    missing = _missing_description(spec, stores)
    if missing is None:
        folder = _model_folder(spec, stores)
        assert folder is not None
        return folder
    raise DownloadError(
        f"Offline mode is on (HF_HUB_OFFLINE) and {spec.display_name} is not completely downloaded ({missing}). "
        "Turn offline mode off to download it, or choose a folder that holds the model.", "offline")


def _offline_plan(spec: ModelSpec, stores: _Stores) -> DownloadPlan:
    """Offline: a plan of what is already on disk, or the error saying what is not."""
    model_folder = _offline_folder(spec, stores)
    folders = [(spec.model_repo, model_folder)]
    for tower in _tower_repos(spec, lambda name: _read_local(model_folder / name)):
        snapshot = stores.cache.snapshot(tower.repo_id, tower.revision)
        folders += [(tower, snapshot)] if snapshot else []
    files = [
        PlannedFile(repo_id=repo.repo_id, filename=path.relative_to(folder).as_posix(), size=path.stat().st_size,
                    sha256=None, done_bytes=path.stat().st_size, revision=repo.revision, role=repo.role)
        for repo, folder in folders for path in sorted(folder.rglob("*"))
        if path.is_file() and ".cache" not in path.relative_to(folder).parts
    ]
    return _make_plan(spec, files, stores, embeds_tower(model_folder))


# ---------------------------------------------------------------------------------------------------------------
# A model folder copied by hand


def validate_local_folder(folder: Path, vision_tower: str | None = None) -> None:
    """Check that `folder` holds a usable model and that its vision tower is found or embedded.

    Raises CheckpointError naming the first missing or broken file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder.")
    problem = _model_problem(folder)
    if problem:
        raise CheckpointError(f"{folder}: {problem}.")
    config, _ = _read_config(folder)
    name = vision_tower or (config or {}).get("mm_vision_tower")
    if not name:
        return  # a text-only checkpoint
    if vision_tower is None and embeds_tower(folder):
        return  # the loader takes the tower's weights from the checkpoint
    tower_folder = _find_tower_folder(name)
    if tower_folder is None:
        raise CheckpointError(
            f"{folder}: the vision tower '{name}' was not found (it is not in the checkpoint, not a folder here, "
            "and not downloaded). Download it, or give its folder.")
    problem = _tower_problem(tower_folder, need_weights=not embeds_tower(folder))
    if problem:
        raise CheckpointError(f"{tower_folder} (vision tower): {problem}.")


def _find_tower_folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    repo_id = tower_repo_id(name)
    if repo_id is None:
        return None
    return _CacheStore(default_cache_dir()).snapshot(repo_id, "main")

