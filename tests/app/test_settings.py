"""Settings: one object in a JSON file, a dialog to edit it, a reload when the model or device changes."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import replace

import pytest
from fakes import FakeKeyring, FakeSession, fake_load
from fifo_guard import outcome_without_hanging
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPushButton
from test_open_with import window_recording_loads
from test_window import ask, wait_answered, wait_ready

from app.model.worker import ModelWorker
from app.settings import Settings, SettingsFile
from app.ui.parts import build_parts
from app.ui.settings_dialog import SettingsDialog
from app.ui.window import MainWindow


def test_settings_round_trip_and_survive_a_damaged_file(tmp_path):
    file = SettingsFile(tmp_path / "settings.json")
    assert file.load() == Settings()
    changed = replace(Settings(), device="cuda:1", temperature=0.7, max_new_tokens=300, system_prompt="Be brief.")
    file.save(changed)
    assert file.load() == changed
    (tmp_path / "settings.json").write_text('{"temperature": "hot", "top_p": 0.5, "unknown": 1')
    assert file.load() == Settings()
    (tmp_path / "settings.json").write_text('{"temperature": "hot", "top_p": 0.5, "max_new_tokens": 100}')
    assert file.load() == replace(Settings(), top_p=0.5, max_new_tokens=100)


def test_the_dialog_lists_the_workers_devices_and_edits_a_copy(qtbot):
    devices = [("auto", "Automatic"), ("cpu", "CPU"), ("cuda:0", "GPU 0: Test card")]
    dialog = SettingsDialog(Settings(device="cuda:0"), devices)
    qtbot.addWidget(dialog)
    assert [dialog.device_combo.itemData(i) for i in range(dialog.device_combo.count())] == ["auto", "cpu", "cuda:0"]
    assert dialog.device_combo.currentData() == "cuda:0"
    dialog.device_combo.setCurrentIndex(1)
    dialog.temperature_spin.setValue(0.8)
    dialog.system_edit.setPlainText("  Answer in French.  ")
    result = dialog.result_settings()
    assert (result.device, result.temperature, result.system_prompt) == ("cpu", 0.8, "Answer in French.")
    unknown = SettingsDialog(Settings(device="cuda:3"), devices)
    qtbot.addWidget(unknown)
    assert unknown.device_combo.currentData() == "cuda:3" and "not found" in unknown.device_combo.currentText()


def test_changing_the_device_reloads_in_the_background_and_sampling_applies_next(qtbot, make_window, tmp_path,
                                                                                monkeypatch):
    loads = []

    def load(request, on_stage):
        loads.append(request)
        return fake_load()(request, on_stage)

    session = FakeSession(["ok"])
    window = make_window(ModelWorker(load=load, session_factory=lambda loaded: session))
    wait_ready(qtbot, window)
    qtbot.waitUntil(lambda: bool(window.devices), timeout=10_000)
    assert window.devices[0] == ("auto", "Automatic") and ("cpu", "CPU") in window.devices

    def edit(dialog):
        dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
        dialog.max_tokens_spin.setValue(77)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", edit)
    window.settings_action.trigger()
    assert window.controller.phase.value == "loading"
    wait_ready(qtbot, window)
    assert [request.options.device for request in loads] == ["auto", "cpu"]
    assert json.loads((tmp_path / "settings.json").read_text())["device"] == "cpu"
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    assert window.controller.messages[-1].text == "ok"


def test_only_sampling_changes_do_not_reload(qtbot, make_window, monkeypatch):
    loads = []

    def load(request, on_stage):
        loads.append(request)
        return fake_load()(request, on_stage)

    window = make_window(ModelWorker(load=load, session_factory=lambda loaded: FakeSession()))
    wait_ready(qtbot, window)
    window.apply_settings(replace(window.settings, temperature=0.9))
    assert len(loads) == 1 and window.controller.settings.temperature == 0.9


def test_window_size_and_place_are_remembered(qtbot, make_window, tmp_path, app_settings):
    first = make_window(start=False)
    first.resize(700, 500)
    first.close()
    saved = SettingsFile(tmp_path / "settings.json").load()
    assert saved.window_geometry
    second = make_window(settings=saved, start=False)
    assert (second.width(), second.height()) == (700, 500)


@pytest.mark.parametrize(("quantize", "label"), [("int8", "8-bit weights"), ("int4", "4-bit weights")])
def test_choosing_quantized_weights_reloads_in_the_background_and_the_status_bar_says_so(
        qtbot, make_window, tmp_path, monkeypatch, quantize, label):
    loads = []

    def load(request, on_stage):
        loads.append(request)
        return fake_load()(request, on_stage)

    window = make_window(ModelWorker(load=load, session_factory=lambda loaded: FakeSession(["ok"])))
    wait_ready(qtbot, window)
    assert "bit" not in window.device_label.text()

    def edit(dialog):
        assert dialog.precision_combo.currentData() == "none"
        dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData(quantize))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", edit)
    window.settings_action.trigger()
    assert window.controller.phase.value == "loading"
    wait_ready(qtbot, window)
    assert [request.options.quantize for request in loads] == ["none", quantize]
    assert json.loads((tmp_path / "settings.json").read_text())["quantize"] == quantize
    assert window.device_label.text().endswith(f"· {label}")
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    assert window.controller.messages[-1].text == "ok"


def test_the_precision_choice_is_labelled_for_people(qtbot):
    dialog = SettingsDialog(Settings(quantize="int8"), [])
    qtbot.addWidget(dialog)
    labels = [dialog.precision_combo.itemText(i) for i in range(dialog.precision_combo.count())]
    assert labels[0].startswith("Exact") and "8-bit" in labels[1] and "may differ" in labels[1]
    assert "4-bit" in labels[2] and "may differ" in labels[2]
    assert dialog.result_settings().quantize == "int8"
    assert Settings().model_changed(Settings(quantize="int8"))


def test_the_engine_is_chosen_in_settings_and_reloads_on_it(qtbot, make_window, tmp_path, monkeypatch):
    window, loads = window_recording_loads(qtbot, make_window)
    assert "llama.cpp" not in window.device_label.text()

    def edit(dialog):
        assert dialog.engine_combo.currentData() == "auto"
        assert [dialog.engine_combo.itemData(i) for i in range(dialog.engine_combo.count())] == [
            "auto", "pytorch", "llama.cpp"]
        dialog.engine_combo.setCurrentIndex(dialog.engine_combo.findData("llama.cpp"))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", edit)
    window.settings_action.trigger()
    wait_ready(qtbot, window)
    assert [request.options.engine for request in loads] == ["auto", "llama.cpp"]
    assert json.loads((tmp_path / "settings.json").read_text())["engine"] == "llama.cpp"
    assert window.device_label.text().endswith("· llama.cpp")


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_on_a_short_screen_the_settings_fields_scroll_and_ok_stays_in_sight(qtbot):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.resize(560, 380)
    qtbot.waitUntil(lambda: dialog.height() == 380)
    ok = dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok)
    bottom = ok.mapTo(dialog, ok.rect().bottomLeft()).y()
    assert ok.isVisible() and bottom < dialog.height()
    assert dialog.fields_area.verticalScrollBar().maximum() > 0  # the rest of the fields scroll
    dialog.close()


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, showing a dialog
def test_the_settings_dialog_opens_tall_enough_to_show_every_field_where_the_screen_allows(qtbot):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    available = dialog.screen().availableGeometry()
    assert available.contains(dialog.geometry())
    scrolls = dialog.fields_area.verticalScrollBar().maximum() > 0
    assert not scrolls or dialog.height() >= available.height() - 40  # it scrolls only on a screen too short
    dialog.close()


def server_window_with_key_in_keyring(qtbot, make_window, monkeypatch) -> tuple:
    """A window answering through a server whose key is in the (fake) keyring; the load requests it made."""
    keyring = FakeKeyring()
    keyring.set_password("XVLM Chat", "http://gpu-box:8000/v1", "team-key")
    monkeypatch.setitem(sys.modules, "keyring", keyring)
    loads = []

    def load(request, on_stage):
        loads.append(request)
        return fake_load()(request, on_stage)

    window = make_window(ModelWorker(load=load, session_factory=lambda loaded: FakeSession()),
                         settings=Settings(use_server=True, server_url="gpu-box:8000"))
    wait_ready(qtbot, window)
    return window, keyring, loads


def test_ok_in_settings_with_the_key_in_the_keyring_does_not_reload(qtbot, make_window, monkeypatch):
    window, _keyring, loads = server_window_with_key_in_keyring(qtbot, make_window, monkeypatch)
    assert loads[-1].api_key == "team-key"
    monkeypatch.setattr(SettingsDialog, "exec", lambda dialog: QDialog.DialogCode.Accepted)
    window.settings_action.trigger()
    assert window.controller.phase.value == "ready" and len(loads) == 1
    # Server fields do not matter while the local model answers.
    window.apply_settings(replace(window.settings, use_server=False))
    wait_ready(qtbot, window)
    window.apply_settings(replace(window.settings, server_model="other"))
    assert window.controller.phase.value == "ready" and len(loads) == 2


def test_the_keyring_is_read_off_the_ui_thread_when_the_model_loads(qtbot, make_window, monkeypatch):
    _window, keyring, loads = server_window_with_key_in_keyring(qtbot, make_window, monkeypatch)
    assert loads[-1].api_key == "team-key"
    assert keyring.read_on and threading.main_thread() not in keyring.read_on


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_settings_file_that_is_a_fifo_gives_the_defaults_without_waiting(tmp_path):
    path = tmp_path / "settings.json"
    os.mkfifo(path)
    loaded, error = outcome_without_hanging(SettingsFile(path).load, [path])
    assert error is None and loaded == Settings()
    settings, problems = SettingsFile(path).load_checked()
    assert settings == Settings() and len(problems) == 1 and "not a regular file" in problems[0]()


def test_settings_nested_too_deeply_give_the_defaults_with_a_notice(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text("[" * 100_000)
    assert SettingsFile(path).load() == Settings()
    settings, problems = SettingsFile(path).load_checked()
    assert settings == Settings() and len(problems) == 1 and str(path) in problems[0]()


# (field, a value that type-checks but cannot be used)
UNUSABLE_VALUES = [("temperature", float("nan")), ("temperature", float("inf")), ("temperature", -0.5),
                   ("temperature", 7.0), ("top_p", 0.0), ("top_p", 1.5), ("max_new_tokens", -3),
                   ("max_new_tokens", 0), ("max_new_tokens", 10**30), ("dtype", "float8"), ("quantize", "int3"),
                   ("engine", "onnx"), ("theme", "neon"), ("language", "tlh"), ("model", "a\0b"),
                   ("system_prompt", "lone \ud800")]


@pytest.mark.parametrize(("field", "value"), UNUSABLE_VALUES)
def test_an_unusable_value_falls_back_to_its_default_and_says_so(qtbot, tmp_path, field, value):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"top_p": 0.5, "max_new_tokens": 100, field: value}))
    kept = {"top_p": 0.5, "max_new_tokens": 100}
    kept.pop(field, None)
    settings = SettingsFile(path).load()
    assert settings == replace(Settings(), **kept)
    settings.sampling()  # Enter can send: the sampling the settings give is valid
    dialog = SettingsDialog(settings, [])  # and the dialog opens on them, unchanged
    qtbot.addWidget(dialog)
    assert dialog.result_settings() == settings
    checked, problems = SettingsFile(path).load_checked()
    assert checked == settings
    assert len(problems) == 1 and f"“{field}”" in problems[0]() and str(getattr(Settings(), field)) in problems[0]()


def test_the_window_tells_which_settings_were_reset_and_opens_the_dialog(qtbot, event_loop, tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"temperature": float("nan"), "max_new_tokens": 10**30, "top_p": 0.5}))
    window = MainWindow(build_parts(SettingsFile(path), worker=ModelWorker(load=fake_load()),
                                    log_dir=tmp_path / "logs"))
    try:
        window.show()
        qtbot.waitExposed(window)
        notice = window.settings_notice
        assert notice.isVisible()
        assert "“temperature”" in notice.text.text() and "“max_new_tokens”" in notice.text.text()
        assert window.settings.top_p == 0.5
        opened = []
        monkeypatch.setattr(SettingsDialog, "exec", lambda dialog: opened.append(dialog) or QDialog.DialogCode.Rejected)
        notice.findChild(QPushButton).click()
        assert len(opened) == 1 and opened[0].max_tokens_spin.value() == Settings().max_new_tokens
    finally:
        window.close()
        window.deleteLater()
