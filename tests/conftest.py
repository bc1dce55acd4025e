"""Shared test fixtures: the authors' tiny checkpoints live in ../shared/fixtures beside the checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Tests never reach the real hub; anything that tries fails fast instead of hanging.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = (PROJECT_ROOT.parent / "shared" / "fixtures").resolve()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing: expected them at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "xmodel-vlm-tiny"


@pytest.fixture(scope="session")
def tiny_model_bin_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "xmodel-vlm-tiny-bin"


@pytest.fixture(scope="session")
def tiny_tower_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "tiny-clip-vit-336"


@pytest.fixture(scope="session")
def images_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "images"


@pytest.fixture(scope="session")
def golden(fixtures_dir: Path) -> dict:
    return json.loads((fixtures_dir / "golden_visible.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own hub cache, data, config and log folders: nothing touches the real ones."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home
