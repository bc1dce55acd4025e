"""tools/setup-venv says in one line where torch came from, and never shows pip's error for the index it skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for .venv/bin/python: torch is missing, PyTorch's index fails the way pip does, the rest installs.
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/calls"
case "$*" in
  "-c import torch") exit 1 ;;
  *"--index-url"*) [ "${FAKE_TORCH_INDEX:-down}" = up ] && exit 0
                   echo "ERROR: Could not find a version that satisfies the requirement torch" >&2; exit 1 ;;
  *) echo "Successfully installed"; exit 0 ;;
esac
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "setup-venv", tmp_path / "tools" / "setup-venv")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return tmp_path


def run(project: Path, torch_index: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(project / "tools" / "setup-venv")], capture_output=True, text=True,
                          timeout=30, check=False, env={"PATH": "/usr/bin:/bin", "FAKE_TORCH_INDEX": torch_index,
                               "TMPDIR": str(project)})


def test_an_unreachable_pytorch_index_is_one_line_and_no_pip_error(project: Path):
    done = run(project, "down")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "ERROR" not in output
    assert "torch 2.13.0 comes from the package index instead." in output
    calls = (project / ".venv" / "bin" / "calls").read_text().splitlines()
    assert calls[-2:] == ["-m pip install torch==2.13.0", "-m pip install -e ."]


def test_the_pytorch_index_is_named_when_it_was_used(project: Path):
    done = run(project, "up")
    assert done.returncode == 0, done.stderr
    assert "torch 2.13.0 came from PyTorch's CPU index (https://download.pytorch.org/whl/cpu)." in done.stdout
    assert "package index" not in done.stdout
