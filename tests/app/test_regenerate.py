"""Regenerate gives another answer: at the default temperature 0 it samples, with a new seed; asking stays greedy."""

from __future__ import annotations

from dataclasses import replace

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from test_window import ask, wait_answered

from app.chat.controller import REGENERATE_TEMPERATURE, REGENERATE_TOP_P
from app.chat.conversation_view import regenerate_tooltip
from app.model.worker import ModelWorker
from xvlm_core.sampling import SamplingSettings


class SettingsRecorder(FakeSession):
    """A fake session that also records the sampling settings of each answer."""

    def __init__(self) -> None:
        super().__init__(["an ", "answer"])
        self.settings: list = []

    def answer(self, messages, settings, system, cancel):
        self.settings.append(settings)
        return super().answer(messages, settings, system, cancel)


def window_with(make_window, app_settings, temperature: float) -> tuple:
    session = SettingsRecorder()
    worker = ModelWorker(load=fake_load(), session_factory=lambda _loaded: session)
    return make_window(worker, settings=replace(app_settings, temperature=temperature)), session


def test_regenerate_at_temperature_0_samples_with_a_new_seed_and_says_so(qtbot, make_window, app_settings):
    window, session = window_with(make_window, app_settings, 0.0)
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    button = window.view.widgets[-1].regenerate_button
    assert f"temperature {REGENERATE_TEMPERATURE:g}" in button.toolTip() and "new seed" in button.toolTip()

    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    wait_answered(qtbot, window)
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    ask(qtbot, window, "And then?")
    wait_answered(qtbot, window)

    first, regenerated, again, follow_up = session.settings
    assert first.greedy and first.seed is None
    assert (regenerated.temperature, regenerated.top_p) == (REGENERATE_TEMPERATURE, REGENERATE_TOP_P)
    assert regenerated.seed is not None and again.seed is not None and regenerated.seed != again.seed
    assert follow_up.greedy and follow_up.seed is None  # a normal answer is greedy again


def test_regenerate_keeps_a_chosen_temperature(qtbot, make_window, app_settings):
    window, session = window_with(make_window, app_settings, 1.2)
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    assert "temperature 1.2 " in window.view.widgets[-1].regenerate_button.toolTip()
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    assert [(settings.temperature, settings.top_p) for settings in session.settings] == [(1.2, 1.0), (1.2, 1.0)]
    assert session.settings[1].seed is not None


def test_the_regenerate_tooltip_calls_a_tiny_temperature_greedy_as_the_sampler_does():
    tiny = SamplingSettings(temperature=1e-9)
    assert tiny.greedy
    assert regenerate_tooltip(tiny) == regenerate_tooltip(SamplingSettings(temperature=0.0))
