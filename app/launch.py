"""What a launch of the app asks of its window: files to attach, a model to load. No Qt: start-up reads it first.

A second launch hands its `Launch` to the running window (app/single_instance.py) as one line of JSON; the paths
in it are absolute, as the two processes need not share a working folder.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

MODEL_OPTIONS = ("model", "vision_tower", "device", "dtype")


@dataclass(frozen=True)
class Launch:
    """What a launch asked for: files to attach, and the model options of its command line ("" = not given)."""

    files: tuple[str, ...] = ()
    model: str = ""
    vision_tower: str = ""
    device: str = ""
    dtype: str = ""

    @property
    def names_a_model(self) -> bool:
        return any(getattr(self, name) for name in MODEL_OPTIONS)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Launch | None:
        """The launch a line describes, or None for a line that is not one (logged)."""
        try:
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"a {type(values).__name__}, not an object")
            known = {item.name for item in fields(cls)}
            if not set(values) <= known:
                raise ValueError(f"unexpected fields {sorted(set(values) - known)}")
            files = values.pop("files", [])
            if not (isinstance(files, list) and all(isinstance(path, str) for path in files)
                    and all(isinstance(value, str) for value in values.values())):
                raise ValueError("not all values are text")
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
            log.warning("single instance: ignored a message that is not a launch (%s)", exc)
            return None
        return cls(files=tuple(files), **values)


def launch_from_args(args: argparse.Namespace, cwd: Path | None = None) -> Launch:
    """What this launch asks of the window; file names made absolute against `cwd` (default: the current folder).

    A file manager may pass `file://` URLs instead of paths.
    """
    cwd = cwd or Path.cwd()
    files = tuple(str(cwd / Path(unquote(urlparse(name).path) if name.startswith("file://") else name).expanduser())
                  for name in args.images)
    return Launch(files, args.model, args.vision_tower, args.device, args.dtype)
