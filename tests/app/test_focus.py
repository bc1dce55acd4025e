"""Focus you can see: every control reached with Tab is outlined in the highlight colour, in both themes; a
picture's ring stays visible on a picture of that very colour; Tab follows the reading order of a message."""

from __future__ import annotations

import pytest
from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication, QWidget
from test_keyboard import answer, history_window
from test_window import drop_files, wait_image_checked

from app.model.worker import ModelWorker
from app.theme import muted_colour, palette_for
from xvlm_core.messages import ImageRef


def relative_luminance(colour: QColor) -> float:
    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast(first: QColor, second: QColor) -> float:
    """The WCAG contrast ratio of two colours (1 to 21)."""
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def focus_with_tab(qtbot, window, target: QWidget) -> None:
    """Tab from the message box until `target` has the focus, as a person would."""
    window.composer.input.setFocus()
    for _ in range(80):
        if QApplication.focusWidget() is target:
            return
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
    raise AssertionError(f"Tab never reached {target.accessibleName() or type(target).__name__}")


def outline_pixels(widget: QWidget, colour: QColor) -> int:
    """How many pixels of `widget`'s one-pixel frame at its edges are `colour`: an outline, not a fill."""
    image = widget.grab().toImage()
    width, height = image.width(), image.height()
    edge = [(x, y) for x in range(width) for y in (1, height - 2)] + \
           [(x, y) for y in range(height) for x in (1, width - 2)]
    return sum(1 for x, y in edge if image.pixelColor(x, y) == colour)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_control_is_outlined_in_the_highlight_colour_when_it_has_the_focus(qtbot, make_window, tmp_path,
                                                                                 images_dir, theme):
    long_answer = "\n".join(f"Line {number} of a long answer." for number in range(60))
    window = history_window(make_window, tmp_path, [long_answer])
    window.set_theme(theme)
    answer(qtbot, window, "Hi", (ImageRef.from_file(images_dir / "gradient_square.png"),))
    assert drop_files(window, images_dir / "shapes_wide.png")
    wait_image_checked(qtbot, window)
    qtbot.wait(50)
    highlight = window.palette().color(QPalette.ColorRole.Highlight)
    question, reply = window.view.widgets
    controls = {"attach": window.composer.attach_button, "remove image": window.composer.chips[0].remove_button,
                "picture": question.thumbnails[0], "edit": question.edit_button, "copy question": question.copy_button,
                "show more": reply.more_button, "copy answer": reply.copy_button,
                "regenerate": reply.regenerate_button}
    unmarked = []
    for name, control in controls.items():
        window.view.ensureWidgetVisible(control)
        focus_with_tab(qtbot, window, control)
        if outline_pixels(control, highlight) < control.width():  # at least half of its top and bottom edges
            unmarked.append(name)
    assert unmarked == []


def test_a_pictures_focus_ring_shows_on_a_picture_of_the_highlight_colour(qtbot, make_window, tmp_path):
    window = history_window(make_window, tmp_path)
    window.set_theme("light")
    highlight = window.palette().color(QPalette.ColorRole.Highlight)
    picture = QImage(200, 200, QImage.Format.Format_RGB32)
    picture.fill(highlight)
    picture.save(str(tmp_path / "blue.png"))
    answer(qtbot, window, "What is this?", (ImageRef.from_file(tmp_path / "blue.png"),))
    thumbnail = window.view.widgets[0].thumbnails[0]
    focus_with_tab(qtbot, window, thumbnail)
    image = thumbnail.grab().toImage()
    middle = image.height() // 2
    # From the left edge to the picture: the ring, then something that sets it apart from a blue picture.
    ring = [image.pixelColor(x, middle) for x in range(image.width() // 4)]
    inside = ring[ring.index(highlight):]
    assert inside and max(contrast(colour, highlight) for colour in inside) >= 3


def test_tab_reads_a_message_in_order_picture_text_then_its_buttons(qtbot, make_window, tmp_path, images_dir):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession(["An answer."])))
    answer(qtbot, window, "Hi", (ImageRef.from_file(images_dir / "gradient_square.png"),))
    qtbot.wait(50)
    question, reply = window.view.widgets
    expected = [question.thumbnails[0], question.copy_button, question.edit_button, reply.body, reply.copy_button,
                reply.regenerate_button]
    focus_with_tab(qtbot, window, expected[0])
    reached = [QApplication.focusWidget()]
    for _ in expected[1:]:
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        reached.append(QApplication.focusWidget())
    names = [f"{type(widget).__name__} '{widget.accessibleName()}'" for widget in reached]
    assert reached == expected, names


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_secondary_text_is_readable_at_its_small_size(theme):
    palette = palette_for(theme)
    base = palette.color(QPalette.ColorRole.Base)
    assert contrast(muted_colour(palette), base) >= 4.5  # WCAG AA for small text (timings are 8.5 pt)
