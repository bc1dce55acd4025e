"""Images sent to the server, checked and kept as files named by their SHA-256 for the life of the server."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

import httpx2

from xvlm_core.errors import ImageError
from xvlm_core.messages import MAX_IMAGE_BYTES, ImageRef
from xvlm_core.model.images import FORMAT_SUFFIXES, open_image
from xvlm_core.openai_compat.protocol import ApiError

MAX_REMOTE_IMAGE_BYTES = 20 * 1024 * 1024
REMOTE_IMAGE_TIMEOUT_S = 15.0
# What the folder keeps between requests: the least recently sent images go first beyond either bound. A client
# resending a conversation sends its images again, so an evicted one is only written anew.
KEPT_IMAGES = 256
KEPT_BYTES = 1024 * 1024 * 1024


class ImageStore:
    """Turns `image_url` values into image files the session reads.

    The same image content always gets the same path, so the session's image cache and the KV cache prefix
    stay valid when a client resends a conversation. The folder is private (0700) and removed by `close`.
    """

    def __init__(self, allow_remote: bool = False):
        self.allow_remote = allow_remote
        self.folder = Path(tempfile.mkdtemp(prefix="xvlm-serve-"))
        self._recent: OrderedDict[Path, int] = OrderedDict()  # file -> bytes, the most recently sent last
        self._lock = threading.Lock()  # requests are parsed on several threads at once

    def __enter__(self) -> ImageStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def resolve(self, url: str, where: str) -> ImageRef:
        """The image at `url` (a `data:` URL, or http(s) when allowed), stored under its SHA-256.

        `where` names it in errors."""
        if url.startswith("data:"):
            data = _decode_data_url(url, where)
        elif url.startswith(("http://", "https://")):
            if not self.allow_remote:
                raise ApiError(
                    400,
                    f"{where}: this server takes images as data: URLs only (base64 in the request); "
                    "it fetches http(s) images only when started with --allow-remote-images.",
                    f"{where}.image_url",
                    "remote_images_disabled",
                )
            data = _fetch(url, where)
        else:
            raise ApiError(400, f"{where}: the image URL must be a data: URL (or http(s)).", f"{where}.image_url")
        return self._store(data, where)

    def _store(self, data: bytes, where: str) -> ImageRef:
        try:
            _, image_format = open_image(data, name=f"{where}: the image")
        except ImageError as exc:
            raise ApiError(400, str(exc), f"{where}.image_url", "invalid_image") from None
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.folder / (sha256 + FORMAT_SUFFIXES.get(image_format, ".img"))
        # One at a time: another request could otherwise remove this file between writing and returning it.
        with self._lock:
            if not path.exists():
                handle, partial = tempfile.mkstemp(dir=self.folder, suffix=".partial")
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.replace(partial, path)
            self._remember(path, len(data))
        return ImageRef(sha256, str(path))

    def _remember(self, path: Path, size: int) -> None:
        """Mark `path` as the most recently sent; remove the least recent beyond KEPT_IMAGES or KEPT_BYTES."""
        self._recent.pop(path, None)
        self._recent[path] = size
        while len(self._recent) > KEPT_IMAGES or sum(self._recent.values()) > KEPT_BYTES:
            oldest, _ = self._recent.popitem(last=False)
            with contextlib.suppress(OSError):
                oldest.unlink()


def _decode_data_url(url: str, where: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma or not header.endswith(";base64"):
        raise ApiError(400, f"{where}: a data: URL image must be base64 (data:image/png;base64,...).",
                       f"{where}.image_url")
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES:
        raise ApiError(400, f"{where}: the image is larger than {MAX_IMAGE_BYTES // 2**20} MB.",
                       f"{where}.image_url", "image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{where}: the data: URL is not valid base64.", f"{where}.image_url") from None


def _fetch(url: str, where: str) -> bytes:
    """Download an image, bounded in size and in total time (a slow server cannot hold a request forever)."""
    deadline = time.monotonic() + REMOTE_IMAGE_TIMEOUT_S
    limit_mb = MAX_REMOTE_IMAGE_BYTES // 2**20
    try:
        with httpx2.Client(timeout=REMOTE_IMAGE_TIMEOUT_S, follow_redirects=True, max_redirects=3) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ApiError(400, f"{where}: fetching the image gave HTTP {response.status_code}.",
                               f"{where}.image_url", "image_fetch_failed")
            if int(response.headers.get("content-length") or 0) > MAX_REMOTE_IMAGE_BYTES:
                raise ApiError(400, f"{where}: the image is larger than {limit_mb} MB.", f"{where}.image_url",
                               "image_too_large")
            data = bytearray()
            for piece in response.iter_bytes():
                data += piece
                if len(data) > MAX_REMOTE_IMAGE_BYTES:
                    raise ApiError(400, f"{where}: the image is larger than {limit_mb} MB.", f"{where}.image_url",
                                   "image_too_large")
                if time.monotonic() > deadline:
                    raise ApiError(400, f"{where}: fetching the image took more than {REMOTE_IMAGE_TIMEOUT_S:.0f} s.",
                                   f"{where}.image_url", "image_fetch_failed")
            return bytes(data)
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise ApiError(400, f"{where}: could not fetch the image ({type(exc).__name__}).", f"{where}.image_url",
                       "image_fetch_failed") from None
