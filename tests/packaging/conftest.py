"""Packaging-test fixtures: packaging/'s modules on sys.path, and the built app when there is one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# packaging/ is no package (the `packaging` library owns the name): its modules are imported by file name.
sys.path.insert(0, str(PROJECT_ROOT / "packaging"))

import bundle  # noqa: E402

FROZEN_FOLDER = PROJECT_ROOT / "dist" / bundle.APP_NAME


@pytest.fixture(scope="session")
def frozen_app() -> Path:
    """The folder `python packaging/build.py` made; CI builds it after the unit tests, then runs these again."""
    gui = bundle.program(FROZEN_FOLDER, bundle.GUI_NAME)
    if not gui.is_file():
        pytest.skip(f"no frozen build at {gui}: run `python packaging/build.py` first (CI does, then reruns "
                    "tests/packaging)")
    return FROZEN_FOLDER
