"""One chat message, as the store keeps it, the app shows it and the model reads it. Torch-free and Qt-free.

Images are content-addressed: an `ImageRef` carries the SHA-256 of the file's bytes, worked out once where the
image comes in (the app's history, the CLI, the server), so nothing downstream reads a file just to name it.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xvlm_core.errors import ImageError
from xvlm_core.local_files import read_regular_file

Role = Literal["user", "assistant"]
# Positions one image takes in the model's context (its embeddings), when no model says otherwise.
IMAGE_POSITIONS = 144
DEFAULT_CONTEXT = 4096
MAX_IMAGE_BYTES = 100 * 1024 * 1024


class Status(enum.StrEnum):
    """How far a message has got. User messages are always complete."""

    WAITING = "waiting"  # asked while the model loads; never stored
    STREAMING = "streaming"
    COMPLETE = "complete"
    STOPPED = "stopped"
    INTERRUPTED = "interrupted"  # the app stopped (a crash, a kill) while the answer streamed
    FAILED = "failed"

    @property
    def in_flight(self) -> bool:
        return self in (Status.WAITING, Status.STREAMING)


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


@dataclass
class Message:
    """One turn of a chat. `images` (user messages only) come before the text, in order."""

    role: Role
    text: str = ""
    images: tuple[Image, ...] = ()
    status: Status = Status.COMPLETE
    stats: dict[str, Any] = field(default_factory=dict)  # timing, stop reason; "error" for a failed answer
    id: int | None = None  # the history's id, once saved

    def __post_init__(self) -> None:
        self.images = tuple(self.images)

    @property
    def in_flight(self) -> bool:
        return self.status.in_flight

    @property
    def error(self) -> str:
        return self.stats.get("error", "")
