"""Errors as data: each core error says what happened in English and carries what a person can do as a code;
`xvlm` adds its own advice by that code, and running out of memory is recognised by its type."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from xvlm_core import cli
from xvlm_core.cli import main
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.errors import (
    CheckpointError,
    DeviceError,
    ImageError,
    Problem,
    Remedy,
    XvlmError,
    known_error,
    problem_of,
)
from xvlm_core.hub import DownloadError

PROJECT = Path(__file__).resolve().parents[2]
TOWER_REPO = "openai/clip-vit-large-patch14-336"


def test_each_error_carries_a_code_its_details_and_its_problem():
    assert CheckpointError("x: no such folder.").code is Remedy.CHOOSE_MODEL
    assert ImageError("a.png: not an image.").code is Remedy.CHOOSE_IMAGE
    assert DeviceError("No CUDA GPU.").code is Remedy.CHOOSE_DEVICE
    assert XvlmError("Plain.").code is Remedy.NONE
    error = CheckpointError("The model 'a/b' is not downloaded yet.", code=Remedy.DOWNLOAD_MODEL, repo_id="a/b")
    assert str(error) == error.details == "The model 'a/b' is not downloaded yet."
    assert error.problem == Problem(Remedy.DOWNLOAD_MODEL, "The model 'a/b' is not downloaded yet.", "a/b")


def test_a_missing_vision_tower_folder_asks_for_the_tower_without_command_line_advice(
        capsys, tiny_model_dir, tmp_path):
    missing = tmp_path / "no-tower-here"
    with pytest.raises(XvlmError) as error:
        load_model(str(tiny_model_dir), vision_tower=str(missing), dtype="float32")
    assert error.value.code is Remedy.CHOOSE_VISION_TOWER
    assert str(error.value) == f"{missing}: no such folder." and "--" not in str(error.value)

    assert main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(missing), "hi"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"error: {missing}: no such folder. Pass its folder with --vision-tower.")


def test_a_vision_tower_not_downloaded_names_its_repo_and_the_command_says_both_ways(capsys, tiny_model_dir):
    with pytest.raises(XvlmError) as error:
        load_model(str(tiny_model_dir), vision_tower=TOWER_REPO, dtype="float32")
    assert error.value.problem.code is Remedy.CHOOSE_VISION_TOWER and error.value.repo_id == TOWER_REPO
    assert "xvlm" not in str(error.value)

    assert main(["ask", "--model", str(tiny_model_dir), "--vision-tower", TOWER_REPO, "hi"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        f"Run: xvlm download {TOWER_REPO}, or pass its folder with --vision-tower.")


def test_a_model_not_downloaded_is_a_download_problem_with_its_repo_id():
    with pytest.raises(XvlmError) as error:
        load_model("XiaoduoAILab/Xmodel_VLM")
    assert error.value.problem == Problem(
        Remedy.DOWNLOAD_MODEL,
        "The model 'XiaoduoAILab/Xmodel_VLM' is not downloaded yet (or its download is incomplete).",
        "XiaoduoAILab/Xmodel_VLM")


@pytest.mark.parametrize("exc", [
    MemoryError(),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nSee the documentation for memory management."),
    # Apple's GPU: torch has no type for it, only this RuntimeError
    RuntimeError("MPS backend out of memory (MPS allocated: 17.5 GB, other allocations: 1.2 GB). Tried to allocate "
                 "256 MB on private pool.\nSee the documentation for memory management."),
])
def test_running_out_of_memory_is_known_by_its_type(exc):
    error = known_error(exc)
    assert error is not None and error.code is Remedy.FREE_MEMORY
    assert str(error).startswith("The model ran out of memory (") and "documentation" not in str(error)
    assert problem_of(exc).code is Remedy.FREE_MEMORY


def test_words_alone_do_not_make_an_error_out_of_memory():
    assert known_error(RuntimeError("out of memory")) is None
    assert known_error(ValueError("MPS backend out of memory")) is None  # torch's own words, and its type
    assert problem_of(RuntimeError("out of memory")) == Problem(
        Remedy.SEE_LOG, "RuntimeError")


def test_the_command_says_what_to_do_when_memory_runs_out(capsys, monkeypatch, tiny_model_dir):
    def no_memory(_args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(cli, "_load", no_memory)
    assert main(["ask", "--model", str(tiny_model_dir), "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("error: The model ran out of memory (OutOfMemoryError: CUDA out of memory. Tried to allocate "
                   "2.00 GiB). Close other programs, or try --quantize int8, a smaller --dtype or --device cpu.")


@pytest.mark.parametrize(("kind", "code"), [("offline", Remedy.CHECK_NETWORK), ("unreachable", Remedy.CHECK_NETWORK),
                                            ("auth", Remedy.SIGN_IN), ("disk_full", Remedy.FREE_DISK),
                                            ("permission", Remedy.CHOOSE_FOLDER), ("integrity", Remedy.TRY_AGAIN)])
def test_a_download_error_s_kind_gives_its_code(kind, code):
    assert DownloadError("What happened.", kind).code is code


def test_a_hub_address_that_is_not_a_hub_asks_to_check_the_mirror(monkeypatch):
    from xvlm_core import hub

    monkeypatch.setenv("HF_ENDPOINT", "ftp://mirror.example")
    with pytest.raises(DownloadError) as error:
        hub.plan_download(hub.DEFAULT_MODEL)
    assert error.value.code is Remedy.CHECK_MIRROR


# Their messages reach a terminal or an HTTP client, never the window.
NOT_SHOWN_IN_THE_WINDOW = ("cli.py", "__main__.py")
# Messages for an HTTP client; vLLM's plugin runs in vLLM; the benchmarks run from the command line.
SERVED = ("openai_compat", "vllm", "bench")


def _options_named_in_messages() -> set[str]:
    """Every --option named in a string of xvlm_core that can end up in the window's errors."""
    flags: set[str] = set()
    for path in (PROJECT / "xvlm_core").rglob("*.py"):
        if path.name in NOT_SHOWN_IN_THE_WINDOW or any(package in path.parts for package in SERVED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                flags.update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value))
    return flags


def test_the_core_s_messages_name_no_command_line_option():
    assert _options_named_in_messages() == set()  # the command adds its options by code (cli.ADVICE)
    assert "--vision-tower" in cli.DOWNLOAD_OR_FOLDER  # what the scan looks for, where it belongs
