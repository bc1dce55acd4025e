"""What counts as installed, read from disk only: a model folder, its weights whole, its vision tower found.

A model is installed when its snapshot (found through refs/<revision>) holds a config, a tokenizer and whole
weights, and its vision tower's snapshot holds a config, the image processor config and, unless the model's
weights embed the tower (`model.vision_tower.vision_tower.*`), whole weights. Refs are written once every file is
in place and the model's weights come last, so a half-downloaded model never looks usable. No torch: key names
come from the safetensors header or, for a .bin, from its pickle read with pickletools (nothing in it runs).
"""

from __future__ import annotations

import json
import os
import pickletools
import zipfile
from pathlib import Path

from xvlm_core.errors import CheckpointError, Remedy, XvlmError
from xvlm_core.hub.connection import DownloadError, default_cache_dir
from xvlm_core.hub.registry import ModelSpec, looks_like_repo_id, tower_repo_id, tower_repos
from xvlm_core.hub.stores import CacheStore, Stores
from xvlm_core.local_files import MAX_CONFIG_BYTES, open_regular_file, read_regular_file
from xvlm_core.model.checkpoint_files import (
    EMBEDDED_TOWER_PREFIX,
    find_index,
    find_single_weights,
    index_shards,
    require_weight_file,
)

MAX_HEADER = 100 * 2**20  # a larger safetensors header is not a real one
MAX_PICKLE = 64 * 2**20  # the pickle part of a .bin (names and shapes, not the tensors)


# ---------------------------------------------------------------------------------------------------------------
# Weights' key names, and whether they are whole


def _safetensors_header(path: Path) -> tuple[int, dict] | None:
    try:
        with open_regular_file(path, None, CheckpointError, "a weights file") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 0 < length <= MAX_HEADER:
                return None
            header = json.loads(handle.read(length))
    except (XvlmError, OSError, ValueError, RecursionError):
        return None
    return (length, header) if isinstance(header, dict) else None


def _safetensors_whole(path: Path) -> bool:
    parsed = _safetensors_header(path)
    if parsed is None:
        return False
    length, header = parsed
    try:
        end = max((info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"), default=0)
        return path.stat().st_size == 8 + length + end
    except (OSError, KeyError, TypeError, IndexError):
        return False


def _bin_keys(path: Path) -> set[str] | None:
    """String constants of a zip-format .bin's pickle, read with pickletools: nothing from the file is run."""
    try:
        with open_regular_file(path, None, CheckpointError, "a weights file") as handle, \
                zipfile.ZipFile(handle) as archive:
            name = next((item for item in archive.namelist() if item.endswith("data.pkl")), None)
            if name is None or archive.getinfo(name).file_size > MAX_PICKLE:
                return None  # a real state dict's pickle is a few MB: a larger one is not read into memory
            data = archive.read(name)
        return {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except (XvlmError, OSError, zipfile.BadZipFile, ValueError, EOFError):
        return None  # the legacy non-zip format: unknown


def index_keys(raw: bytes) -> set[str]:
    """The tensor names of a shard index's `weight_map`."""
    try:
        weight_map = json.loads(raw).get("weight_map", {})
        return set(weight_map) if isinstance(weight_map, dict) else set()
    except (ValueError, AttributeError, RecursionError):
        return set()


def file_keys(path: Path) -> set[str] | None:
    """The tensor names in a weights file or shard index; None when they cannot be read without running it."""
    if path.name.endswith(".index.json"):
        raw = read_local(path)
        return None if raw is None else index_keys(raw)
    if path.suffix == ".safetensors":
        parsed = _safetensors_header(path)
        return set(parsed[1]) if parsed else None
    return _bin_keys(path)


def embeds_tower(folder: Path) -> bool:
    """Whether the checkpoint in `folder` carries the vision tower's weights."""
    first = find_index(folder) or find_single_weights(folder)
    keys = file_keys(first) if first else None
    return bool(keys) and any(key.startswith(EMBEDDED_TOWER_PREFIX) for key in keys or ())


def _weights_problem(folder: Path) -> str | None:
    """What is wrong with a folder's weights (a file named), or None when they are all there and whole."""
    index = find_index(folder)
    if index is not None:
        try:
            shards = index_shards(index)
        except CheckpointError as exc:
            return str(exc).rstrip(".")
        for shard in shards:
            problem = _weight_file_problem(shard)
            if problem:
                return f"{problem} (named in {index.name})"
        return None
    single = find_single_weights(folder)
    if single is not None:
        return _weight_file_problem(single)
    return "the weights file (model.safetensors or pytorch_model.bin) is missing"


def _weight_file_problem(path: Path) -> str | None:
    if not path.exists():
        return f"{path.name} is missing"
    try:
        require_weight_file(path)
    except CheckpointError as exc:
        return str(exc).rstrip(".")
    whole = _safetensors_whole(path) if path.suffix == ".safetensors" else _bin_whole(path)
    return None if whole else f"{path.name} is incomplete or damaged"


def _bin_whole(path: Path) -> bool:
    """A zip-format .bin whose directory is there, or a legacy one that is not empty."""
    try:
        with open_regular_file(path, None, CheckpointError, "a weights file") as handle:
            return zipfile.is_zipfile(handle) or os.fstat(handle.fileno()).st_size > 0
    except (XvlmError, OSError):
        return False


# ---------------------------------------------------------------------------------------------------------------
# Model and tower folders


def _read_config(folder: Path) -> tuple[dict | None, str | None]:
    path = folder / "config.json"
    if not path.exists():
        return None, "config.json is missing"
    try:
        config = json.loads(read_regular_file(path, MAX_CONFIG_BYTES, CheckpointError, "a model config"))
    except CheckpointError as exc:
        return None, str(exc).rstrip(".")
    except (ValueError, RecursionError) as exc:
        return None, f"config.json cannot be read ({exc})"
    return (config, None) if isinstance(config, dict) else (None, "config.json is not a JSON object")


def _model_problem(folder: Path) -> str | None:
    """What a checkpoint folder lacks to be loaded (config, tokenizer, whole weights), or None."""
    _, problem = _read_config(folder)
    if problem:
        return problem
    if not any(path.is_file() for path in folder.glob("*.model")):
        return "the tokenizer file (tokenizer.model or *.model) is missing"
    return _weights_problem(folder)


def _tower_problem(folder: Path, need_weights: bool) -> str | None:
    """What a vision tower folder lacks: its config, image processor config, and weights unless embedded."""
    _, problem = _read_config(folder)
    if problem:
        return problem
    if not (folder / "preprocessor_config.json").is_file():
        return "preprocessor_config.json is missing"
    return _weights_problem(folder) if need_weights else None


def read_local(path: Path) -> bytes | None:
    """A small file of a model folder (a config, an index), or None when it is absent or not a small regular file."""
    try:
        return read_regular_file(path, MAX_CONFIG_BYTES, CheckpointError)
    except CheckpointError:
        return None


def model_folder(spec: ModelSpec, stores: Stores) -> Path | None:
    """Where the model's files are (the chosen folder, or its cache snapshot), complete or not."""
    if stores.folder is not None:
        return stores.folder.root if stores.folder.root.is_dir() else None
    return stores.cache.snapshot(spec.model_repo.repo_id, spec.model_repo.revision)


def missing_description(spec: ModelSpec, stores: Stores) -> str | None:
    """What keeps the model from being usable offline (a file or folder named), or None."""
    folder = model_folder(spec, stores)
    if folder is None:
        return f"{spec.model_repo.repo_id} is not downloaded"
    problem = _model_problem(folder)
    if problem:
        return f"{spec.model_repo.repo_id}: {problem}"
    need_weights = not embeds_tower(folder)
    for tower in tower_repos(spec, lambda name: read_local(folder / name)):
        tower_folder = stores.cache.snapshot(tower.repo_id, tower.revision)
        if tower_folder is None:
            return f"the vision tower {tower.repo_id} is not downloaded"
        problem = _tower_problem(tower_folder, need_weights)
        if problem:
            return f"{tower.repo_id}: {problem}"
    return None


def installed_folder(spec: ModelSpec, stores: Stores) -> Path | None:
    return None if missing_description(spec, stores) else model_folder(spec, stores)


def installed_model_folder(spec: ModelSpec, cache_dir: Path | None = None) -> Path | None:
    """The model's snapshot folder when it and its vision tower are complete in the cache, else None."""
    return installed_folder(spec, Stores(cache_dir))


def offline_folder(spec: ModelSpec, stores: Stores) -> Path:
    """The installed model's folder, or the error saying what is missing and that offline mode is on."""
    missing = missing_description(spec, stores)
    folder = model_folder(spec, stores)
    if missing is None and folder is not None:
        return folder
    raise DownloadError(
        f"Offline mode is on (HF_HUB_OFFLINE) and {spec.display_name} is not completely downloaded ({missing}). "
        "Turn offline mode off to download it, or choose a folder that holds the model.", "offline")


def find_cached(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of `repo_id` when it is complete in the local hub cache, else None; no network."""
    folder = CacheStore(default_cache_dir()).snapshot(repo_id, revision or "main")
    if folder is None:
        return None
    config, problem = _read_config(folder)
    if config is not None and config.get("model_type") in ("clip", "clip_vision_model"):
        # A tower's weights may live in the checkpoint instead; the loader says so if they are missing.
        problem = _tower_problem(folder, need_weights=False)
    else:
        problem = problem or _model_problem(folder)
    return None if problem else folder


# ---------------------------------------------------------------------------------------------------------------
# A model folder copied by hand


def validate_local_folder(folder: Path, vision_tower: str | None = None) -> None:
    """Check that `folder` holds a usable model and that its vision tower is found or embedded.

    Raises CheckpointError naming the first missing or broken file.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder.")
    problem = _model_problem(folder)
    if problem:
        raise CheckpointError(f"{folder}: {problem}.")
    config, _ = _read_config(folder)
    name = vision_tower or (config or {}).get("mm_vision_tower")
    if not name:
        return  # a text-only checkpoint
    if vision_tower is None and embeds_tower(folder):
        return  # the loader takes the tower's weights from the checkpoint
    tower_folder = _find_tower_folder(name)
    if tower_folder is None:
        raise CheckpointError(
            f"{folder}: the vision tower '{name}' was not found (it is not in the checkpoint, not a folder here, "
            "and not downloaded). Download it, or give its folder.")
    problem = _tower_problem(tower_folder, need_weights=not embeds_tower(folder))
    if problem:
        raise CheckpointError(f"{tower_folder} (vision tower): {problem}.")


def _find_tower_folder(name: str) -> Path | None:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    repo_id = tower_repo_id(name)
    if repo_id is None:
        return None
    return CacheStore(default_cache_dir()).snapshot(repo_id, "main")


def resolve_folder(name_or_path: str, what: str = "model") -> Path:
    """A local folder as given, or a hub repo id found complete in the local cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise CheckpointError(f"{path}: is a file; give the folder that holds the {what}'s files.")
    if looks_like_repo_id(name_or_path):
        cached = find_cached(name_or_path)
        if cached is not None:
            return cached
        raise CheckpointError(
            f"The {what} '{name_or_path}' is not downloaded yet (or its download is incomplete).",
            code=Remedy.DOWNLOAD_MODEL, repo_id=name_or_path,
        )
    raise CheckpointError(f"{name_or_path}: no such folder.")
