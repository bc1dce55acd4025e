"""A chat that outgrows the model's context: the answer says which messages were left out, and they are dimmed."""

from __future__ import annotations

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from test_window import ask, wait_answered

from app.model.worker import ModelWorker


class ForgetfulSession(FakeSession):
    """Answers like FakeSession; from the third question on, its stats say the first two messages were left out."""

    def answer(self, messages, settings, system, cancel):
        answer = super().answer(messages, settings, system, cancel)
        if len(messages) >= 5:
            answer.result.stats.values["dropped_messages"] = 2
        return answer


def test_left_out_messages_are_told_above_the_answer_and_dimmed(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: ForgetfulSession(["ok"])))
    for question in ("First question", "Second question", "Third question"):
        ask(qtbot, window, question)
        wait_answered(qtbot, window)

    widgets = window.view.widgets
    assert [widget.context_notice.isVisible() for widget in widgets] == [False] * 5 + [True]
    assert widgets[-1].context_notice.text() == "The first 2 messages no longer fit and were left out."
    assert [widget.unseen for widget in widgets] == [True, True, False, False, False, False]
    role = QPalette.ColorRole.WindowText
    dimmed, plain = widgets[0].label.palette().color(role), widgets[2].label.palette().color(role)
    assert dimmed != plain
    answer_role = QPalette.ColorRole.Text
    assert widgets[1].body.palette().color(answer_role) != widgets[3].body.palette().color(answer_role)
    assert "no longer sees" in widgets[0].toolTip()


def test_a_reopened_chat_still_shows_what_was_left_out(qtbot, make_window, tmp_path):
    from app.history.service import open_history

    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: ForgetfulSession(["ok"])),
                         history=open_history(tmp_path / "chats.sqlite3"))
    for question in ("First question", "Second question", "Third question"):
        ask(qtbot, window, question)
        wait_answered(qtbot, window)
    chat_id = window.controller.chat_id
    window.new_chat()
    window.open_chat(chat_id)
    assert window.view.widgets[-1].context_notice.text() == "The first 2 messages no longer fit and were left out."
    assert [widget.unseen for widget in window.view.widgets] == [True, True, False, False, False, False]


def test_a_short_chat_has_no_notice(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession(["ok"])))
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    assert not window.view.widgets[-1].context_notice.isVisible()
    assert not any(widget.unseen for widget in window.view.widgets)


def test_the_notice_stands_out_and_continues_in_a_new_chat_with_the_latest_image(qtbot, make_window, images_dir):
    from test_window import drop_files, wait_image_checked

    from app.theme import warning_colours

    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: ForgetfulSession(["ok"])))
    ask(qtbot, window, "First question")
    wait_answered(qtbot, window)
    assert drop_files(window, images_dir / "gradient_square.png")
    wait_image_checked(qtbot, window)
    ask(qtbot, window, "Second question, about the picture")
    wait_answered(qtbot, window)
    picture = window.controller.messages[2].images[0]
    ask(qtbot, window, "Third question")
    wait_answered(qtbot, window)

    notice = window.view.widgets[-1].context_notice
    # A bar in the warning colours, with an icon: not a line of small grey italics.
    background, _border = warning_colours(window.palette())
    assert notice.grab().toImage().pixelColor(notice.width() // 2, 2) == background
    assert not notice.icon_label.pixmap().isNull()
    assert not notice.font().italic()

    qtbot.mouseClick(notice.continue_button, Qt.MouseButton.LeftButton)
    assert window.controller.messages == [] and window.controller.chat_id is None
    wait_image_checked(qtbot, window)
    assert [image.sha256 for image in window.composer.images] == [picture.sha256]
    assert window.composer.input.hasFocus()
