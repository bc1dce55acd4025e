"""What other chat apps do: a relaunch reopens the chat you were in, search shows the match, imports keep their
timings and get a title of their own, every chat has an icon, file dialogs start where pictures are."""

from __future__ import annotations

from fakes import FakeSession, fake_load
from test_window import ask, wait_answered

from app.history.service import open_history
from app.worker import ModelWorker


def relaunch(make_window, tmp_path, deltas: tuple[str, ...] = ("An answer.",)):
    """A window on the history in `tmp_path`, as a launch of the app makes one."""
    session = FakeSession(list(deltas))
    return make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: session),
                       history=open_history(tmp_path / "history" / "chats.sqlite3"))


def test_a_relaunch_reopens_the_chat_that_was_open(qtbot, make_window, tmp_path):
    window = relaunch(make_window, tmp_path)
    ask(qtbot, window, "The first chat")
    wait_answered(qtbot, window)
    first = window.controller.chat_id
    window.new_chat()
    ask(qtbot, window, "The second chat")
    wait_answered(qtbot, window)
    window.chat_list.refresh()
    window.open_chat(first)
    window.close()

    again = relaunch(make_window, tmp_path)
    assert again.controller.chat_id == first
    assert [widget.message.text for widget in again.view.widgets] == ["The first chat", "An answer."]
    assert again.windowTitle().startswith("The first chat")
    assert again.chat_list.list.currentItem().text() == "The first chat"


def test_a_relaunch_after_the_open_chat_was_deleted_starts_a_new_chat(qtbot, make_window, tmp_path):
    window = relaunch(make_window, tmp_path)
    ask(qtbot, window, "Soon deleted")
    wait_answered(qtbot, window)
    window.chat_list.delete(window.controller.chat_id)
    window.close()  # deleted chats are purged on closing

    again = relaunch(make_window, tmp_path)
    assert again.controller.chat_id is None and again.view.widgets == []
