"""What each model needs, as data: its repos, the files of each, and which tower a config's name means."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from xvlm_core.hub.connection import DownloadError
from xvlm_core.model.towers import DEFAULT_TOWER, KNOWN_TOWERS

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class RepoSpec:
    """One hub repo and the files of it that the app loads."""

    repo_id: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] = ()
    role: str = "model"  # or "vision_tower": its weights are skipped when the model embeds the tower


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user picks it: its checkpoint repo first, then what it needs besides."""

    repo_id: str
    display_name: str
    repos: tuple[RepoSpec, ...]

    @property
    def model_repo(self) -> RepoSpec:
        return next(repo for repo in self.repos if repo.role == "model")

    def with_revision(self, revision: str) -> ModelSpec:
        """The same model at another branch, tag or commit (the vision tower keeps its own)."""
        repos = tuple(replace(repo, revision=revision) if repo.role == "model" else repo for repo in self.repos)
        return replace(self, repos=repos)


# One weight format is fetched: the first of these that the repo has (never the TensorFlow or Flax copies).
WEIGHT_FORMATS: tuple[tuple[str, ...], ...] = (
    ("model*.safetensors", "model.safetensors.index.json"),
    ("pytorch_model*.bin", "pytorch_model.bin.index.json"),
)
WEIGHT_PATTERNS = tuple(pattern for patterns in WEIGHT_FORMATS for pattern in patterns)
MODEL_FILES = (
    "config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "*.model", *WEIGHT_PATTERNS,
)
TOWER_FILES = ("config.json", "preprocessor_config.json", *WEIGHT_PATTERNS)

DEFAULT_MODEL = ModelSpec(
    repo_id="XiaoduoAILab/Xmodel_VLM",
    display_name="Xmodel-VLM",
    repos=(
        RepoSpec("XiaoduoAILab/Xmodel_VLM", allow_patterns=MODEL_FILES),
        RepoSpec(DEFAULT_TOWER, allow_patterns=TOWER_FILES, role="vision_tower"),
    ),
)
MODELS: dict[str, ModelSpec] = {DEFAULT_MODEL.repo_id.lower(): DEFAULT_MODEL}


def looks_like_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and not name.startswith((".", "/", "~"))


def model_spec(name: str | None) -> ModelSpec:
    """The registry's entry for `name` (None: the default model); any other repo id gets a generic spec."""
    if name is None:
        return DEFAULT_MODEL
    if name.lower() in MODELS:
        return MODELS[name.lower()]
    if not looks_like_repo_id(name):
        raise DownloadError(f"'{name}' is not a model hub name; expected the form organisation/model.", "not_found")
    # The vision tower is added once the checkpoint's config names it (see plan.tower_repos).
    return ModelSpec(name, name.split("/")[-1], (RepoSpec(name, allow_patterns=MODEL_FILES),))


def tower_repo_id(name: str) -> str | None:
    """The hub repo of a tower named by a config: a repo id as it is, a path from another machine by its folder."""
    if looks_like_repo_id(name):
        return name
    folder_name = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return next((repo for repo in KNOWN_TOWERS if repo.split("/")[1] == folder_name), None)


def matches(filename: str, patterns: tuple[str, ...]) -> bool:
    """Whether a pattern matches `filename` component by component: `*` never crosses a `/`."""
    parts = filename.split("/")
    return any(
        len(pattern_parts) == len(parts) and all(map(fnmatch.fnmatchcase, parts, pattern_parts))
        for pattern_parts in (pattern.split("/") for pattern in patterns)
    )


def is_weights(filename: str) -> bool:
    return matches(filename, WEIGHT_PATTERNS)


def tower_repos(spec: ModelSpec, read: Callable[[str], bytes | None]) -> list[RepoSpec]:
    """The spec's vision towers, or for a generic spec the one its config names (`mm_vision_tower`).

    `read(name)` gives a file of the model repo (from disk or the hub), or None when it has none.
    """
    towers = [repo for repo in spec.repos if repo.role == "vision_tower"]
    if towers:
        return towers
    raw = read("config.json")
    try:
        config = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return []
    name = (config.get("mm_vision_tower") or config.get("vision_tower")) if isinstance(config, dict) else None
    if not isinstance(name, str) or not name or Path(name).expanduser().is_dir():
        return []  # text-only, or a tower folder that exists on this machine
    repo_id = tower_repo_id(name)
    return [RepoSpec(repo_id, allow_patterns=TOWER_FILES, role="vision_tower")] if repo_id else []
