"""The composition root: the app's objects that are not widgets, made and wired in one place.

app/main.py (and the tests) call `build_parts` and hand the result to `MainWindow`, which only lays out widgets
and connects their signals to these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.chat.controller import ChatController
from app.history.service import History
from app.model.first_run import HubDownloads
from app.model.worker import ModelThread, ModelWorker
from app.settings import AppSettings, Settings, SettingsFile


@dataclass(frozen=True)
class Parts:
    """What the window works with: the chats on disk, the settings, the hub, the chat's logic and the model thread."""

    history: History
    app_settings: AppSettings
    downloads: HubDownloads
    controller: ChatController
    worker: ModelWorker
    model_thread: ModelThread  # not started: the window starts it once start-up begins
    log_dir: Path | None  # Help > Open Log Folder; None when nothing is logged to a file


def build_parts(settings_file: SettingsFile, settings: Settings | None = None, *, worker: ModelWorker | None = None,
                downloads: HubDownloads | None = None, history: History | None = None,
                log_dir: Path | None = None) -> Parts:
    """Make the parts the window needs; given ones (a test's fake worker, a history opened elsewhere) are used as
    they are. `settings` replaces what `settings_file` holds."""
    history = history if history is not None else History()
    app_settings = AppSettings(settings_file, settings)
    controller = ChatController(app_settings, history)
    worker = worker or ModelWorker()
    model_thread = ModelThread(worker)
    controller.connect_worker(worker)
    return Parts(history=history, app_settings=app_settings, downloads=downloads or HubDownloads(),
                 controller=controller, worker=worker, model_thread=model_thread, log_dir=log_dir)
