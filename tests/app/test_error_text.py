"""The window says a core error by its code: a translated headline, the model stack's English details, and the
setting that fixes it; the first-run page says the hub's errors the same way."""

from __future__ import annotations

from dataclasses import replace

from fakes import FakeSession, fake_load
from test_first_run import ScriptedDownloads
from test_i18n import CLOSE, OPEN, pseudo  # noqa: F401 (pseudo is a fixture)
from test_window import ask, wait_ready

from app.error_text import HEADLINES, SETTINGS, error_text
from app.model.worker import ModelWorker
from app.ui.window import SETTING_BUTTONS
from xvlm_core.errors import Problem, Remedy
from xvlm_core.hub import DownloadError

UNREACHABLE = ("Cannot reach the model hub at 127.0.0.1:9 (ConnectError: [Errno 111] Connection refused, 6 tries). "
               "Check your connection and proxy settings, or use a mirror (HF_ENDPOINT).")


def test_every_code_but_none_has_a_headline_and_each_setting_a_button():
    assert set(HEADLINES) == set(Remedy) - {Remedy.NONE}
    assert set(SETTINGS.values()) <= set(SETTING_BUTTONS)
    assert error_text(Problem(Remedy.NONE, "What happened.")) == error_text(Problem(Remedy.NONE, "What happened."))
    assert error_text(Problem(Remedy.NONE, "What happened.")).sentence() == "What happened."


def test_the_headline_is_translated_and_the_details_are_kept(pseudo):  # noqa: F811
    text = error_text(Problem(Remedy.CHOOSE_VISION_TOWER, "/towers/clip: no such folder."))
    assert text.headline.startswith(OPEN) and text.headline.endswith(CLOSE) and "Vision tower" in text.headline
    assert text.details == "/towers/clip: no such folder." and text.setting == "vision_tower"
    assert text.sentence("\n") == f"{text.headline}\n/towers/clip: no such folder."


def test_a_missing_tower_s_banner_has_a_translated_headline_the_details_and_the_tower_s_button(
        qtbot, pseudo, make_window, app_settings, tmp_path):  # noqa: F811
    missing = tmp_path / "no-tower-here"
    window = make_window(settings=replace(app_settings, vision_tower=str(missing)))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    headline = error_text(Problem(Remedy.CHOOSE_VISION_TOWER, "")).headline
    assert headline.startswith(OPEN)
    assert f"{headline}<br>{missing}: no such folder." in window.banner.text.text()
    buttons = [window.banner.buttons.itemAt(index).widget().text() for index in range(window.banner.buttons.count())]
    assert buttons[0] == f"{OPEN}Choose Vision Tower…{CLOSE}"


class _OutOfMemorySession(FakeSession):
    def answer(self, messages, settings, system, cancel):
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_an_answer_out_of_memory_says_what_to_do_under_it(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda loaded: _OutOfMemorySession()))
    wait_ready(qtbot, window)
    ask(qtbot, window, "Describe it")
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=5_000)
    error = window.view.widgets[-1].footer.text()  # the line under the failed answer, as a person reads it
    assert error == (f"{error_text(Problem(Remedy.FREE_MEMORY, '')).headline} The model ran out of memory "
                     "(OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB).")
    assert window.controller.messages[-1].stats.error_code == Remedy.FREE_MEMORY.value
    assert "8-bit weights" in error


def test_a_hub_network_error_on_the_first_run_page_has_a_translated_headline_and_the_english_details(
        qtbot, pseudo, make_window, app_settings):  # noqa: F811
    downloads = ScriptedDownloads()
    downloads.plan_error = DownloadError(UNREACHABLE, "unreachable")
    window = make_window(settings=replace(app_settings, model=""), model="", downloads=downloads)
    page = window.first_run
    qtbot.waitUntil(lambda: page.isVisible(), timeout=5_000)
    downloads.plan_released.set()
    qtbot.waitUntil(lambda: page.retry_button.isVisible(), timeout=5_000)
    headline = error_text(Problem(Remedy.CHECK_NETWORK, "")).headline
    assert headline.startswith(OPEN) and "cannot be reached" in headline
    assert page.error_note.headline.text() == headline and page.error_note.details.text() == UNREACHABLE
