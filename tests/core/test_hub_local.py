"""The registry, settings read at call time, and models found on disk: a folder copied by hand, the hub cache."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from fifo_guard import outcome_without_hanging
from hubserver import FakeHub

from xvlm_core import hub
from xvlm_core.errors import CheckpointError
from xvlm_core.hub import plan as plan_module
from xvlm_core.hub import transfer
from xvlm_core.hub.stores import FolderStore
from xvlm_core.hub.transfer import PartialFile, PlannedFile

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


# -- small files of our own on disk: a FIFO or a giant in their place is refused, never waited on or read whole

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def sparse_giant(path: Path) -> Path:
    """256 MB of NULs that take no disk: more than any of these small files may hold."""
    path.unlink(missing_ok=True)
    with path.open("wb") as file:
        file.truncate(256 * 2**20)
    return path


@needs_fifo
def test_a_token_file_that_is_a_fifo_or_a_giant_is_named_without_waiting(tmp_path, monkeypatch):
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    monkeypatch.setenv("HF_TOKEN_PATH", str(fifo))
    _, error = outcome_without_hanging(lambda: hub.plan_download(hub.DEFAULT_MODEL), [fifo])
    assert isinstance(error, hub.DownloadError) and error.kind == "auth"
    assert str(error).startswith(f"The hub access token could not be read: {fifo}: not a regular file")
    monkeypatch.setenv("HF_TOKEN_PATH", str(sparse_giant(tmp_path / "giant-token")))
    with pytest.raises(hub.DownloadError, match="giant-token: the file is larger than 64 KB") as error:
        hub.plan_download(hub.DEFAULT_MODEL)
    assert error.value.kind == "auth"


def test_the_token_file_is_read_and_a_missing_one_means_no_token(hub_server, tmp_path, monkeypatch):
    hub_server.token = "secret-token"
    (tmp_path / "token").write_text("secret-token\n")
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "token"))
    assert hub.plan_download(hub.DEFAULT_MODEL).files
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(hub.DownloadError) as error:  # asked without a token, the private model is not found
        hub.plan_download(hub.DEFAULT_MODEL)
    assert error.value.kind == "not_found"


@needs_fifo
def test_a_chosen_folders_record_that_is_a_fifo_or_too_large_means_not_downloaded(tmp_path):
    store = FolderStore(tmp_path)
    file = PlannedFile("someone/model", "config.json", size=2, sha256=None, done_bytes=0, blob_id="b" * 40)
    (tmp_path / "config.json").write_bytes(b"{}")
    record = tmp_path / ".cache" / "xvlm" / "config.json.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"etag": file.etag}))
    assert store.complete_path(file) == tmp_path / "config.json"
    record.write_text(json.dumps({"etag": file.etag}) + " " * 2**20)  # valid JSON, but no record is that long
    assert store.complete_path(file) is None
    record.unlink()
    os.mkfifo(record)
    assert outcome_without_hanging(lambda: store.complete_path(file), [record]) == (None, None)
    # An empty file listed by the hub: a FIFO in its place is not that file, whatever its record says.
    empty = PlannedFile("someone/model", "empty.txt", size=0, sha256=None, done_bytes=0, blob_id="c" * 40)
    os.mkfifo(tmp_path / "empty.txt")
    (record.parent / "empty.txt.json").write_text(json.dumps({"etag": empty.etag}))
    assert store.complete_path(empty) is None


@needs_fifo
def test_a_partial_files_sidecar_that_is_a_fifo_or_too_large_keeps_nothing(tmp_path):
    file = PlannedFile("someone/model", "model.safetensors", size=100, sha256="a" * 64, done_bytes=0)
    partial = tmp_path / "blob.incomplete"
    partial.write_bytes(b"x" * 50)
    sidecar = PartialFile.sidecar(partial)
    record = json.dumps({"size": 100, "etag": file.etag, "durable_bytes": 50})
    sidecar.write_text(record)
    assert PartialFile.kept_bytes(partial, file) == 50
    sidecar.write_text(record + " " * 2**20)  # valid JSON, but no sidecar is that long
    assert PartialFile.kept_bytes(partial, file) == 0
    sidecar.unlink()
    os.mkfifo(sidecar)
    assert outcome_without_hanging(lambda: PartialFile.kept_bytes(partial, file), [sidecar]) == (0, None)
    # On a full disk the sidecar is overwritten in place: never a FIFO, and never waiting for its reader.
    assert outcome_without_hanging(lambda: transfer._overwrite(sidecar, b"x"), [sidecar]) == (False, None)
    reader = os.open(sidecar, os.O_RDWR)  # now it has a reader: opening it for writing does not wait
    try:
        assert transfer._overwrite(sidecar, b"") is False
    finally:
        os.close(reader)


@needs_fifo
def test_a_small_file_on_disk_that_is_a_fifo_or_a_giant_is_read_from_the_hub_instead(tmp_path, monkeypatch):
    file = PlannedFile("someone/model", "config.json", size=2, sha256=None, done_bytes=0, blob_id="b" * 40)
    monkeypatch.setattr(plan_module, "read_whole", lambda _hub, listed: b"{}" if listed == file else b"")

    class OnDisk(FolderStore):
        def complete_path(self, _file: PlannedFile) -> Path:
            return on_disk  # as if it had been swapped after the store checked it

    on_disk = sparse_giant(tmp_path / "config.json")
    assert plan_module._read_small(None, "config.json", [file], OnDisk(tmp_path)) == b"{}"
    on_disk.unlink()
    os.mkfifo(on_disk)
    read = outcome_without_hanging(lambda: plan_module._read_small(None, "config.json", [file], OnDisk(tmp_path)),
                                   [on_disk])
    assert read == (b"{}", None)


def test_importing_the_hub_module_loads_neither_torch_nor_qt_nor_the_loader():
    # The loader (checkpoint) uses the hub to find cached models; the hub never imports the loader back.
    code = ("import sys, xvlm_core.hub; "
            "print(sorted({'torch', 'PySide6', 'transformers', 'xvlm_core.model.checkpoint'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
