"""Advice in the window is something a person can do there: the core's command-line options become Settings."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from pathlib import Path

from PySide6.QtWidgets import QDialog

from app.advice import FLAG_SETTINGS, window_advice
from app.settings_dialog import SettingsDialog

PROJECT = Path(__file__).resolve().parents[2]


def test_the_core_s_vision_tower_advice_becomes_the_setting():
    unknown = window_advice("The checkpoint embeds a vision tower but names 'x', whose shape is unknown; "
                            "pass its folder with --vision-tower.")
    assert unknown.text.endswith("whose shape is unknown; choose its folder in Settings › Vision tower.")
    assert unknown.setting == "vision_tower"
    missing = window_advice("/towers/clip: no such folder. Or pass --vision-tower with its folder.")
    assert missing.text == "/towers/clip: no such folder. Or choose its folder in Settings › Vision tower."
    assert missing.setting == "vision_tower"


def test_a_download_command_becomes_a_folder_in_settings():
    advice = window_advice("The vision tower 'openai/clip' is not downloaded yet (or its download is incomplete); "
                           "run: xvlm download openai/clip")
    assert "xvlm" not in advice.text and advice.setting == "vision_tower"
    assert advice.text.endswith("; choose a folder that holds the vision tower in Settings › Vision tower")
    assert window_advice("The model 'org/m' is not downloaded yet; run: xvlm download org/m").setting == "model"


def test_a_message_without_command_line_advice_is_left_alone():
    text = "/models/x/config.json: not an Xmodel-VLM config (model_type 'llama')."
    assert window_advice(text).text == text and window_advice(text).setting == ""


# Their messages reach a terminal or an HTTP client, never the window.
NOT_SHOWN_IN_THE_WINDOW = ("cli.py", "bench.py", "bench_baseline.py", "__main__.py", "openai_compat/server.py",
                           "openai_compat/protocol.py", "openai_compat/images.py")


def _core_flags() -> set[str]:
    """Every --option named in a string of xvlm_core that can end up in the window's errors."""
    flags: set[str] = set()
    for path in (PROJECT / "xvlm_core").rglob("*.py"):
        where = path.relative_to(PROJECT / "xvlm_core").as_posix()
        if where in NOT_SHOWN_IN_THE_WINDOW or "vllm_plugin" in path.parts:  # vLLM's plugin runs in vLLM
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                flags.update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value))
    return flags


def test_every_option_the_core_s_messages_name_has_a_place_in_the_window():
    assert "--vision-tower" in _core_flags()  # the scan finds what it looks for
    assert _core_flags() <= set(FLAG_SETTINGS)


def test_a_missing_vision_tower_offers_its_setting_on_the_banner(qtbot, make_window, app_settings, tmp_path,
                                                                 monkeypatch):
    missing = tmp_path / "no-tower-here"
    window = make_window(settings=replace(app_settings, vision_tower=str(missing)))
    qtbot.waitUntil(lambda: window.banner.isVisible(), timeout=20_000)
    text = window.banner.text.text()
    assert str(missing) in text and "Settings › Vision tower" in text and "--" not in text
    buttons = [window.banner.buttons.itemAt(index).widget() for index in range(window.banner.buttons.count())]
    assert [button.text() for button in buttons] == ["Choose Vision Tower…", "Retry", "Open Log Folder"]

    opened = []

    def edit(dialog):
        opened.append((dialog.focusWidget() is dialog.tower_edit, dialog.tower_edit.selectedText()))
        return QDialog.DialogCode.Rejected

    monkeypatch.setattr(SettingsDialog, "exec", edit)
    buttons[0].click()
    assert opened == [(True, str(missing))]

    assert window.controller.send("Hello?")  # a question asked anyway says the same, in the window's words
    qtbot.waitUntil(lambda: not window.controller.busy, timeout=5000)
    footer = window.view.widgets[-1].footer.text()
    assert "No model is loaded" in footer and "Settings › Vision tower" in footer and "--" not in footer
