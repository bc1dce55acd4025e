"""The history's images: one file per distinct image under its SHA-256, each with a small JPEG thumbnail.

Files only, no database: safe on any thread. Names come from content, so two threads storing the same image
write the same bytes, atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
from pathlib import Path

from PIL import Image
from xvlm_core.messages import ImageRef, read_image_bytes
from xvlm_core.model.images import FORMAT_SUFFIXES, open_image, to_rgb
from xvlm_core.safepath import UnsafePathError, path_inside

THUMBNAIL_SIDE = 256
THUMBNAIL_SUFFIX = ".thumb.jpg"
_DIGEST = re.compile(r"[0-9a-f]{64}")

log = logging.getLogger(__name__)


def digest(data: bytes) -> str:
    """The name an image is stored under: the SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


class ImageFolder:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def store(self, source: ImageRef | Path | bytes) -> ImageRef:
        """Check an untrusted image (a file or encoded bytes) and copy it in with a thumbnail, once per content.

        An ImageRef already in this folder is returned as it is, with no file read. Raises ImageError when the
        image cannot be used.
        """
        if isinstance(source, ImageRef):
            if self.holds(source):
                return source
            source = Path(source.path)
        name = "the pasted image" if isinstance(source, bytes) else str(source)
        data = source if isinstance(source, bytes) else read_image_bytes(Path(source))
        sha256 = digest(data)
        copies = [path for path in self.folder.glob(sha256 + ".*") if path.name != thumbnail_name(sha256)]
        if len(copies) == 1 and (self.folder / thumbnail_name(sha256)).is_file():
            return ImageRef(sha256, str(copies[0]))
        thumbnail, suffix = make_thumbnail(data, name)
        stored = ImageRef(sha256, str(self.folder / (sha256 + suffix)))
        write_atomic(Path(stored.path), data)
        write_atomic(self.folder / thumbnail_name(sha256), thumbnail)
        return stored

    def holds(self, image: ImageRef) -> bool:
        """Whether `image` is this folder's own copy (named by its hash), with its thumbnail."""
        path = Path(image.path)
        return (path.parent == self.folder and path.stem == image.sha256 and path.is_file()
                and (self.folder / thumbnail_name(image.sha256)).is_file())

    def path(self, name: object) -> Path:
        """The file a name read from the history stands for; every such name comes through here.

        The database is outside input like any file: a name that is not one plain file name inside the folder
        (`../../victim.txt`, an absolute path, a link leading out) raises UnsafePathError.
        """
        if isinstance(name, str) and "/" in name:
            raise UnsafePathError(f"Refused the file name {name!r} from the chat history: it names a subfolder.")
        return path_inside(self.folder, name, source="the chat history", follow_last_link=True)

    def remove(self, *names: object) -> None:
        """Delete these files of the folder; a name refused by `path` is logged and nothing is deleted for it."""
        for name in names:
            try:
                self.path(name).unlink(missing_ok=True)
            except UnsafePathError as exc:
                log.warning("not deleting an image: %s", exc)


def is_digest(value: object) -> bool:
    """Whether `value` can be an image's name in the history: a SHA-256 as lower-case hex."""
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def names_image(sha256: object, name: object) -> bool:
    """Whether `name` is what `store` names the copy or the thumbnail of the image with this digest."""
    return (is_digest(sha256) and isinstance(name, str) and name.startswith(sha256)
            and name[len(sha256):] in (*FORMAT_SUFFIXES.values(), THUMBNAIL_SUFFIX))


def thumbnail_name(sha256: str) -> str:
    return sha256 + THUMBNAIL_SUFFIX


def make_thumbnail(data: bytes, name: str) -> tuple[bytes, str]:
    """Check untrusted image bytes; the JPEG thumbnail of the upright image, and the suffix to store it under."""
    image, image_format = open_image(data, name)
    image = to_rgb(image)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue(), FORMAT_SUFFIXES[image_format]


def write_atomic(path: Path, data: bytes, shared: bool = False) -> None:
    """Write through a temporary file and rename: readers see the old file or the whole new one.

    `shared` files (exports) are readable by others like any saved document; copies in the data folder are private.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if shared:
            os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
