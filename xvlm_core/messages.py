"""One chat message as every engine reads it: who said it, what, and which images. Torch-free and Qt-free.

A `Message` is frozen, so one list of them can be handed to the model thread while the window goes on; what the
app keeps about a message besides (its id in the history, how far its answer got, what it cost) is the app's.

Images are content-addressed: an `ImageRef` carries the SHA-256 of the file's bytes, worked out once where the
image comes in (the app's history, the CLI, the server), so nothing downstream reads a file just to name it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xvlm_core.errors import ImageError
from xvlm_core.local_files import read_regular_file

Role = Literal["user", "assistant"]
# Positions one image takes in the model's context (its embeddings), when no model says otherwise.
IMAGE_POSITIONS = 144
DEFAULT_CONTEXT = 4096
MAX_IMAGE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ImageRef:
    """An image file named by its content."""

    sha256: str
    path: str

    @classmethod
    def from_file(cls, path: str | Path) -> ImageRef:
        """Read and hash a file once (bounded in size; raises ImageError for a missing or huge file)."""
        return cls(hashlib.sha256(read_image_bytes(Path(path))).hexdigest(), str(path))


def read_image_bytes(path: Path) -> bytes:
    """The bytes of an image file, refusing files too large to be a sensible image and anything not a file."""
    return read_regular_file(path, MAX_IMAGE_BYTES, ImageError, "an image")


# A message's image: a reference, or a plain path (hashed by the session the first time it sees the file).
Image = ImageRef | str


def image_path(image: Image) -> str:
    return image.path if isinstance(image, ImageRef) else image


def image_limit(context_length: int = DEFAULT_CONTEXT, image_tokens: int = IMAGE_POSITIONS) -> int:
    """How many images one message may carry: together at most half the context, the rest is for text and answer."""
    return max(1, context_length // 2 // image_tokens)


@dataclass(frozen=True)
class Message:
    """One turn of a chat. `images` (user messages only) come before the text, in order."""

    role: Role
    text: str = ""
    images: tuple[Image, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
