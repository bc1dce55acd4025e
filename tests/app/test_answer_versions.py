"""Regenerate keeps the answers it replaces: "< 2/2 >" browses them, the chat goes on from the one shown, and the
history keeps them for the next launch."""

from __future__ import annotations

import json

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from test_window import ask, wait_answered

from app.chat.chat_list import VERSION
from app.history.records import Status
from app.history.service import open_history
from app.model.worker import ModelWorker


class Answers(FakeSession):
    """Says "answer 1", "answer 2"... one more each time it is asked; fails at once while `fail` is set."""

    fail = False

    def answer(self, messages, settings, system, cancel):
        self.deltas = [f"answer {len(self.calls) + 1}"]
        if self.fail:
            self.calls.append(list(messages))
            raise RuntimeError("the model fell over")
        return super().answer(messages, settings, system, cancel)


def window_on_history(make_window, tmp_path):
    session = Answers()
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: session),
                         history=open_history(tmp_path / "history" / "chats.sqlite3"))
    return window, session


def switch(window):
    return window.view.widgets[-1].versions


def click(qtbot, button) -> None:
    assert button.isVisible() and button.isEnabled()
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def shown(window) -> list[str]:
    return [widget.message.text for widget in window.view.widgets]


def test_regenerate_keeps_the_earlier_answer_to_browse_and_goes_on_from_the_one_shown(qtbot, make_window, tmp_path):
    window, session = window_on_history(make_window, tmp_path)
    ask(qtbot, window, "What is in the picture?")
    wait_answered(qtbot, window)
    assert not switch(window).isVisible()  # one answer: nothing to browse

    click(qtbot, window.view.widgets[-1].regenerate_button)
    wait_answered(qtbot, window)
    assert shown(window) == ["What is in the picture?", "answer 2"]
    assert switch(window).isVisible() and switch(window).label.text() == "2/2"
    assert not switch(window).next_button.isEnabled()

    click(qtbot, switch(window).previous_button)
    assert shown(window) == ["What is in the picture?", "answer 1"] and switch(window).label.text() == "1/2"
    click(qtbot, switch(window).next_button)
    assert window.view.widgets[-1].message.text == "answer 2"
    click(qtbot, switch(window).previous_button)

    window.close()  # the next launch shows the versions as they were left
    again, session = window_on_history(make_window, tmp_path)
    assert shown(again) == ["What is in the picture?", "answer 1"] and switch(again).label.text() == "1/2"
    click(qtbot, switch(again).next_button)
    click(qtbot, switch(again).previous_button)

    ask(qtbot, again, "Are you sure?")  # goes on from the answer shown: answer 1
    wait_answered(qtbot, again)
    assert [message.text for message in session.calls[-1]] == ["What is in the picture?", "answer 1",
                                                                "Are you sure?"]
    assert not any(widget.versions.isVisible() for widget in again.view.widgets if widget.versions is not None)


def test_export_writes_the_answer_shown(qtbot, make_window, tmp_path, monkeypatch):
    window, _session = window_on_history(make_window, tmp_path)
    ask(qtbot, window, "Hello")
    wait_answered(qtbot, window)
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    click(qtbot, switch(window).previous_button)

    folder = tmp_path / "exported"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder))
    window.export_json_action.trigger()
    qtbot.waitUntil(lambda: any(folder.glob("*.json")) and not window.transfer_bar.running, timeout=10_000)
    exported = json.loads(next(folder.glob("*.json")).read_text(encoding="utf-8"))
    assert [item["content"] for item in exported] == ["Hello", "answer 1"]


def test_an_answer_that_failed_before_any_text_is_not_kept_as_a_version(qtbot, make_window, tmp_path):
    window, session = window_on_history(make_window, tmp_path)
    ask(qtbot, window, "Hi")
    wait_answered(qtbot, window)
    session.fail = True
    window.regenerate_action.trigger()
    wait_answered(qtbot, window, Status.FAILED)
    assert switch(window).label.text() == "2/2" and window.view.widgets[-1].footer.text()  # it says why
    click(qtbot, switch(window).previous_button)  # back to the answer: the failed one is nothing to come back to
    assert shown(window) == ["Hi", "answer 1"] and not switch(window).isVisible()

    session.fail = False
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    session.fail = True
    window.regenerate_action.trigger()  # failed again: replaced by the next answer, it goes
    wait_answered(qtbot, window, Status.FAILED)
    session.fail = False
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    assert [version.text for version in window.controller.versions] == ["answer 1", "answer 3", "answer 5"]
    window.close()
    again, _session = window_on_history(make_window, tmp_path)
    assert switch(again).label.text() == "3/3"
    assert [version.text for version in again.controller.versions] == ["answer 1", "answer 3", "answer 5"]


def test_export_from_the_window_keeps_the_other_versions(qtbot, make_window, tmp_path, monkeypatch):
    window, _session = window_on_history(make_window, tmp_path)
    ask(qtbot, window, "Hello")
    wait_answered(qtbot, window)
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)

    folder = tmp_path / "exported"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder))
    for action, pattern in ((window.export_markdown_action, "*.md"), (window.export_json_action, "*.json")):
        action.trigger()
        qtbot.waitUntil(lambda pattern=pattern: any(folder.glob(pattern)) and not window.transfer_bar.running,
                        timeout=10_000)
    markdown = next(folder.glob("*.md")).read_text(encoding="utf-8")
    assert "answer 1" in markdown and "answer 2" in markdown
    exported = json.loads(next(folder.glob("*.json")).read_text(encoding="utf-8"))
    assert exported[-1]["content"] == "answer 2"
    assert [version["content"] for version in exported[-1]["other_versions"]] == ["answer 1"]


def test_search_finds_an_earlier_answer_and_choosing_it_shows_that_version(qtbot, make_window, tmp_path):
    window, _session = window_on_history(make_window, tmp_path)
    ask(qtbot, window, "Hello")
    wait_answered(qtbot, window)
    window.regenerate_action.trigger()
    wait_answered(qtbot, window)
    assert shown(window) == ["Hello", "answer 2"]
    chat_list = window.chat_list

    qtbot.keyClicks(chat_list.search_edit, "answer 1")
    qtbot.waitUntil(lambda: chat_list.list.count() == 1 and chat_list.list.item(0).data(VERSION) == 0,
                    timeout=5_000)
    hit = chat_list.list.item(0)
    assert "answer version 1" in hit.text()
    qtbot.mouseClick(chat_list.list.viewport(), Qt.MouseButton.LeftButton,
                     pos=chat_list.list.visualItemRect(hit).center())

    qtbot.waitUntil(lambda: shown(window) == ["Hello", "answer 1"], timeout=5_000)
    assert switch(window).isVisible() and switch(window).label.text() == "1/2"
    assert window.view.revealed is window.view.widgets[-1]
