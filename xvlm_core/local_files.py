"""Reading a file from the local disk that may not be what its name says. Standard library only: safe anywhere.

A configuration, a tokenizer or a settings file can be a FIFO (opening it waits for a writer that never comes),
a device (`/dev/zero` never ends), a folder, or a sparse file that claims a gigabyte. Every such file is read
here: it must be a regular file, and at most `limit` bytes of it are read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from xvlm_core.errors import XvlmError

# Configs, shard indexes and settings are a few kilobytes; a larger one is not read into memory.
MAX_CONFIG_BYTES = 4 * 2**20
# O_NONBLOCK: should the path have become a FIFO since it was checked, opening it must not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def regular_file_info(path: Path, limit: int | None, error: type[XvlmError] = XvlmError,
                      what: str = "a file") -> os.stat_result:
    """The file's stat, once it is known to be a regular file of at most `limit` bytes; nothing is opened.

    Otherwise raises `error` with a sentence naming the file; `what` is what the file should be ("an image").
    `limit` None: any size, for files that are memory-mapped or read in pieces (weights).
    """
    if "\0" in str(path):
        shown = str(path).replace("\0", "\\0")
        raise error(f"{shown}: not a usable file name (it contains a NUL character).")
    try:
        info = os.stat(path)
    except OSError as exc:
        raise _read_error(path, exc, error, what) from None
    _require_regular(path, info, limit, error, what)
    return info


def open_regular_file(path: Path, limit: int | None, error: type[XvlmError] = XvlmError,
                      what: str = "a file") -> BinaryIO:
    """`path` open for reading, once it and the opened descriptor are a regular file of at most `limit` bytes.

    For a file read in pieces (a header, a zip's directory); the caller closes it, and bounds what it reads.
    """
    regular_file_info(path, limit, error, what)
    try:
        file = os.fdopen(os.open(path, _OPEN_FLAGS), "rb")
    except OSError as exc:
        raise _read_error(path, exc, error, what) from None
    try:
        _require_regular(path, os.fstat(file.fileno()), limit, error, what)
    except BaseException:
        file.close()
        raise
    return file


def read_regular_file(path: Path, limit: int, error: type[XvlmError] = XvlmError, what: str = "a file") -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes; `error` with a sentence if not.

    Devices and pipes are refused before they are opened, and again on the opened descriptor, in case the path
    was swapped between the two. A file that grows past `limit` while it is read is refused too.
    """
    with open_regular_file(path, limit, error, what) as file:
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise _read_error(path, exc, error, what) from None
    if len(data) > limit:
        raise error(_too_large(path, limit))
    return data


def _require_regular(path: Path, info: os.stat_result, limit: int | None, error: type[XvlmError], what: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a folder, not {what}.")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file (a device, pipe or socket); only ordinary files are read.")
    if limit is not None and info.st_size > limit:
        raise error(_too_large(path, limit))


def _too_large(path: Path, limit: int) -> str:
    size = f"{limit // 2**20} MB" if limit >= 2**20 else f"{limit // 2**10} KB" if limit >= 2**10 else f"{limit} bytes"
    return f"{path}: the file is larger than {size}."


def _read_error(path: Path, exc: OSError, error: type[XvlmError], what: str) -> XvlmError:
    if isinstance(exc, FileNotFoundError):
        return error(f"{path}: no such file.")
    if isinstance(exc, IsADirectoryError):
        return error(f"{path}: is a folder, not {what}.")
    if isinstance(exc, PermissionError):
        return error(f"{path}: permission denied.")
    return error(f"{path}: cannot read it ({exc.strerror or exc}).")
