"""The resumable transfer of one file: what huggingface_hub lacks (it throws partial data away).

A file is appended to its partial file with unbuffered writes, and every 8 MiB (and whenever a transfer stops:
cancel, error, Ctrl+C) the data is fsync'ed and `durable_bytes` recorded in a sidecar, itself synced. A later run
keeps exactly `durable_bytes` and asks for the rest with `Range: bytes=<durable_bytes>-`, so a killed process or a
power cut costs at most the last 8 MiB of a file. The SHA-256 (git blob id for small files) is checked before a
file is placed; a mismatch deletes it. The network is read by connection.BodyStream, so cancel never waits on it,
and never past the file's listed size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock
from filelock import Timeout as LockTimeout
from huggingface_hub import hf_hub_url

from xvlm_core.errors import XvlmError
from xvlm_core.hub.connection import POLL_S, BodyStream, DownloadError, HubConnection, Transient
from xvlm_core.hub.progress import Meter, format_size
from xvlm_core.hub.registry import is_weights
from xvlm_core.local_files import read_regular_file

log = logging.getLogger(__name__)

SYNC_EVERY = 8 * 2**20  # bytes between fsyncs of a partial file: what a power cut can cost per file
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
SMALL_FILE_LIMIT = 16 * 2**20  # configs, shard indexes: far smaller in every real checkpoint
_SIDECAR_BYTES = 256  # a sidecar's length beyond its file name: room for every field at its longest
SIDECAR_LIMIT = 64 * 2**10  # beyond any sidecar written here, however long (and escaped) its file name


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
        return is_weights(self.filename)


# ---------------------------------------------------------------------------------------------------------------
# Reading from the network


def file_url(hub: HubConnection, file: PlannedFile) -> str:
    return hf_hub_url(file.repo_id, file.filename, revision=file.commit, endpoint=hub.endpoint)


def read_prefix(hub: HubConnection, file: PlannedFile, length: int) -> bytes:
    """The first `length` bytes of a file (all of it when shorter), with retries; nothing is written.

    Reading stops at `length` whatever the server sends: a mirror that ignores Range, or lies about a size,
    cannot make this hold more than `length` bytes.
    """

    def attempt() -> bytes:
        with BodyStream(hub, file_url(hub, file), file.repo_id, file.filename, end=length - 1) as body:
            return body.read(length)

    return hub.retrying(attempt) if length > 0 else b""


def read_whole(hub: HubConnection, file: PlannedFile) -> bytes:
    """A small file's bytes (a config, an index), at most SMALL_FILE_LIMIT; nothing is written."""
    if file.size > SMALL_FILE_LIMIT:
        raise DownloadError(f"{file.filename} of {file.repo_id} is listed at {file.size} bytes; a file of its kind "
                            f"is never larger than {SMALL_FILE_LIMIT} bytes, so it was not read.", "integrity")
    data = read_prefix(hub, file, file.size + 1)
    if len(data) != file.size:
        raise DownloadError(f"{file.filename} of {file.repo_id}: the hub sent {len(data)} bytes where its file "
                            f"list says {file.size}.", "integrity")
    return data


# ---------------------------------------------------------------------------------------------------------------
# Writing to disk


def write_durably(path: Path, data: bytes, in_place_if_full: bool = False) -> None:
    """Replace `path` with `data`, synced to disk; a failure leaves the old file and no temporary one.

    `in_place_if_full`: when the disk has no room for a new file, overwrite the old one of the same length instead,
    which needs no new space (its blocks exist); a record smaller than a disk sector is written whole or not at all.
    """
    # A temporary name of this writer's own: two downloads recording one revision at once (two windows, two
    # threads) each rename their own copy, whole, instead of one renaming away the file the other still writes.
    temporary = path.with_name(f"{path.name}.{uuid.uuid4().hex[:16]}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if not (in_place_if_full and exc.errno in DISK_FULL and _overwrite(path, data)):
            raise
    _sync_folder(path.parent)


def _overwrite(path: Path, data: bytes) -> bool:
    """Write `data` over a regular file of exactly its length and sync it; False when there is no such file."""
    try:
        # O_NONBLOCK: a FIFO put in its place must not wait for a reader.
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size != len(data):
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


class PartialFile:
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
            record = json.loads(read_regular_file(cls.sidecar(path), SIDECAR_LIMIT))
            if record.get("size") != file.size or record.get("etag") != file.etag:
                return 0
            return max(0, min(int(record["durable_bytes"]), path.stat().st_size, file.size))
        except (XvlmError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return 0  # no sidecar we wrote: the file starts again from its first byte

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
        if self.size - self.durable >= SYNC_EVERY:
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
        # Padded to one length per file, so that a full disk can still take it in place (see write_durably).
        data = json.dumps(record).encode().ljust(_SIDECAR_BYTES + len(self.file.filename.encode()))
        write_durably(self.sidecar(self.path), data, in_place_if_full=True)

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


def _new_hash(file: PlannedFile) -> Any:
    if file.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1()  # a git blob id: sha1 of "blob <size>\0" and the content
    digest.update(f"blob {file.size}\0".encode())
    return digest


# ---------------------------------------------------------------------------------------------------------------
# One file, from the network into its store


class Destination(Protocol):
    """Where a fetched file goes (xvlm_core.hub.stores): the transfer needs only these, so it imports no store."""

    def lock_path(self, file: PlannedFile) -> Path: ...
    def partial_path(self, file: PlannedFile) -> Path: ...
    def is_complete(self, file: PlannedFile) -> bool: ...
    def adopt(self, file: PlannedFile) -> None: ...
    def place(self, file: PlannedFile, partial: Path) -> None: ...


def fetch_file(hub: HubConnection, store: Destination, file: PlannedFile, meter: Meter) -> None:
    """One file into the store: resumed, retried, verified, placed."""
    with _file_lock(store.lock_path(file), hub):
        if store.is_complete(file):
            store.adopt(file)
            meter.adjust(file.size - file.done_bytes)
            return
        partial = PartialFile(store.partial_path(file), file, hub.check_cancel)
        meter.adjust(partial.size - file.done_bytes)
        try:
            _transfer(hub, file, partial, meter)
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
        PartialFile.sidecar(partial.path).unlink(missing_ok=True)


def _transfer(hub: HubConnection, file: PlannedFile, partial: PartialFile, meter: Meter) -> None:
    """Append the rest of `file` to `partial`; a dropped connection continues where it stopped."""
    url = file_url(hub, file)
    label = f"{file.repo_id}/{file.filename}"
    failures = 0
    while partial.size < file.size:
        before = partial.size
        try:
            with BodyStream(hub, url, file.repo_id, file.filename, start=partial.size) as body:
                if body.start != partial.size:
                    meter.adjust(-partial.size)
                    partial.restart()
                for chunk in body:
                    if partial.size + len(chunk) > file.size:
                        raise Transient(f"the server sent more of {file.filename} than its listed size")
                    partial.append(chunk)
                    meter.received(len(chunk), label)
            if partial.size < file.size:
                raise Transient(f"the connection closed early in {file.filename}")
        except Transient as exc:
            failures = 1 if partial.size > before else failures + 1
            if failures >= hub.retry.attempts:
                raise hub.gave_up(exc, failures) from None
            log.warning("%s at %s of %s; continuing in %.1f s", exc, format_size(partial.size),
                        format_size(file.size), hub.retry.delay(failures))
            partial.sync()
            hub.on_retry(hub.retry.delay(failures))
            hub.pause(hub.retry.delay(failures))


@contextmanager
def _file_lock(path: Path, hub: HubConnection) -> Iterator[None]:
    """Another download of the same file (another window, `hf download`) finishes before this one starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    while True:
        hub.check_cancel()
        try:
            lock.acquire(timeout=POLL_S)
            break
        except LockTimeout:
            continue
    try:
        yield
    finally:
        lock.release()
