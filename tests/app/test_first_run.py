"""First launch against a model hub on 127.0.0.1: what will be downloaded, download, pause, resume, or a folder."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QFileDialog, QWidget
from test_window import ask, wait_answered, wait_ready

from app.model.first_run import HubDownloads
from app.model.worker import ModelWorker
from app.settings import SettingsFile

WEIGHTS = "XiaoduoAILab/Xmodel_VLM/model.safetensors"


def wait_plan(qtbot, window) -> None:
    qtbot.waitUntil(lambda: window.first_run.download_button.isEnabled(), timeout=10_000)


def click(qtbot, button) -> None:
    assert button.isVisible() and button.isEnabled(), button.text()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_first_launch_shows_the_download_then_chats(qtbot, make_window, hub_server, app_settings, tmp_path):
    from xvlm_core import hub

    window = make_window(settings=replace(app_settings, model=""), model="")
    qtbot.waitUntil(lambda: window.first_run.isVisible())
    wait_plan(qtbot, window)
    page = window.first_run
    assert page.what_label.text().startswith("Xmodel-VLM: 8 files from ")
    assert "XiaoduoAILab/Xmodel_VLM" in page.what_label.text()
    assert page.size_label.text() == "17.6 MB"
    assert page.destination_label.text() == str(hub.default_cache_dir())
    assert page.free_label.text().endswith("GB")
    assert page.endpoint_edit.placeholderText().startswith(hub_server.url)  # where HF_ENDPOINT points

    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=20_000)
    wait_ready(qtbot, window)
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) is not None
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window)
    saved = json.loads((tmp_path / "settings.json").read_text())
    assert saved["download_started"] is False and saved["model"] == ""


def test_progress_shows_bytes_speed_and_eta_at_most_20_times_a_second(qtbot, make_window, hub_server, app_settings):
    hub_server.bytes_per_s = 9_000_000  # about two seconds for the tiny checkpoint
    window = make_window(settings=replace(app_settings, model=""), model="")
    wait_plan(qtbot, window)
    page = window.first_run
    texts: list[str] = []
    page.relay.progressed.connect(lambda _progress: texts.append(page.status_label.text()))
    started = time.monotonic()
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: "/s" in page.status_label.text() and "left" in page.status_label.text(), timeout=10_000)
    assert " of 17.6 MB" in page.status_label.text()
    assert page.progress.isVisible() and 0 <= page.progress.value() < 1000
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=20_000)
    elapsed = time.monotonic() - started
    assert elapsed > 1.0
    assert 5 <= len(texts) <= 20 * elapsed + 2  # each progress signal, as the page received it


def test_cancel_pauses_and_download_continues_where_it_stopped(qtbot, make_window, hub_server, app_settings):
    hub_server.bytes_per_s = 6_000_000
    window = make_window(settings=replace(app_settings, model=""), model="")
    wait_plan(qtbot, window)
    page = window.first_run
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: hub_server.served[WEIGHTS] > 4_000_000, timeout=10_000)
    click(qtbot, page.cancel_button)
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Paused"), timeout=5_000)
    assert page.download_button.isEnabled() and not page.cancel_button.isEnabled()
    assert page.download_button.text() == "&Resume"
    assert window.first_run.isVisible()

    hub_server.bytes_per_s = None
    hub_server.ranges.clear()
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=20_000)
    weights_requests = [start for name, start in hub_server.ranges if name == WEIGHTS and start > 8]
    assert weights_requests and weights_requests[0] > 2_000_000  # it went on from the bytes already here


def test_closing_mid_download_and_reopening_resumes_by_itself(qtbot, make_window, hub_server, app_settings, tmp_path):
    hub_server.bytes_per_s = 6_000_000
    first = make_window(settings=replace(app_settings, model=""), model="")
    wait_plan(qtbot, first)
    click(qtbot, first.first_run.download_button)
    qtbot.waitUntil(lambda: hub_server.served[WEIGHTS] > 3_000_000, timeout=10_000)
    first.close()
    assert SettingsFile(tmp_path / "settings.json").load().download_started

    hub_server.bytes_per_s = None
    hub_server.ranges.clear()
    second = make_window(settings=SettingsFile(tmp_path / "settings.json").load(), model="")
    qtbot.waitUntil(lambda: second.first_run.isVisible(), timeout=5_000)
    qtbot.waitUntil(lambda: second.chat_page.isVisible(), timeout=20_000)  # nobody pressed Download
    wait_ready(qtbot, second)
    weights_requests = [start for name, start in hub_server.ranges if name == WEIGHTS and start > 8]
    assert weights_requests and weights_requests[0] > 2_000_000  # it went on from the bytes already here
    assert not SettingsFile(tmp_path / "settings.json").load().download_started


def test_no_connection_says_so_and_retry_works_once_it_is_back(qtbot, make_window, hub_server, app_settings):
    hub_server.stop()
    window = make_window(settings=replace(app_settings, model=""), model="")
    page = window.first_run
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=10_000)
    message = page.error_note.headline.text()
    assert page.error_note.isVisible() and message and "Traceback" not in message
    assert not page.download_button.isEnabled()
    assert page.folder_button.isEnabled()
    hub_server.start()
    click(qtbot, page.retry_button)
    wait_plan(qtbot, window)
    assert page.size_label.text() == "17.6 MB"


def test_a_mirror_address_typed_on_the_page_is_used_and_remembered(
        qtbot, make_window, hub_server, app_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the default hub is unreachable
    window = make_window(settings=replace(app_settings, model=""), model="")
    page = window.first_run
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=10_000)
    page.endpoint_edit.setFocus()
    qtbot.keyClicks(page.endpoint_edit, hub_server.url)
    qtbot.keyClick(page.endpoint_edit, Qt.Key.Key_Return)
    wait_plan(qtbot, window)
    assert json.loads((tmp_path / "settings.json").read_text())["hub_endpoint"] == hub_server.url
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=20_000)


def test_use_a_folder_i_already_have(qtbot, make_window, app_settings, tiny_model_dir, tmp_path, monkeypatch):
    window = make_window(ModelWorker(), settings=replace(app_settings, model=""), model="")
    page = window.first_run
    qtbot.waitUntil(lambda: page.folder_button.isEnabled() and page.isVisible(), timeout=10_000)

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(empty))
    click(qtbot, page.folder_button)
    qtbot.waitUntil(lambda: page.error_note.isVisible(), timeout=5_000)  # the folder checked and refused
    assert str(empty) in page.error_note.details.text()
    assert page.isVisible()

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(tiny_model_dir))
    click(qtbot, page.folder_button)
    qtbot.waitUntil(lambda: window.chat_page.isVisible(), timeout=10_000)
    wait_ready(qtbot, window)
    assert SettingsFile(tmp_path / "settings.json").load().model == str(tiny_model_dir)


def test_a_model_named_on_the_command_line_that_is_cached_starts_offline(
        qtbot, make_window, hub_server, app_settings, monkeypatch):
    from xvlm_core import hub

    hub.download_model(hub.DEFAULT_MODEL)
    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    window = make_window(settings=replace(app_settings, model=""), model="XiaoduoAILab/Xmodel_VLM")
    wait_ready(qtbot, window)
    assert not window.first_run.isVisible()
    assert window.model_label.text() == "XiaoduoAILab/Xmodel_VLM"


def test_a_missing_folder_named_on_the_command_line_is_a_load_error_not_a_download(qtbot, make_window, tmp_path):
    window = make_window(model=str(Path(tmp_path) / "nowhere"))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=10_000)
    assert not window.first_run.isVisible()


def test_while_the_hub_does_not_answer_local_facts_show_and_cancel_works(
        qtbot, make_window, hub_server, app_settings, monkeypatch):
    from xvlm_core import hub

    monkeypatch.setattr(hub, "RETRY", hub.RetryPolicy(attempts=3, first_delay_s=0.4, max_delay_s=0.4))
    hub_server.stop()
    window = make_window(settings=replace(app_settings, model=""), model="")
    page = window.first_run
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Can't reach the model hub. Trying again"),
                    timeout=10_000)
    assert "Error" not in page.status_label.text() and "Errno" not in page.status_label.text()
    assert page.destination_label.text() == str(hub.default_cache_dir())
    assert page.free_label.text().endswith("GB")
    assert "Xmodel-VLM" in page.what_label.text()
    assert page.cancel_button.isEnabled() and page.folder_button.isEnabled()
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=10_000)  # retries spent: the hub's sentence
    assert "Trying again" not in page.status_label.text()


def test_cancel_while_the_hub_is_retrying_stops_asking_at_once(qtbot, make_window, hub_server, app_settings,
                                                               monkeypatch):
    from xvlm_core import hub

    monkeypatch.setattr(hub, "RETRY", hub.RetryPolicy(attempts=3, first_delay_s=3.0, max_delay_s=3.0))
    hub_server.stop()
    window = make_window(settings=replace(app_settings, model=""), model="")
    page = window.first_run
    qtbot.waitUntil(lambda: "Trying again in" in page.status_label.text(), timeout=10_000)
    click(qtbot, page.cancel_button)
    assert page.status_label.text().startswith("Stopped asking the model hub")
    assert page.retry_button.isVisible() and not page.cancel_button.isEnabled()
    assert page.size_label.text() == "Not known: the model hub has not said"
    hub_server.start()
    click(qtbot, page.retry_button)
    wait_plan(qtbot, window)
    assert page.size_label.text() == "17.6 MB"


def test_cancel_while_checking_stops_the_planning_itself(qtbot, make_window, hub_server, app_settings, monkeypatch):
    from xvlm_core.hub import plan as plan_module

    monkeypatch.setattr(plan_module, "MAX_PAGES", 10**6)  # only Cancel can end this listing
    hub_server.tree_pages = "onward"  # empty pages, each leading to another
    window = make_window(settings=replace(app_settings, model=""), model="")
    page = window.first_run

    def pages_asked() -> int:
        return sum("/tree/" in path for _, path, _ in list(hub_server.requests))

    qtbot.waitUntil(lambda: pages_asked() >= 3, timeout=10_000)
    click(qtbot, page.cancel_button)
    asked_at_cancel = pages_asked()
    assert page.status_label.text().startswith("Stopped asking the model hub")
    # The thread that asked for the pages ends, having asked at most for the page it was waiting on.
    qtbot.waitUntil(lambda: not any(thread.name == "hub-plan" for thread in threading.enumerate()), timeout=5_000)
    assert pages_asked() <= asked_at_cancel + 1


class ScriptedDownloads(HubDownloads):
    """The hub calls, answering as a test says: plan blocks, fails or answers; download reports and waits."""

    def __init__(self) -> None:
        self.plan_released = threading.Event()
        self.plan_error: Exception | None = None
        self.downloading = threading.Event()

    def destination(self) -> Path:
        return Path("/home/someone/.cache/huggingface/hub")

    def spec(self, name: str):
        from xvlm_core import hub

        return hub.DEFAULT_MODEL

    def installed_folder(self, spec):
        return None

    def plan(self, spec, endpoint, cancel, on_progress):
        self.plan_released.wait(30)
        if self.plan_error is not None:
            raise self.plan_error
        files = [SimpleNamespace(repo_id=repo.repo_id) for repo in spec.repos for _ in range(4)]
        return SimpleNamespace(spec=spec, files=files, total_bytes=2_043_000_000, missing_bytes=2_043_000_000,
                               destination=self.destination(), free_bytes=51_200_000_000, enough_space=True,
                               needed_bytes=2_243_000_000)

    def download(self, plan, on_progress, cancel, endpoint):
        from xvlm_core import hub

        on_progress(hub.DownloadProgress(700_000_000, plan.total_bytes, "model.safetensors", 12_500_000, 107.0))
        self.downloading.set()
        cancel.wait(30)
        raise hub.DownloadCancelled()


def clipped_widgets(page) -> list[str]:
    """Widgets on the card shown smaller than they ask to be (wrapped text: taller than its height)."""
    problems = []
    for widget in [page.card, *page.card.findChildren(QWidget)]:
        if not widget.isVisibleTo(page):
            continue
        size, hint = widget.size(), widget.sizeHint()
        if widget.hasHeightForWidth():
            fits = widget.heightForWidth(size.width()) <= size.height()
            fits = fits and widget.minimumSizeHint().width() <= size.width()
        else:
            fits = hint.width() <= size.width() and hint.height() <= size.height()
        if not fits:
            name = getattr(widget, "text", lambda: "")() or widget.objectName() or type(widget).__name__
            problems.append(f"{name}: {size.width()}x{size.height()} < hint {hint.width()}x{hint.height()}")
    viewport = page.scroll_area.viewport()
    right = page.card.mapTo(viewport, page.card.rect().bottomRight()).x()
    if right > viewport.width():
        problems.append(f"the card reaches {right} px, beyond the {viewport.width()} px page")
    return problems


def test_the_page_is_not_squashed_in_any_state_at_the_default_size_or_at_600x400(qtbot, make_window, app_settings):
    downloads = ScriptedDownloads()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    qtbot.waitUntil(lambda: page.isVisible() and page.status_label.text().startswith("Checking"), timeout=5_000)
    widths: set[int] = set()

    def check(state: str) -> None:
        for size in ((1100, 780), (600, 400)):
            window.resize(*size)
            qtbot.waitUntil(lambda size=size: (window.width(), window.height()) == size, timeout=5_000)
            QApplication.processEvents()
            assert clipped_widgets(page) == [], (state, size)
            if size == (1100, 780):
                widths.add(page.card.width())

    check("checking")
    assert page.cancel_button.isEnabled()
    downloads.plan_released.set()
    wait_plan(qtbot, window)
    check("ready")
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: "left" in page.status_label.text(), timeout=5_000)
    check("downloading")
    click(qtbot, page.cancel_button)
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Paused"), timeout=5_000)
    assert page.download_button.text() == "&Resume"
    check("cancelled")
    from xvlm_core import hub

    downloads.plan_error = hub.DownloadError("Cannot reach the model hub at huggingface.co (ConnectError, 6 tries). "
                                             "Check your connection and proxy settings, or use a mirror.",
                                             "unreachable")
    page.endpoint_edit.setText("https://hf-mirror.com")
    page.endpoint_edit.editingFinished.emit()
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=5_000)
    check("failed")
    assert len(widths) == 1  # the card keeps its width from state to state


def test_a_wait_to_retry_mid_download_is_a_progress_event_with_a_countdown(qtbot, make_window, app_settings):
    from xvlm_core import hub

    downloads = ScriptedDownloads()
    downloads.plan_released.set()
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    wait_plan(qtbot, window)
    click(qtbot, page.download_button)
    qtbot.waitUntil(lambda: downloads.downloading.is_set() and page.progress.value() > 0, timeout=5_000)
    total = 2_043_000_000

    # as the hub calls it, from its thread: the connection dropped, the next try in 3 s
    page.relay(hub.DownloadProgress(700_000_000, total, "model.safetensors", 0.0, None, retry_in_s=3.0))
    qtbot.waitUntil(lambda: page.status_label.text().startswith("Can't reach the model hub. Trying again in 3 s"),
                    timeout=5_000)
    assert page.cancel_button.isEnabled()
    page.relay(hub.DownloadProgress(total, total, "model.safetensors", 12_500_000, 0.0))  # bytes arrive again
    qtbot.waitUntil(lambda: page.status_label.text().startswith("2.0 GB of 2.0 GB"), timeout=5_000)
    click(qtbot, page.cancel_button)
