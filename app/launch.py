"""What a launch of the app asks of its window: files to attach, a model to load. No Qt: start-up reads it first.

A second launch hands its `Launch` to the running window (app/single_instance.py) as one line of JSON; the paths
in it are absolute, as the two processes need not share a working folder.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from xvlm_core.load_options import NONE_GIVEN, LoadOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launch:
    """What a launch asked for: files to attach, and the model options its command line gave."""

    files: tuple[str, ...] = ()
    options: LoadOptions = NONE_GIVEN

    def encode(self) -> bytes:
        return json.dumps({"files": list(self.files), **self.options.as_dict()}).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Launch | None:
        """The launch a line describes, or None for a line that is not one (logged)."""
        try:
            values = json.loads(line)
            if not isinstance(values, dict):
                raise ValueError(f"a {type(values).__name__}, not an object")
            files = values.pop("files", [])
            if not (isinstance(files, list) and all(isinstance(path, str) for path in files)):
                raise ValueError("the files are not a list of text")
            options = LoadOptions(**values)  # checks each value
        except (ValueError, TypeError) as exc:  # json.JSONDecodeError is a ValueError; TypeError: unknown fields
            log.warning("single instance: ignored a message that is not a launch (%s)", exc)
            return None
        return cls(files=tuple(files), options=options)


def launch_from_args(args: argparse.Namespace, cwd: Path | None = None) -> Launch:
    """What this launch asks of the window; file names made absolute against `cwd` (default: the current folder).

    A file manager may pass `file://` URLs instead of paths.
    """
    cwd = cwd or Path.cwd()
    files = tuple(str(cwd / Path(unquote(urlparse(name).path) if name.startswith("file://") else name).expanduser())
                  for name in args.images)
    return Launch(files, LoadOptions(args.model, args.vision_tower, args.device, args.dtype, args.quantize,
                                       args.engine))
