"""Fixtures for driving the app like a person: a running qasync loop, the tiny model, slow and fake sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import qasync

from app.model.worker import ModelWorker
from app.settings import Settings, SettingsFile
from app.ui.parts import build_parts
from app.ui.window import MainWindow
from xvlm_core.load_options import LoadOptions


@pytest.fixture(scope="session")
def event_loop(qapp) -> Iterator[asyncio.AbstractEventLoop]:
    """One qasync loop for the whole run, "already running" the way Qt's event loop is under pytest-qt."""
    loop = qasync.QEventLoop(qapp, already_running=True)
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-io")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    yield loop
    executor.shutdown(wait=True)


@pytest.fixture(autouse=True)
def _no_tasks_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "event_loop" in request.fixturenames:
        loop = request.getfixturevalue("event_loop")
        for task in asyncio.all_tasks(loop):
            task.cancel()


@pytest.fixture
def app_settings(tiny_tower_dir: Path) -> Settings:
    return Settings(vision_tower=str(tiny_tower_dir), dtype="float32", max_new_tokens=24)


@pytest.fixture
def make_window(qtbot, event_loop, tmp_path: Path, tiny_model_dir: Path, app_settings: Settings):
    """Build (and afterwards close) main windows; `start=True` finds and loads `model` as the app does."""
    windows: list[MainWindow] = []

    def make(worker: ModelWorker | None = None, settings: Settings | None = None, model: str | None = None,
             downloads=None, start: bool = True, settings_path: Path | None = None, history=None) -> MainWindow:
        window = MainWindow(build_parts(SettingsFile(settings_path or tmp_path / "settings.json"),
                                        settings or app_settings, worker=worker, downloads=downloads,
                                        history=history, log_dir=tmp_path / "logs"))
        windows.append(window)
        window.show()
        qtbot.waitExposed(window)
        if start:
            options = LoadOptions(str(tiny_model_dir) if model is None else model)
            window.start_task = asyncio.ensure_future(window.start(options))
        return window

    yield make
    for window in windows:
        window.close()
        assert not window.model_thread.thread.isRunning()
        window.deleteLater()
