"""The built app in dist/ as a person gets it: self-check, the exact golden answer, first-launch download, folders.

Skipped until `python packaging/build.py` has made the folder; CI builds it after the unit tests and runs these.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bundle
import pytest

from app.history.database import default_store_path
from app.logs import log_dir
from app.settings import config_dir
from xvlm_core import hub

pytestmark = pytest.mark.slow

MODEL = "XiaoduoAILab/Xmodel_VLM"


def run(folder: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    """Run one of the built programs (bundle.GUI_NAME, bundle.CLI_NAME) with this test's environment."""
    return subprocess.run([str(bundle.program(folder, name)), *args], capture_output=True, text=True, timeout=300,
                          check=False, env=os.environ.copy())


def test_frozen_self_check_passes_on_the_tiny_model(frozen_app, tiny_model_dir, tiny_tower_dir):
    done = run(frozen_app, bundle.GUI_NAME, "--self-check", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir))
    print(done.stdout)  # the timings, in the test log
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "(frozen build," in lines[0]
    assert lines[-1] == "self-check passed"
    assert any(line.strip().startswith("A: ") and len(line.strip()) > 3 for line in lines)
    # built from an environment with the llama.cpp engine (the test environment has it): the bundle answers on it
    assert any(line.startswith("ok    model on llama.cpp: ") for line in lines), done.stdout


def test_frozen_app_keeps_chats_settings_logs_and_models_where_the_source_does(frozen_app, tiny_model_dir,
                                                                              tiny_tower_dir):
    done = run(frozen_app, bundle.GUI_NAME, "--self-check", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    folders = (f"ok    user folders: chats {default_store_path().parent}, settings {config_dir()}, "
               f"logs {log_dir()}, models {hub.default_cache_dir()}")
    assert folders in done.stdout.splitlines()
    log = log_dir() / "xvlm-chat.log"
    assert f"ok    log: {log}" in done.stdout.splitlines()
    assert "self-check passed" in log.read_text(encoding="utf-8")


def test_frozen_self_check_fails_on_a_broken_model_naming_it(frozen_app, tiny_model_dir, tiny_tower_dir, tmp_path):
    broken = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    done = run(frozen_app, bundle.GUI_NAME, "--self-check", str(broken), "--vision-tower", str(tiny_tower_dir))
    assert done.returncode == 1
    assert any(line.startswith("FAIL  model on PyTorch: ") for line in done.stdout.splitlines()), done.stdout


def test_frozen_folder_holds_every_resource_and_the_icon_theme(frozen_app):
    contents = frozen_app / "_internal"
    for source, folder in bundle.resource_datas():
        copy = contents / folder / Path(source).name
        assert copy.is_file() and filecmp.cmp(source, copy, shallow=False), copy
    for size in bundle.ICON_SIZES:
        assert (contents / bundle.ICON_THEME_DIR / f"{size}x{size}" / "apps" / "xvlm-chat.png").is_file()
    if sys.platform.startswith("linux"):
        assert os.access(frozen_app / "install.sh", os.X_OK)


def test_frozen_command_gives_the_golden_answer(frozen_app, tiny_model_dir, tiny_tower_dir, images_dir, golden):
    case = golden["cases"]["single_square"]
    done = run(frozen_app, bundle.CLI_NAME, "ask", "--model", str(tiny_model_dir), "--vision-tower",
               str(tiny_tower_dir), "--dtype", "float32", "--max-new-tokens", str(case["max_new_tokens"]),
               "--image", str(images_dir / case["images"][0]), case["turns"][0][0])
    assert done.returncode == 0, done.stderr
    assert done.stdout == case["text"] + "\n"


def test_frozen_sampling_matches_the_source_for_the_same_seed(frozen_app, tiny_model_dir, tiny_tower_dir):
    args = ["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32",
            "--max-new-tokens", "12", "--temperature", "0.8", "--top-p", "0.9", "--top-k", "40",
            "--repetition-penalty", "1.1", "--seed", "7", "--image",
            str(frozen_app / "_internal" / "resources" / "self-check.png"), "Describe it."]
    frozen = run(frozen_app, bundle.CLI_NAME, *args)
    source = subprocess.run([sys.executable, "-m", "xvlm_core", *args], capture_output=True, text=True,
                            timeout=300, check=False)
    assert frozen.returncode == source.returncode == 0, frozen.stderr + source.stderr
    assert frozen.stdout == source.stdout and frozen.stdout.strip()


def test_frozen_first_launch_download_then_offline_answer(frozen_app, hub_server, monkeypatch, golden, images_dir):
    done = run(frozen_app, bundle.CLI_NAME, "download")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"Ready: {hub.find_cached(MODEL)}"

    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    case = golden["cases"]["single_square"]
    done = run(frozen_app, bundle.CLI_NAME, "ask", "--model", MODEL, "--dtype", "float32", "--max-new-tokens",
               str(case["max_new_tokens"]), "--image", str(images_dir / case["images"][0]), case["turns"][0][0])
    assert done.returncode == 0, done.stderr
    assert done.stdout == case["text"] + "\n"
