"""The window answering from a model server (`xvlm serve` on the tiny checkpoint), driven as a person would."""

from __future__ import annotations

import json
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FakeKeyring, SilentServer
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog
from serving import ServedModel, wait_for, xvlm_serve
from test_window import ask, core_answer, drop_files, wait_answered, wait_image_checked

from app.history.records import Status
from app.model.remote_model import api_key
from app.settings import Settings
from app.ui.settings_dialog import SettingsDialog

API_KEY = "team-key-5678"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, tiny_tower_dir) -> Iterator[ServedModel]:
    with xvlm_serve(tmp_path_factory.mktemp("serve"), tiny_model_dir, tiny_tower_dir, "--api-key", API_KEY) as server:
        yield server


@pytest.fixture
def remote_settings(served: ServedModel) -> Settings:
    return Settings(use_server=True, server_url=served.url, server_api_key=API_KEY, max_new_tokens=24)


def test_the_chat_streams_from_the_server_as_from_the_local_model(
        qtbot, make_window, served, remote_settings, images_dir, tiny_model_dir, tiny_tower_dir):
    window = make_window(settings=remote_settings)
    qtbot.waitUntil(lambda: served.url in window.device_label.text(), timeout=20_000)
    assert window.model_label.text() == "xmodel-vlm-tiny"
    image = images_dir / "gradient_square.png"
    assert drop_files(window, image)
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "What is in this picture?")
    wait_answered(qtbot, window)
    first = window.controller.messages[-1].text
    assert first == core_answer(tiny_model_dir, tiny_tower_dir, [("user", "What is in this picture?", [str(image)])])
    assert "to first token" in window.view.widgets[-1].footer.text()

    ask(qtbot, window, "And the colours?")
    wait_answered(qtbot, window)
    expected = core_answer(tiny_model_dir, tiny_tower_dir, [
        ("user", "What is in this picture?", [str(image)]), ("assistant", first, []), ("user", "And the colours?", [])])
    assert window.controller.messages[-1].text == expected
    # The whole conversation went to the server again, which answered it from its cache.
    wait_for(lambda: len([line for line in served.log_lines() if "POST /v1/chat/completions 200" in line]) >= 2,
             "the server's log lines")
    last = [line for line in served.log_lines() if "POST /v1/chat/completions 200" in line][-1]
    assert int(re.search(r"cached=(\d+)", last).group(1)) > 144


def test_stop_closes_the_stream_and_the_server_stops(qtbot, make_window, served, remote_settings):
    window = make_window(settings=replace(remote_settings, max_new_tokens=3500))
    qtbot.waitUntil(lambda: served.url in window.device_label.text(), timeout=20_000)
    ask(qtbot, window, "Tell me everything.")
    qtbot.waitUntil(lambda: len(window.controller.messages[-1].text) > 20, timeout=20_000)
    qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
    wait_answered(qtbot, window, Status.STOPPED)
    wait_for(lambda: any("finish=cancelled" in line for line in served.log_lines()), "the server to stop")


def test_a_wrong_key_shows_a_banner_that_says_what_to_do(qtbot, make_window, remote_settings):
    window = make_window(settings=replace(remote_settings, server_api_key="wrong"))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "refused the API key" in window.banner.text.text()
    assert "Settings" in window.banner.text.text()
    ask(qtbot, window, "Hello?")
    wait_answered(qtbot, window, Status.FAILED)


def test_an_unreachable_server_shows_a_banner(qtbot, make_window, remote_settings):
    window = make_window(settings=replace(remote_settings, server_url="127.0.0.1:9"))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    assert "Cannot reach the model server at http://127.0.0.1:9/v1" in window.banner.text.text()
    assert "Traceback" not in window.banner.text.text()


def test_settings_pick_the_model_from_the_servers_list(qtbot, event_loop, served):
    dialog = SettingsDialog(Settings(), [])
    qtbot.addWidget(dialog)
    box = dialog.server_box
    box.setChecked(True)
    qtbot.keyClicks(box.address_edit, served.url)
    qtbot.keyClicks(box.key_edit, API_KEY)
    qtbot.mouseClick(box.fetch_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: box.model_combo.count() == 1, timeout=20_000)
    assert [box.model_combo.itemText(i) for i in range(box.model_combo.count())] == ["xmodel-vlm-tiny"]
    chosen = dialog.result_settings()
    assert (chosen.use_server, chosen.server_url, chosen.server_model, chosen.server_api_key) == (
        True, served.url, "xmodel-vlm-tiny", API_KEY)


@pytest.mark.parametrize("with_keyring", [True, False])
def test_the_api_key_goes_to_the_keyring_when_there_is_one(
        qtbot, make_window, monkeypatch, tmp_path, served, with_keyring):
    keyring = FakeKeyring()
    monkeypatch.setitem(sys.modules, "keyring", keyring if with_keyring else None)
    window = make_window(settings=Settings())
    window.apply_settings(Settings(use_server=True, server_url=served.url, server_api_key=API_KEY))
    qtbot.waitUntil(lambda: served.url in window.device_label.text(), timeout=20_000)
    saved = json.loads(Path(tmp_path / "settings.json").read_text(encoding="utf-8"))
    if with_keyring:
        assert saved["server_api_key"] == ""
        assert keyring.saved == {("XVLM Chat", served.url): API_KEY}
    else:
        assert saved["server_api_key"] == API_KEY


def test_emptying_the_key_box_removes_the_key_from_the_keyring(qtbot, make_window, monkeypatch, served):
    keyring = FakeKeyring()
    keyring.set_password("XVLM Chat", served.url, API_KEY)
    monkeypatch.setitem(sys.modules, "keyring", keyring)
    window = make_window(settings=Settings(use_server=True, server_url=served.url))
    qtbot.waitUntil(lambda: served.url in window.device_label.text(), timeout=20_000)

    def empty_the_key(dialog):
        dialog.server_box.key_edit.clear()
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", empty_the_key)
    window.settings_action.trigger()
    assert keyring.saved == {}
    assert api_key(window.settings) == ""


def test_without_a_keyring_only_the_owner_can_read_a_saved_key(make_window, monkeypatch, tmp_path, served):
    monkeypatch.setitem(sys.modules, "keyring", None)
    window = make_window(settings=Settings(), start=False)
    window.apply_settings(Settings(use_server=True, server_url=served.url, server_api_key=API_KEY))
    assert stat.S_IMODE((tmp_path / "settings.json").stat().st_mode) == 0o600


def test_stop_ends_an_answer_the_server_is_silent_on(qtbot, make_window):
    with SilentServer() as server:
        window = make_window(settings=Settings(use_server=True, server_url=server.url))
        qtbot.waitUntil(lambda: server.url in window.device_label.text(), timeout=20_000)
        ask(qtbot, window, "Hello?")
        qtbot.waitUntil(lambda: server.requests == 1, timeout=20_000)
        qtbot.mouseClick(window.composer.send_button, Qt.MouseButton.LeftButton)
        # far less than the read timeout: the answer ends because Stop closed the connection
        wait_answered(qtbot, window, Status.STOPPED)
        assert "Cannot reach" not in window.view.widgets[-1].footer.text()


def test_fetching_the_models_leaves_the_dialog_usable_while_the_server_thinks(qtbot, event_loop):
    with SilentServer(hold_lists=True) as server:
        dialog = SettingsDialog(Settings(), [])
        qtbot.addWidget(dialog)
        box = dialog.server_box
        box.setChecked(True)
        qtbot.keyClicks(box.address_edit, server.url)
        qtbot.mouseClick(box.fetch_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: server.lists == 1, timeout=20_000)
        # the click has returned while the server still holds the request: the dialog waits without freezing
        assert not box.fetch_button.isEnabled() and box.model_combo.count() == 0
        server.released.set()
        qtbot.waitUntil(lambda: box.model_combo.count() == 1, timeout=20_000)
        assert box.model_combo.currentText() == "silent-model" and box.fetch_button.isEnabled()
        assert box.status_label.text() == "The server offers 1 model."
