"""Leaving a chat mid-answer: the answer goes on for its chat, is saved there, and the window says so."""

from __future__ import annotations

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt

from app.history.database import ChatStore
from app.history.records import Status
from app.history.service import History
from app.model.worker import ModelWorker


def test_a_new_chat_mid_answer_leaves_the_answer_running_and_saved(qtbot, make_window, tmp_path):
    session = FakeSession([f"w{i} " for i in range(40)], delay_s=0.01)
    history = History(ChatStore(tmp_path / "history" / "chats.sqlite3"))
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: session), history=history)
    qtbot.waitUntil(lambda: window.controller.phase.value == "ready", timeout=20_000)
    window.controller.send("Tell me a story")
    alpha = window.controller.chat_id
    qtbot.waitUntil(lambda: len(window.controller.messages[-1].text) > 0, timeout=10_000)
    qtbot.keyClick(window.composer.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.controller.messages == [] and not window.composer.busy
    assert "“Tell me a story” is still being written" in window.statusBar().currentMessage()
    marked = window.chat_list.list.item(0)  # in the sidebar, that chat reads as still being written
    assert marked.font().italic() and marked.toolTip().endswith("An answer is being written")
    qtbot.waitUntil(lambda: "is finished" in window.statusBar().currentMessage(), timeout=10_000)
    assert window.statusBar().currentMessage() == "The answer in “Tell me a story” is finished."
    assert not window.chat_list.list.item(0).font().italic()
    stored = history.load_chat(alpha).messages[-1]
    assert (stored.status, stored.text) == ("complete", "".join(session.deltas))
    window.open_chat(alpha)
    assert window.controller.messages[-1].status == Status.COMPLETE
    assert window.view.widgets[-1].message.text == "".join(session.deltas)
