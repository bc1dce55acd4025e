"""View > Theme: System / Light / Dark, applied at once to the whole window and its icons, and remembered."""

from __future__ import annotations

import json

import pytest
from fakes import FakeSession, fake_load
from PySide6.QtCore import QSize
from PySide6.QtGui import QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication
from test_window import ask, wait_answered

from app.model.worker import ModelWorker
from app.settings import SettingsFile


def icon_lightness(icon) -> int:
    """The lightness of the icon's strokes: its darkest or lightest opaque pixel, whichever differs from mid-grey."""
    image = icon.pixmap(QSize(24, 24)).toImage()
    values = [image.pixelColor(x, y).lightness() for x in range(image.width()) for y in range(image.height())
              if image.pixelColor(x, y).alpha() > 200]
    assert values, "the icon drew nothing"
    return max(values, key=lambda value: abs(value - 128))


def test_dark_then_light_then_system_recolours_the_window_and_its_icons_and_is_remembered(
        qtbot, make_window, tmp_path):
    system_window = QGuiApplication.palette().color(QPalette.ColorRole.Window).name()
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession(["hello"])))
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    copy_button = window.view.widgets[-1].copy_button

    window.theme_actions["dark"].trigger()
    QApplication.processEvents()
    assert QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 60
    assert window.view.palette().color(QPalette.ColorRole.Base).lightness() < 60
    assert icon_lightness(copy_button.icon()) > 180  # light strokes on the dark background
    assert icon_lightness(window.regenerate_action.icon()) > 180
    assert window.theme_actions["dark"].isChecked() and not window.theme_actions["system"].isChecked()
    assert json.loads((tmp_path / "settings.json").read_text())["theme"] == "dark"

    window.theme_actions["light"].trigger()
    QApplication.processEvents()
    assert QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() > 200
    assert icon_lightness(copy_button.icon()) < 80

    window.theme_actions["system"].trigger()
    assert QGuiApplication.palette().color(QPalette.ColorRole.Window).name() == system_window
    assert SettingsFile(tmp_path / "settings.json").load().theme == "system"


def test_the_chosen_theme_is_used_from_the_start(qtbot, make_window, app_settings, tmp_path):
    from dataclasses import replace

    window = make_window(settings=replace(app_settings, theme="dark"), start=False)
    try:
        assert QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 60
        assert window.theme_actions["dark"].isChecked()
    finally:
        window.set_theme("system")


def contrast(first, second) -> float:
    """WCAG's contrast ratio of two colours."""

    def luminance(colour) -> float:
        channels = [value / 255 for value in (colour.red(), colour.green(), colour.blue())]
        linear = [value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4 for value in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    lighter, darker = sorted((luminance(first), luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def test_a_field_to_type_in_shows_its_edge_on_the_welcome_card_in_both_themes(qtbot, make_window, app_settings):
    from dataclasses import replace

    from test_first_run import ScriptedDownloads

    for theme in ("light", "dark"):
        window = make_window(settings=replace(app_settings, model="", theme=theme), model="",
                             downloads=ScriptedDownloads())
        try:
            field = window.first_run.endpoint_edit
            qtbot.waitUntil(field.isVisible, timeout=5_000)
            image = window.first_run.card.grab().toImage()
            left = field.mapTo(window.first_run.card, field.rect().topLeft())
            middle = left.y() + field.height() // 2
            card = image.pixelColor(left.x() - 3, middle)
            edge = max((image.pixelColor(left.x() + offset, middle) for offset in range(3)),
                       key=lambda colour: contrast(colour, card))
            assert contrast(edge, card) >= 3.0, (theme, edge.name(), card.name())
        finally:
            window.set_theme("system")
            window.close()


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")  # the offscreen platform, a new window
def test_the_model_server_switch_shows_its_box_and_its_tick_in_both_themes(qtbot):
    from PySide6.QtWidgets import QGroupBox, QVBoxLayout, QWidget

    from app.theme import style_sheet, use_theme

    try:
        for theme in ("light", "dark"):
            use_theme(theme)
            accent = QGuiApplication.palette().color(QPalette.ColorRole.Highlight)
            holder = QWidget()
            qtbot.addWidget(holder)
            holder.setStyleSheet(style_sheet())
            layout = QVBoxLayout(holder)
            boxes = []
            for checked in (False, True):
                box = QGroupBox("Use a model server")
                box.setCheckable(True)
                box.setChecked(checked)
                layout.addWidget(box)
                boxes.append(box)
            holder.show()
            qtbot.waitExposed(holder)
            for box in boxes:
                image = box.grab().toImage()
                background = image.pixelColor(image.width() - 3, 3)  # the title's row, right of its text
                title = box.fontMetrics().height() + 2
                corner = [image.pixelColor(x, y) for x in range(20) for y in range(title)]  # the indicator
                assert max(contrast(colour, background) for colour in corner) >= 3.0, (theme, box.isChecked())
                if box.isChecked():  # a white tick on the highlight colour
                    assert any(colour == accent for colour in corner), theme
                    assert max(contrast(colour, accent) for colour in corner) >= 3.0, theme
                else:
                    assert not any(colour == accent for colour in corner), theme
    finally:
        use_theme("system")
