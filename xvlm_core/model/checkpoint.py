"""Finding a checkpoint's files and reading its weights safely (safetensors, or .bin with weights_only)."""

from __future__ import annotations

import pickle
import reprlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from xvlm_core.errors import CheckpointError
from xvlm_core.model.checkpoint_files import EMBEDDED_TOWER_PREFIX as EMBEDDED_TOWER_PREFIX  # the loader's name for it
from xvlm_core.model.checkpoint_files import find_index, find_single_weights, index_shards, require_weight_file

if TYPE_CHECKING:
    import torch

    StateDict = dict[str, torch.Tensor]

PROJECTOR_PREFIX = "model.mm_projector."


def find_weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder: one file, or the shards an index names (safetensors first)."""
    index = find_index(folder)
    if index is not None:
        shards = index_shards(index)
        for path in shards:
            if not path.exists():
                raise CheckpointError(f"{path}: this shard is missing (named in {index.name}).")
            require_weight_file(path)
        return shards
    single = find_single_weights(folder)
    if single is not None:
        require_weight_file(single)
        return [single]
    raise CheckpointError(f"{folder}: no weights (model.safetensors or pytorch_model.bin) in this folder.")


def read_weights(files: list[Path], wanted: Callable[[str], bool] = lambda key: True) -> StateDict:
    """All tensors whose key `wanted` accepts, memory-mapped where the format allows."""
    state: StateDict = {}
    for path in files:
        state.update(_read_safetensors(path, wanted) if path.suffix == ".safetensors" else _read_bin(path, wanted))
    return state


def _read_safetensors(path: Path, wanted: Callable[[str], bool]) -> StateDict:
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys() if wanted(key)}  # noqa: SIM118 (a method of safe_open, not a dict)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: the weights file is incomplete or corrupt ({exc}); download it again."
        ) from None
    return _floating_weights(path, state)


def _read_bin(path: Path, wanted: Callable[[str], bool]) -> StateDict:
    import torch

    # weights_only refuses anything but tensors and plain containers: no code from the file runs.
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError:
        # PyTorch's own message suggests turning the check off; the file is simply not loaded.
        raise CheckpointError(
            f"{path}: refused for safety: besides weights, the file holds code that would run when loaded."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: the weights file is incomplete or corrupt ({exc}); download it again."
        ) from None
    if isinstance(state, dict):
        state = state.get("state_dict", state)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: does not hold a dictionary of weights.")
    odd_names = [key for key in state if not isinstance(key, str)]
    if odd_names:
        raise CheckpointError(
            f"{path}: the weight name {reprlib.repr(odd_names[0])} is not text, so this is not a checkpoint of "
            "named weights."
        )
    return _floating_weights(
        path, {key: value for key, value in state.items() if isinstance(value, torch.Tensor) and wanted(key)}
    )


def _floating_weights(path: Path, state: StateDict) -> StateDict:
    """`state`, once every weight is known to hold floating-point numbers (an integer one cannot be loaded)."""
    for key, tensor in state.items():
        # CLIP's position_ids: an integer buffer of older checkpoints, which the loader rebuilds and never reads.
        if not tensor.is_floating_point() and not key.endswith("position_ids"):
            raise CheckpointError(
                f"{path}: the weight '{key}' holds {str(tensor.dtype).removeprefix('torch.')} numbers, not "
                "floating-point ones; the file is damaged or not a checkpoint this app can load."
            )
    return state


def weight_keys(files: list[Path]) -> set[str]:
    """Key names only, without reading tensors where the format allows."""
    keys: set[str] = set()
    for path in files:
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as handle:
                    keys.update(handle.keys())
            except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
                raise CheckpointError(f"{path}: the weights file is incomplete or corrupt ({exc}).") from None
        else:
            keys.update(_read_bin(path, lambda key: True))
    return keys
