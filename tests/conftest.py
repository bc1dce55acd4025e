"""Shared test fixtures: the authors' tiny checkpoints live in ../shared/fixtures beside the checkout."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub

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
    # Nothing reaches the real model hub: a test that forgets to set one up fails fast on a closed port.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


@pytest.fixture
def hub_server(fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A model hub on 127.0.0.1: the tiny checkpoint as XiaoduoAILab/Xmodel_VLM (and its .bin copy as
    XiaoduoAILab/Xmodel_VLM_bin), the tiny CLIP as openai/clip-vit-large-patch14-336.

    HF_ENDPOINT points at it, and retries wait milliseconds instead of seconds.
    """
    from xvlm_core import hub

    server = FakeHub({
        "XiaoduoAILab/Xmodel_VLM": fixtures_dir / "xmodel-vlm-tiny",
        "XiaoduoAILab/Xmodel_VLM_bin": fixtures_dir / "xmodel-vlm-tiny-bin",
        "openai/clip-vit-large-patch14-336": fixtures_dir / "tiny-clip-vit-336",
    }).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(hub, "RETRY", hub.RetryPolicy(attempts=4, first_delay_s=0.01, max_delay_s=0.05))
    yield server
    server.stop()
