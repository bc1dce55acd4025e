"""A chat of very long messages (an imported one) opens without laying out all its text: each long message shows a
bounded preview with "Show more"; expanded, a very long one is plain text in a scrolling reader that lays out only
what is in sight; Copy copies the whole message."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from app.chat.conversation_view import (
    DISPLAY_LINE_CHARS,
    MARKDOWN_LIMIT,
    PREVIEW_CHARS,
    READER_LINES,
    MarkdownView,
    Reader,
)
from app.history.records import ChatMessage as Message
from app.history.records import Status

MESSAGE_CHARS = 250_000
MESSAGES = 12


def one_line(size: int) -> str:
    return ("a_long_word " * (size // 12 + 1))[:size]


def many_lines(size: int) -> str:
    return ("A line of **Markdown** with `code`.\n" * (size // 36 + 1))[:size]


def code_block(size: int) -> str:
    return "Here it is:\n```python\n" + "print('hello')\n" * (size // 15) + "```\n"


@pytest.fixture
def markdown_chars(monkeypatch) -> list[int]:
    """The length of each text given to the Markdown renderer."""
    calls: list[int] = []
    show_markdown = MarkdownView.show_markdown

    def counted(self: MarkdownView, text: str, *args, **kwargs) -> None:
        calls.append(len(text))
        show_markdown(self, text, *args, **kwargs)

    monkeypatch.setattr(MarkdownView, "show_markdown", counted)
    return calls


def open_chat(window, messages: list[Message]) -> None:
    """What opening a saved or imported chat does to the view."""
    window.controller.messages = messages
    window.controller.conversation_replaced.emit()


def characters_laid_out(window) -> int:
    """All the text the conversation's documents and labels hold."""
    return sum(widget.body.document().characterCount() if widget.body is not None else len(widget.label.text())
               for widget in window.view.widgets) + sum(len(widget.reader.source) for widget in window.view.widgets)


def lines_laid_out(reader: Reader) -> int:
    """The lines of text the reader has laid out (Qt lays out a block of a plain-text view once it is in sight)."""
    lines, block = 0, reader.document().begin()
    while block.isValid():
        lines += block.layout().lineCount()
        block = block.next()
    return lines


def test_opening_a_chat_of_huge_messages_renders_only_their_previews(qtbot, make_window, markdown_chars):
    makers = [one_line, many_lines, code_block]
    texts = [makers[index % 3](MESSAGE_CHARS) for index in range(MESSAGES)]
    window = make_window(start=False)
    open_chat(window, [Message("user" if index % 2 == 0 else "assistant", text) for index, text in enumerate(texts)])

    assert len(window.view.widgets) == MESSAGES
    bound = MESSAGES * (PREVIEW_CHARS + 3)  # the preview, " …" and the document's closing paragraph mark
    assert sum(markdown_chars) <= bound  # not MESSAGES * MESSAGE_CHARS: what is shown, not what the chat holds
    assert characters_laid_out(window) <= bound
    for widget in window.view.widgets:
        assert widget.more_button.isVisibleTo(widget) and widget.more_button.text() == "Show more"


def test_show_more_shows_a_huge_answer_whole_in_a_reader_and_show_less_collapses_it(
        qtbot, make_window, markdown_chars):
    text = one_line(MESSAGE_CHARS)
    window = make_window(start=False)
    open_chat(window, [Message("user", "Paste it back"), Message("assistant", text)])
    widget = window.view.widgets[-1]
    assert widget.body.document().characterCount() <= PREVIEW_CHARS + 3
    rendered_before = len(markdown_chars)

    qtbot.mouseClick(widget.more_button, Qt.MouseButton.LeftButton)
    shown = widget.reader.toPlainText()
    assert widget.reader.isVisibleTo(widget) and not widget.body.isVisibleTo(widget)
    assert shown.replace("\n", "") == text  # all of it, to scroll through, read and select
    assert max(len(line) for line in shown.split("\n")) <= DISPLAY_LINE_CHARS  # in short paragraphs
    assert len(markdown_chars) == rendered_before  # past MARKDOWN_LIMIT: not given to the Markdown renderer
    qtbot.waitUntil(lambda: lines_laid_out(widget.reader) > 0)
    assert lines_laid_out(widget.reader) <= 4 * READER_LINES  # what is in sight, not the 250,000 characters
    assert widget.height() < 2 * widget.reader.height() + 200
    assert widget.more_button.text() == "Show less"

    qtbot.mouseClick(widget.more_button, Qt.MouseButton.LeftButton)
    assert widget.body.document().characterCount() <= PREVIEW_CHARS + 3
    assert not widget.reader.isVisibleTo(widget) and widget.reader.source == ""
    assert widget.more_button.text() == "Show more"

    qtbot.mouseClick(widget.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == text  # Copy has the whole message, collapsed or not


def test_a_long_question_expands_in_its_bubble_and_copies_whole(qtbot, make_window):
    text = many_lines(MESSAGE_CHARS)
    window = make_window(start=False)
    open_chat(window, [Message("user", text), Message("assistant", "Noted.")])
    question = window.view.widgets[0]
    assert len(question.label.text()) <= PREVIEW_CHARS + 2
    assert question.label.text().startswith("A line of **Markdown**")

    qtbot.mouseClick(question.more_button, Qt.MouseButton.LeftButton)
    assert question.reader.toPlainText() == text and question.reader.isVisibleTo(question)
    assert not question.label.isVisibleTo(question)
    qtbot.mouseClick(question.more_button, Qt.MouseButton.LeftButton)
    assert len(question.label.text()) <= PREVIEW_CHARS + 2 and question.label.isVisibleTo(question)
    assert not question.reader.isVisibleTo(question)

    QGuiApplication.clipboard().clear()
    qtbot.mouseClick(question.copy_button, Qt.MouseButton.LeftButton)
    assert QGuiApplication.clipboard().text() == text


def test_a_long_answer_within_the_markdown_limit_expands_as_markdown(qtbot, make_window):
    text = code_block(MARKDOWN_LIMIT - 1000)
    window = make_window(start=False)
    open_chat(window, [Message("user", "Some code?"), Message("assistant", text)])
    answer = window.view.widgets[-1]
    assert "```python" in answer.body.markdown_source and len(answer.body.markdown_source) < PREVIEW_CHARS
    assert answer.body.code_blocks == []  # the preview cuts the block: its Copy link comes with the whole text
    qtbot.mouseClick(answer.more_button, Qt.MouseButton.LeftButton)
    assert answer.body.markdown_source == text
    assert answer.body.code_blocks == ["\n".join(["print('hello')"] * ((MARKDOWN_LIMIT - 1000) // 15))]


def test_short_messages_have_no_show_more(qtbot, make_window):
    window = make_window(start=False)
    open_chat(window, [Message("user", "Hi"), Message("assistant", "**Hello** there")])
    assert not any(widget.more_button.isVisibleTo(widget) for widget in window.view.widgets)
    assert window.view.widgets[-1].body.markdown_source == "**Hello** there"


def test_an_answer_arriving_in_view_stays_open_and_moves_to_the_reader_past_the_markdown_limit(
        qtbot, make_window, markdown_chars):
    message = Message("assistant", "", status=Status.STREAMING)
    window = make_window(start=False)
    open_chat(window, [Message("user", "Tell me everything."), message])
    widget = window.view.widgets[-1]
    message.text = many_lines(MARKDOWN_LIMIT - 10)
    widget.refresh()
    assert widget.body.markdown_source == message.text  # past the preview, not collapsed: the person reads it arrive
    for _piece in range(3):
        message.text += many_lines(1000)
        widget.refresh()
        bar = widget.reader.verticalScrollBar()
        assert widget.reader.toPlainText() == message.text and bar.value() == bar.maximum() > 0  # following it
    assert markdown_chars[-1] == MARKDOWN_LIMIT - 10  # the longer text went to the reader, not to Markdown
