"""Local files that are not what they seem (a FIFO, a device, a folder, a sparse giant) are refused with a sentence
naming the file, before anything waits on them or reads them whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fifo_guard import outcome_without_hanging

from xvlm_core.cli import main
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.errors import CheckpointError, ConfigError, XvlmError
from xvlm_core.local_files import open_regular_file, read_regular_file

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def link_copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    return target


@needs_fifo
def test_the_helper_refuses_a_fifo_a_device_a_folder_and_a_giant(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    _, error = outcome_without_hanging(lambda: read_regular_file(fifo, 1024, ConfigError), [fifo])
    assert isinstance(error, ConfigError) and str(error).startswith(f"{fifo}: not a regular file")
    with pytest.raises(XvlmError, match="^/dev/null: not a regular file"):
        read_regular_file(Path("/dev/null"), 1024)
    with pytest.raises(XvlmError, match=rf"^{tmp_path}: is a folder, not the config\.$"):
        read_regular_file(tmp_path, 1024, what="the config")
    giant = tmp_path / "giant.json"
    with giant.open("wb") as file:
        file.truncate(2**30)  # sparse: a gigabyte that takes no disk
    with pytest.raises(XvlmError, match="giant.json: the file is larger than 4 MB"):
        read_regular_file(giant, 4 * 2**20)
    with pytest.raises(XvlmError, match="missing.json: no such file"):
        read_regular_file(tmp_path / "missing.json", 1024)


def test_the_helper_reads_up_to_its_limit_and_no_further(tmp_path):
    path = tmp_path / "small.json"
    path.write_bytes(b"x" * 100)
    assert read_regular_file(path, 100) == b"x" * 100
    with pytest.raises(XvlmError, match="small.json: the file is larger than 99 bytes"):
        read_regular_file(path, 99)


@needs_fifo
@pytest.mark.parametrize("name", ["xmodel_32000.model", "config.json", "tower/config.json",
                                  "tower/preprocessor_config.json"])
def test_a_fifo_in_the_checkpoint_is_refused_without_waiting_for_a_writer(capsys, tmp_path, tiny_model_dir,
                                                                          tiny_tower_dir, name):
    model = link_copy(tiny_model_dir, tmp_path / "model")
    tower = link_copy(tiny_tower_dir, tmp_path / "tower")
    fifo = (tmp_path / name) if name.startswith("tower/") else model / name
    fifo.unlink()
    os.mkfifo(fifo)
    _, error = outcome_without_hanging(lambda: load_model(str(model), vision_tower=str(tower)), [fifo])
    assert isinstance(error, ConfigError | CheckpointError)
    assert str(error).startswith(f"{fifo}: not a regular file")
    code, _ = outcome_without_hanging(lambda: main(["ask", "--model", str(model), "--vision-tower", str(tower), "hi"]),
                                      [fifo])
    assert code == 1
    # the command's own advice for the error's code may follow ("Pass its folder with --vision-tower.")
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: {error}")


@pytest.mark.parametrize("name", ["config.json", "tower/config.json", "tower/preprocessor_config.json",
                                  "model.safetensors.index.json", "xmodel_32000.model"])
def test_a_sparse_giant_is_refused_before_it_is_read(tmp_path, tiny_model_dir, tiny_tower_dir, name):
    model = link_copy(tiny_model_dir, tmp_path / "model")
    tower = link_copy(tiny_tower_dir, tmp_path / "tower")
    giant = (tmp_path / name) if name.startswith("tower/") else model / name
    giant.unlink(missing_ok=True)
    with giant.open("wb") as file:
        file.write(json.dumps({"weight_map": {}}).encode() if name.endswith("index.json") else b"{}")
        file.truncate(256 * 2**20)  # NULs after it, taking no disk: more than any of these files may hold
    with pytest.raises((ConfigError, CheckpointError)) as error:
        load_model(str(model), vision_tower=str(tower))
    assert str(error.value).startswith(f"{giant}: the file is larger than")


@needs_fifo
def test_a_conversation_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    from xvlm_core.errors import ConversationError
    from xvlm_core.model.prompt import read_conversation

    fifo = tmp_path / "chat.json"
    os.mkfifo(fifo)
    _, error = outcome_without_hanging(lambda: read_conversation(fifo), [fifo])
    assert isinstance(error, ConversationError) and str(error).startswith(f"{fifo}: not a regular file")


@needs_fifo
def test_a_file_read_in_pieces_is_opened_only_when_it_is_a_regular_file(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    _, error = outcome_without_hanging(lambda: open_regular_file(fifo, None, CheckpointError), [fifo])
    assert isinstance(error, CheckpointError) and str(error).startswith(f"{fifo}: not a regular file")
    giant = sparse_giant(tmp_path / "giant.bin", b"PK")
    with pytest.raises(XvlmError, match="giant.bin: the file is larger than 1 MB"):
        open_regular_file(giant, 2**20)
    with open_regular_file(giant, None) as file:  # no bound: the caller reads a piece of it
        assert file.read(2) == b"PK"


# -- weights, and the checks of what is installed


def sparse_giant(path: Path, start: bytes = b"{}") -> Path:
    """`start`, then NULs up to 256 MB that take no disk: more than any small file may hold."""
    path.unlink(missing_ok=True)
    with path.open("wb") as file:
        file.write(start)
        file.truncate(256 * 2**20)
    return path


@needs_fifo
@pytest.mark.parametrize("sharded", [False, True])
def test_a_fifo_in_place_of_the_weights_is_named_for_what_it_is(tmp_path, tiny_model_dir, tiny_tower_dir, sharded):
    from xvlm_core.hub import validate_local_folder

    model = link_copy(tiny_model_dir, tmp_path / "model")
    fifo = model / ("model-00001-of-00001.safetensors" if sharded else "model.safetensors")
    if sharded:
        (model / "model.safetensors").unlink()
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": fifo.name}}))
    else:
        fifo.unlink()
    os.mkfifo(fifo)
    for attempt in (lambda: load_model(str(model), vision_tower=str(tiny_tower_dir)),
                    lambda: validate_local_folder(model, vision_tower=str(tiny_tower_dir))):
        _, error = outcome_without_hanging(attempt, [fifo])
        assert isinstance(error, CheckpointError)
        assert f"{fifo}: not a regular file (a device, pipe or socket)" in str(error)
        assert "missing" not in str(error) and "no weights" not in str(error)


@needs_fifo
@pytest.mark.parametrize("name", ["config.json", "model.safetensors.index.json"])
def test_the_installed_check_refuses_a_fifo_without_waiting(tmp_path, tiny_model_dir, name):
    from xvlm_core.hub import installed

    model = link_copy(tiny_model_dir, tmp_path / "model")
    fifo = model / name
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    if name == "config.json":
        _, error = outcome_without_hanging(lambda: installed.validate_local_folder(model), [fifo])
        assert isinstance(error, CheckpointError) and f"{fifo}: not a regular file" in str(error)
    assert outcome_without_hanging(lambda: installed.file_keys(fifo), [fifo]) == (None, None)
    assert outcome_without_hanging(lambda: installed.read_local(fifo), [fifo]) == (None, None)


def test_the_installed_check_refuses_a_sparse_giant_before_reading_it(tmp_path, tiny_model_dir):
    from xvlm_core.hub import installed

    model = link_copy(tiny_model_dir, tmp_path / "model")
    giant = sparse_giant(model / "config.json")
    with pytest.raises(CheckpointError) as error:
        installed.validate_local_folder(model)
    assert f"{giant}: the file is larger than 4 MB" in str(error.value)
    index = sparse_giant(model / "model.safetensors.index.json", json.dumps({"weight_map": {"x": "y"}}).encode())
    assert installed.file_keys(index) is None  # read whole, it would have been {"x"}... or nothing but NULs
    assert installed.read_local(giant) is None
