"""Advice in the window is something a person can do there: a core error's code becomes a Settings button."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtWidgets import QDialog

from app.ui.settings_dialog import SettingsDialog


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
