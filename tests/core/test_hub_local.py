"""The registry, settings read at call time, and models found on disk: a folder copied by hand, the hub cache."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hubserver import FakeHub

from xvlm_core import hub
from xvlm_core.errors import CheckpointError

MODEL_FILES = ("config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json",
               "xmodel_32000.model", "model.safetensors")


def write_safetensors(path: Path, keys: list[str]) -> None:
    """A valid safetensors file holding one float32 zero per key."""
    header = {key: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i, key in enumerate(keys)}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4 * len(keys))


def linked_copy(source: Path, target: Path, names: tuple[str, ...]) -> Path:
    """A folder whose files are links to the shared fixtures (never copies of them)."""
    target.mkdir(parents=True)
    for name in names:
        (target / name).symlink_to(source / name)
    return target


# -- registry


def test_default_model_is_the_checkpoint_and_its_clip_tower():
    spec = hub.model_spec(None)
    assert spec is hub.DEFAULT_MODEL is hub.model_spec("xiaoduoailab/xmodel_vlm")
    assert [(repo.repo_id, repo.role) for repo in spec.repos] == [
        ("XiaoduoAILab/Xmodel_VLM", "model"), ("openai/clip-vit-large-patch14-336", "vision_tower")]
    assert {"config.json", "preprocessor_config.json"} <= set(spec.repos[1].allow_patterns)


def test_other_repos_get_a_generic_spec_and_bad_names_a_clear_error():
    spec = hub.model_spec("someone/other-vlm")
    assert spec.display_name == "other-vlm" and [repo.repo_id for repo in spec.repos] == ["someone/other-vlm"]
    with pytest.raises(hub.DownloadError, match="organisation/model") as error:
        hub.model_spec("/home/me/model")
    assert error.value.kind == "not_found"


def test_revision_applies_to_the_model_not_its_tower():
    spec = hub.DEFAULT_MODEL.with_revision("v1.0")
    assert [repo.revision for repo in spec.repos] == ["v1.0", "main"]


@pytest.mark.parametrize(("name", "repo"), [
    ("openai/clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336"),
    ("/data/models/clip-vit-large-patch14-336", "openai/clip-vit-large-patch14-336"),
    ("C:\\models\\clip-vit-large-patch14\\", "openai/clip-vit-large-patch14"),
    ("/data/models/my-own-tower", None),
])
def test_tower_named_by_an_authors_path_is_found_by_its_folder_name(name, repo):
    assert hub.tower_repo_id(name) == repo


def test_one_weight_format_is_fetched_never_tensorflow_or_flax(tmp_path, tiny_tower_dir, monkeypatch):
    repo = tmp_path / "clip"
    linked_copy(tiny_tower_dir, repo, ("config.json", "preprocessor_config.json", "model.safetensors"))
    for name in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "README.md", "vocab.json"):
        (repo / name).write_bytes(b"x" * 200_000)
    spec = hub.ModelSpec("test/clip", "clip", (hub.RepoSpec("test/clip", allow_patterns=hub.TOWER_FILES),))
    server = FakeHub({"test/clip": repo}).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert {file.filename for file in hub.plan_download(spec).files} == {
            "config.json", "preprocessor_config.json", "model.safetensors"}
        (repo / "model.safetensors").unlink()
        (repo / "pytorch_model.bin").write_bytes(b"x" * 200_001)
        server.stop()
        server = FakeHub({"test/clip": repo}).start()
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        assert {file.filename for file in hub.plan_download(spec).files} == {
            "config.json", "preprocessor_config.json", "pytorch_model.bin"}
    finally:
        server.stop()


# -- settings read when called, not when imported


def test_cache_folder_follows_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "a"))
    assert hub.default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.default_cache_dir() == tmp_path / "home" / "hub"


def test_bad_endpoint_setting_is_named(monkeypatch):
    with pytest.raises(hub.DownloadError, match=r"ftp://mirror\.example") as error:
        hub.plan_download(hub.DEFAULT_MODEL, endpoint="ftp://mirror.example")
    assert error.value.kind == "unreachable"


def test_error_kinds_are_a_closed_set():
    assert hub.DownloadError("x", "disk_full").kind == "disk_full"
    with pytest.raises(ValueError):
        hub.DownloadError("x", "weird")


# -- a folder copied by hand


def test_fixture_checkpoint_is_valid_with_its_embedded_tower(tiny_model_dir, tiny_model_bin_dir):
    hub.validate_local_folder(tiny_model_dir)
    hub.validate_local_folder(tiny_model_bin_dir)  # its tower path is from another machine, but it is embedded


@pytest.mark.parametrize(("missing", "message"), [
    ("config.json", "config.json is missing"),
    ("xmodel_32000.model", "the tokenizer file (tokenizer.model or *.model) is missing"),
    ("model.safetensors", "the weights file (model.safetensors or pytorch_model.bin) is missing"),
])
def test_missing_file_is_named(tmp_path, tiny_model_dir, missing, message):
    folder = linked_copy(tiny_model_dir, tmp_path / "model", tuple(n for n in MODEL_FILES if n != missing))
    with pytest.raises(CheckpointError) as error:
        hub.validate_local_folder(folder)
    assert str(error.value) == f"{folder}: {message}."


def test_truncated_weights_are_named(tmp_path, tiny_model_dir):
    folder = linked_copy(tiny_model_dir, tmp_path / "model", MODEL_FILES[:-1])
    (folder / "model.safetensors").write_bytes((tiny_model_dir / "model.safetensors").read_bytes()[:1_000_000])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is incomplete or damaged"):
        hub.validate_local_folder(folder)


def test_missing_shard_is_named(tmp_path, tiny_model_dir):
    folder = linked_copy(tiny_model_dir, tmp_path / "model", MODEL_FILES[:-1])
    write_safetensors(folder / "model-00001-of-00002.safetensors", ["model.norm.weight"])
    weight_map = {"model.norm.weight": "model-00001-of-00002.safetensors",
                  "lm_head.weight": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError) as error:
        hub.validate_local_folder(folder)
    assert "model-00002-of-00002.safetensors is missing (named in model.safetensors.index.json)" in str(error.value)


@pytest.fixture
def model_without_tower(tmp_path, tiny_model_dir) -> Path:
    """A checkpoint whose weights do not carry the vision tower."""
    folder = linked_copy(tiny_model_dir, tmp_path / "model", MODEL_FILES[:-1])
    write_safetensors(folder / "model.safetensors", ["model.norm.weight", "lm_head.weight"])
    return folder


def test_tower_not_found_is_named(model_without_tower):
    with pytest.raises(CheckpointError, match="vision tower 'openai/clip-vit-large-patch14-336' was not found"):
        hub.validate_local_folder(model_without_tower)


def test_tower_folder_missing_its_processor_config_is_named(model_without_tower, tmp_path, tiny_tower_dir):
    tower = linked_copy(tiny_tower_dir, tmp_path / "tower", ("config.json", "model.safetensors"))
    with pytest.raises(CheckpointError) as error:
        hub.validate_local_folder(model_without_tower, vision_tower=str(tower))
    assert str(error.value) == f"{tower} (vision tower): preprocessor_config.json is missing."


def test_tower_without_weights_is_refused_when_the_checkpoint_lacks_them(model_without_tower, tmp_path,
                                                                        tiny_tower_dir):
    tower = linked_copy(tiny_tower_dir, tmp_path / "tower", ("config.json", "preprocessor_config.json"))
    with pytest.raises(CheckpointError, match=r"weights file .* is missing"):
        hub.validate_local_folder(model_without_tower, vision_tower=str(tower))
    (tower / "model.safetensors").symlink_to(tiny_tower_dir / "model.safetensors")
    hub.validate_local_folder(model_without_tower, vision_tower=str(tower))


# -- the hub cache, read without network


def cache_snapshot(repo_id: str, files: dict[str, Path | None], revision: str = "main") -> Path:
    """A hub-cache snapshot by hand: `None` makes a link to a blob that is not there (an interrupted download)."""
    repo = hub.default_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    commit = "a" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).symlink_to(source if source is not None else repo / "blobs" / "gone")
    (repo / "refs").mkdir()
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def test_find_cached_wants_every_needed_file(tiny_model_dir):
    files: dict[str, Path | None] = {name: tiny_model_dir / name for name in MODEL_FILES}
    files["model.safetensors"] = None
    cache_snapshot("XiaoduoAILab/Xmodel_VLM", files)
    assert hub.find_cached("XiaoduoAILab/Xmodel_VLM") is None
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) is None


def test_model_counts_as_installed_only_with_its_tower(tiny_model_dir, tiny_tower_dir):
    snapshot = cache_snapshot("XiaoduoAILab/Xmodel_VLM", {name: tiny_model_dir / name for name in MODEL_FILES})
    assert hub.find_cached("XiaoduoAILab/Xmodel_VLM") == snapshot
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) is None  # no vision tower yet
    cache_snapshot("openai/clip-vit-large-patch14-336",
                   {name: tiny_tower_dir / name for name in ("config.json", "preprocessor_config.json")})
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) == snapshot  # the checkpoint embeds the tower's weights


def test_importing_the_hub_module_loads_neither_torch_nor_qt_nor_the_loader():
    # The loader (checkpoint) uses the hub to find cached models; the hub never imports the loader back.
    code = ("import sys, xvlm_core.hub; "
            "print(sorted({'torch', 'PySide6', 'transformers', 'xvlm_core.checkpoint'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
