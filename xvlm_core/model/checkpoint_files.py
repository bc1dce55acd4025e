"""A checkpoint's file layout: which files hold the weights, and the shards an index names. No torch, no network.

Shared by the loader (checkpoint.py) and the download code (hub/), so that both read a shard index the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from xvlm_core.errors import CheckpointError
from xvlm_core.local_files import MAX_CONFIG_BYTES, read_regular_file, regular_file_info
from xvlm_core.safepath import UnsafePathError, path_inside

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
EMBEDDED_TOWER_PREFIX = "model.vision_tower.vision_tower."


def find_index(folder: Path) -> Path | None:
    """The folder's shard index (safetensors first), if it has one; a FIFO or folder by that name is one too, so
    that reading it says what it is."""
    return next((folder / name for name in INDEX_FILES if (folder / name).exists()), None)


def find_single_weights(folder: Path) -> Path | None:
    """The folder's one weights file (safetensors first), if it has one; as for an index, whatever it is."""
    return next((folder / name for name in WEIGHT_FILES if (folder / name).exists()), None)


def require_weight_file(path: Path) -> None:
    """CheckpointError unless `path` is a regular file: a FIFO, device or folder is named for what it is.

    Weights are memory-mapped, not read whole, so their size is not bounded here.
    """
    regular_file_info(path, None, CheckpointError, "a weights file")


def index_shards(index: Path) -> list[Path]:
    """The shard files an index names, each checked to be inside the index's folder; none is opened.

    Raises CheckpointError naming the index when it cannot be read or names a file outside its folder.
    """
    data = read_regular_file(index, MAX_CONFIG_BYTES, CheckpointError, "a shard index")
    try:
        weight_map = json.loads(data.decode("utf-8"))["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{index}: not a valid shard index ({exc}).") from None
    try:
        return [path_inside(index.parent, name, source=str(index)) for name in names]
    except UnsafePathError as exc:
        raise CheckpointError(str(exc)) from None
