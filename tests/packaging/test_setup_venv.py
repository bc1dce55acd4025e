"""tools/setup-venv installs the tested versions of requirements/lock.txt, says in one line where torch came from,
and never shows pip's error for the index it skipped."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(FAKE_PYTHON)
    (bin_dir / "python").chmod(0o755)
    return tmp_path


def run(project: Path, torch_index: str, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(project / "tools" / "setup-venv"), *mode], capture_output=True, text=True,
                          timeout=30, check=False, env={"PATH": "/usr/bin:/bin", "FAKE_TORCH_INDEX": torch_index,
                               "TMPDIR": str(project)})


def test_an_unreachable_pytorch_index_is_one_line_and_no_pip_error(project: Path):
    done = run(project, "down")
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "ERROR" not in output
    assert "torch 2.13.0 comes from the package index instead." in output
    calls = (project / ".venv" / "bin" / "calls").read_text().splitlines()
    assert calls[-4:] == ["-m pip install torch==2.13.0",
                          "-m pip install --constraint requirements/lock.txt torch==2.13.0 -e .",
                          "-m pip install --constraint requirements/lock.txt torch==2.13.0 -e .[llamacpp]",
                          "-m app.qt_platform"]


def test_an_engine_that_cannot_be_compiled_leaves_the_app_installed(project: Path):
    python = project / ".venv" / "bin" / "python"
    no_compiler = '  *llamacpp*) echo "error: no CMAKE_CXX_COMPILER could be found"; exit 1 ;;\n'
    python.write_text(FAKE_PYTHON.replace('  *) echo', no_compiler + '  *) echo'))
    done = run(project, "up")
    assert done.returncode == 0, done.stderr
    assert "the llama.cpp engine could not be built" in done.stdout and "The app answers with PyTorch." in done.stdout
    assert "CMAKE_CXX_COMPILER" not in done.stdout + done.stderr  # pip's answer is in a file that the line names
    assert (project / ".venv" / "bin" / "calls").read_text().splitlines()[-1] == "-m app.qt_platform"


def test_the_pytorch_index_is_named_when_it_was_used(project: Path):
    done = run(project, "up")
    assert done.returncode == 0, done.stderr
    assert "torch 2.13.0 came from PyTorch's CPU index (https://download.pytorch.org/whl/cpu)." in done.stdout
    assert "package index" not in done.stdout


def test_the_tests_are_installed_at_the_locked_versions(project: Path):
    assert run(project, "up", "test").returncode == 0
    calls = (project / ".venv" / "bin" / "calls").read_text().splitlines()
    assert "-m pip install --constraint requirements/lock.txt torch==2.13.0 -e .[test]" in calls


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements" / "lock.txt").read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def test_every_dependency_and_extra_is_pinned_by_the_lock():
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    # The extras tools/lock resolves; the `vllm` extra pins its own tested release for an environment of its own.
    locked_extras = re.findall(r"--extra (\w+)", (ROOT / "tools" / "lock").read_text())
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(spec for name in locked_extras for spec in extras[name])]
    pins = locked()
    for spec in map(Requirement, wanted):  # grows while it runs, by the extras an extra takes
        name = canonicalize_name(spec.name)
        if name == canonicalize_name(project["name"]):  # an extra taking another (test takes llamacpp): its specs
            wanted += [inner for extra in spec.extras for inner in extras[extra]]
            continue
        assert name in pins, f"{spec.name} is not in requirements/lock.txt: run sh tools/lock"
        assert spec.specifier.contains(pins[name], prereleases=True), f"{spec} but the lock has {pins[name]}"


def test_the_lock_holds_what_holds_asks_and_never_kernels():
    pins = locked()
    assert pins["torch"] == "2.13.0"  # the CPU build setup-venv installs
    assert "kernels" not in pins  # loads code from the model hub at run time (requirements/holds.txt)


def test_ci_and_the_bundle_build_install_from_the_lock():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sh tools/setup-venv test && .venv/bin/python -m pytest" in ci
    assert re.search(r"pip install --constraint requirements/lock.txt .*\[build\]", ci)
