"""Turning an untrusted relative name into a path inside a destination, or refusing it.

Names come from outside: a hub's file listing, a mirror, a checkpoint's shard index, an imported chat. Each one
is checked here, before anything is read or written, so that no name can reach a file outside its folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from xvlm_core.errors import XvlmError

# "C:", "C:foo", "\\?\": a Windows drive or device prefix, which Path joins as an absolute path on Windows.
_DRIVE = re.compile(r"^[A-Za-z]:")


class UnsafePathError(XvlmError):
    """A name from outside would resolve outside its destination (or is not a plain relative name)."""


def relative_name_problem(name: object) -> str | None:
    """Why `name` is not a plain relative POSIX path of ordinary components, or None when it is."""
    if not isinstance(name, str) or not name:
        return "it is not a file name"
    if "\x00" in name or any(ord(char) < 0x20 for char in name):
        return "it contains control characters"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/") or _DRIVE.match(name):
        return "it is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "it is not a plain path inside its folder (empty, '.' or '..' component)"
    return None


def path_inside(root: Path, name: object, *, source: str, follow_last_link: bool = False) -> Path:
    """`root / name`, after checking that `name` is a plain relative name that stays inside `root`.

    Folder links already on disk are followed for the check, so `link/file` with `link` pointing elsewhere is
    refused. The last component is not followed: it is what gets written, replaced or read, and a link there was
    made by the user or by the hub cache (whose snapshot files link to its blobs). Where a link there came with the
    untrusted input itself (an imported chat's folder), `follow_last_link` checks where it leads as well.
    `source` names where the name came from, for the message ("the file list of REPO").
    """
    problem = relative_name_problem(name)
    if problem is not None:
        raise UnsafePathError(f"Refused the file name {name!r} from {source}: {problem}.")
    assert isinstance(name, str)
    path = root / name
    checked = path if follow_last_link else path.parent
    if not checked.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"Refused the file name {name!r} from {source}: it leads outside {root}.")
    return path
