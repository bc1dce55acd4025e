"""Answers' code blocks wrap long lines and each has its own Copy link; block quotes are set off from the text."""

from __future__ import annotations

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QTextCursor, QTextFormat
from test_window import ask, wait_answered

from app.model.worker import ModelWorker

LONG_LINE = "result = compute(" + ", ".join(f"argument_{i}" for i in range(40)) + ")"
ANSWER = f"""Here are two snippets.

```python
import os
{LONG_LINE}
```

> A quoted line, as the model remembers it.

```
echo second
```
"""


def answered(qtbot, make_window):
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession([ANSWER])))
    ask(qtbot, window, "Show me code")
    wait_answered(qtbot, window)
    return window, window.view.widgets[-1].body


def click_link(qtbot, body, number: int) -> None:
    """Click the `number`-th "Copy code" link as a person would, where it is drawn."""
    document = body.document()
    found = document.find("Copy code")
    for _ in range(number):
        found = document.find("Copy code", found)
    assert not found.isNull()
    cursor = QTextCursor(document)
    cursor.setPosition(found.selectionStart() + 2)
    qtbot.mouseClick(body.viewport(), Qt.MouseButton.LeftButton, pos=body.cursorRect(cursor).center())


def test_a_long_line_in_a_code_block_wraps_instead_of_being_cut(qtbot, make_window):
    _window, body = answered(qtbot, make_window)
    block = body.document().begin()
    code_blocks = 0
    while block.isValid():
        if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence):
            code_blocks += 1
            assert not block.blockFormat().nonBreakableLines()
        block = block.next()
    assert code_blocks == 3
    assert body.document().size().width() <= body.viewport().width() + 1
    assert LONG_LINE in body.toPlainText().replace("\n", "").replace("\u2028", "")


def test_each_code_block_has_its_own_copy_link(qtbot, make_window):
    _window, body = answered(qtbot, make_window)
    assert body.code_blocks == [f"import os\n{LONG_LINE}", "echo second"]
    click_link(qtbot, body, 1)
    assert QGuiApplication.clipboard().text() == "echo second"
    click_link(qtbot, body, 0)
    assert QGuiApplication.clipboard().text() == f"import os\n{LONG_LINE}"


def test_a_block_quote_is_set_off_from_the_text(qtbot, make_window):
    _window, body = answered(qtbot, make_window)
    block = body.document().findBlock(body.document().find("A quoted line").selectionStart())
    plain = body.document().findBlock(body.document().find("Here are").selectionStart())
    assert block.blockFormat().background().style() != Qt.BrushStyle.NoBrush
    assert plain.blockFormat().background().style() == Qt.BrushStyle.NoBrush
    assert block.begin().fragment().charFormat().fontItalic()
