"""Core-test fixtures: a model hub on 127.0.0.1 serving the shared tiny checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hubserver import FakeHub

from xvlm_core import hub


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that forgets to set up a hub fails fast on a closed loopback port, never reaching the real one."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


@pytest.fixture
def hub_server(fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """The tiny checkpoint as XiaoduoAILab/Xmodel_VLM and the tiny CLIP as openai/clip-vit-large-patch14-336.

    HF_ENDPOINT points at it, and retries wait milliseconds instead of seconds.
    """
    server = FakeHub({
        "XiaoduoAILab/Xmodel_VLM": fixtures_dir / "xmodel-vlm-tiny",
        "XiaoduoAILab/Xmodel_VLM_bin": fixtures_dir / "xmodel-vlm-tiny-bin",
        "openai/clip-vit-large-patch14-336": fixtures_dir / "tiny-clip-vit-336",
    }).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(hub, "RETRY", hub.RetryPolicy(attempts=4, first_delay_s=0.01, max_delay_s=0.05))
    yield server
    server.stop()
