"""Installed from a wheel (`pip install .`, `pipx install .`), as Python users install applications, the app finds
its icons and translations and answers: resources/ travels as the package `xvlm_chat_resources`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def listed_packages() -> set[str]:
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["tool"]["setuptools"]["packages"])


def test_every_package_in_the_tree_is_listed_for_the_wheel():
    found = {".".join(folder.relative_to(PROJECT_ROOT).parts)
             for top in ("app", "xvlm_core") for folder in [PROJECT_ROOT / top, *(PROJECT_ROOT / top).rglob("*")]
             if (folder / "__init__.py").is_file()}
    assert listed_packages() == found | {"xvlm_chat_resources"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools leaves build/ and *.egg-info in the folder it builds.
    source = tmp_path_factory.mktemp("source") / "xvlm-chat"
    shutil.copytree(PROJECT_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(source)], check=True, timeout=240, capture_output=True)
    [built] = out.glob("xvlm_chat-*.whl")
    return built


@pytest.mark.slow
def test_an_app_installed_from_the_wheel_finds_its_resources_and_answers(wheel, tmp_path, tiny_model_dir,
                                                                        tiny_tower_dir):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The dependencies come from the test environment (nothing is downloaded); the project itself only from
    # the wheel: this environment's editable hook is a .pth file, and .pth files in an added folder never run.
    site_packages = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, timeout=60, capture_output=True, text=True).stdout.strip())
    (site_packages / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, timeout=240, capture_output=True)

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path / "home")}
    where = subprocess.run([str(python), "-c", "import app, app.icons; print(app.__file__); "
                            "print(app.icons.resources_dir())"], cwd=tmp_path, env=env, check=True, timeout=60,
                           capture_output=True, text=True).stdout.splitlines()
    assert all(Path(line).is_relative_to(site_packages) for line in where), where

    done = subprocess.run([str(venv / "bin" / "xvlm-chat"), "--self-check", str(tiny_model_dir), "--vision-tower",
                           str(tiny_tower_dir)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for check in ("icons", "translations"):
        assert any(line.startswith(f"ok    {check}:") for line in lines), check
    assert lines[-1] == "self-check passed"
