"""The conversation state machine alone: a stand-in worker answers synchronously, no widgets, no threads."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Signal, Slot

from app.chat.controller import ChatController, ModelPhase
from app.history.records import Status
from app.model.worker import AnswerRequest, LoadRequest, LookRequest
from app.settings import AppSettings, Settings, SettingsFile
from xvlm_core.errors import Problem, Remedy
from xvlm_core.load_options import LoadOptions
from xvlm_core.messages import ImageRef, Message
from xvlm_core.sampling import SamplingSettings


@pytest.fixture(autouse=True)
def _qt(qapp):
    """Signals want a QCoreApplication, as in the app."""


class ScriptedWorker(QObject):
    """Same signals as ModelWorker; the test says when each thing happens."""

    stage_changed = Signal(str)
    loaded = Signal(dict)
    load_failed = Signal(object)  # Problem
    chunk_ready = Signal(int, str)
    answer_finished = Signal(int, str, dict)
    answer_failed = Signal(int, object)

    def __init__(self):
        super().__init__()
        self.loads: list[LoadRequest] = []
        self.requests: list[AnswerRequest] = []
        self.looks: list[LookRequest] = []

    @Slot(object)
    def load(self, request: LoadRequest) -> None:
        self.loads.append(request)

    @Slot(object)
    def generate(self, request: AnswerRequest) -> None:
        self.requests.append(request)

    @Slot(object)
    def look_at(self, request: LookRequest) -> None:
        self.looks.append(request)


def make(settings: Settings | None = None) -> tuple[ChatController, ScriptedWorker]:
    settings = settings or Settings(max_new_tokens=64, temperature=0.5, system_prompt="Be brief.")
    # Nothing here changes the settings, so the file is never written.
    controller = ChatController(AppSettings(SettingsFile(Path("unused-settings.json")), settings))
    worker = ScriptedWorker()
    controller.connect_worker(worker)
    return controller, worker


def loaded(controller: ChatController, worker: ScriptedWorker) -> None:
    controller.load_model(LoadRequest(LoadOptions("model")))
    worker.loaded.emit({"name": "model", "memory_mb": 10.0})


def test_a_question_asked_while_loading_waits_then_goes_out_with_the_settings():
    controller, worker = make()
    controller.load_model(LoadRequest(LoadOptions("model", device="cpu")))
    assert controller.phase is ModelPhase.LOADING and worker.loads == [LoadRequest(LoadOptions("model", device="cpu"))]
    cat = ImageRef("c" * 64, "/pictures/cat.png")
    assert controller.send("  What is this?  ", [cat])
    assert controller.messages[-1].status == Status.WAITING and worker.requests == []
    worker.stage_changed.emit("Loading the vision tower…")
    assert controller.load_stage == "Loading the vision tower…"
    worker.loaded.emit({"name": "model"})
    (request,) = worker.requests
    assert [(message.role, message.text, message.images) for message in request.messages] == [
        ("user", "What is this?", (cat,))]
    assert request.sampling == SamplingSettings(max_new_tokens=64, temperature=0.5, top_p=1.0)
    assert request.system == "Be brief." and controller.messages[-1].status == Status.STREAMING


def test_chunks_grow_the_answer_and_finish_marks_it_done():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("Hi")
    request_id = worker.requests[0].request_id
    worker.chunk_ready.emit(request_id, "Hel")
    worker.chunk_ready.emit(request_id, "lo")
    assert controller.messages[-1].text == "Hello" and controller.busy
    worker.answer_finished.emit(request_id, "Hello", {"stop_reason": "eos", "memory_mb": 42.0})
    assert controller.messages[-1].status == Status.COMPLETE and not controller.busy
    assert controller.model_summary["memory_mb"] == 42.0


def test_a_finished_answer_redraws_its_own_message_when_an_earlier_one_is_equal():
    controller, worker = make()  # no history: nothing is saved, every message's id stays None
    loaded(controller, worker)
    changed: list[int] = []
    controller.message_changed.connect(changed.append)
    for turn in range(2):
        controller.send("Hi")
        worker.answer_finished.emit(worker.requests[turn].request_id, "Hello", {"stop_reason": "eos"})
    assert controller.messages[1] == controller.messages[3]
    assert changed[-1] == 3


def test_stop_sets_the_cancel_event_and_a_cancelled_finish_is_stopped():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("Hi")
    request = worker.requests[0]
    worker.chunk_ready.emit(request.request_id, "Partial")
    controller.stop()
    assert request.cancel.is_set()
    worker.answer_finished.emit(request.request_id, "Partial", {"stop_reason": "cancelled"})
    assert (controller.messages[-1].status, controller.messages[-1].text) == (Status.STOPPED, "Partial")


def test_stop_while_waiting_for_the_model_asks_nothing():
    controller, worker = make()
    controller.load_model(LoadRequest(LoadOptions("model")))
    controller.send("Hi")
    controller.stop()
    assert controller.messages[-1].status == Status.STOPPED and not controller.busy
    worker.loaded.emit({"name": "model"})
    assert worker.requests == []


def test_a_failed_load_fails_the_waiting_answer_with_the_reason():
    controller, worker = make()
    controller.load_model(LoadRequest(LoadOptions("model")))
    controller.send("Hi")
    worker.load_failed.emit(Problem(Remedy.NONE, "The checkpoint file is incomplete."))
    assert controller.phase is ModelPhase.FAILED
    assert controller.messages[-1].status == Status.FAILED
    assert "The checkpoint file is incomplete." in controller.messages[-1].stats.error


def test_no_second_question_while_one_is_answered():
    controller, worker = make()
    loaded(controller, worker)
    assert controller.send("One")
    assert not controller.send("Two")
    assert not controller.regenerate() and not controller.edit(0, "Changed", [])
    assert len(controller.messages) == 2 and len(worker.requests) == 1


def test_regenerate_sends_the_conversation_without_the_last_answer():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("One")
    worker.answer_finished.emit(worker.requests[0].request_id, "First", {"stop_reason": "eos"})
    controller.send("Two")
    worker.answer_finished.emit(worker.requests[1].request_id, "Second", {"stop_reason": "eos"})
    assert controller.regenerate()
    assert [turn.text for turn in worker.requests[2].messages] == ["One", "First", "Two"]
    assert [message.text for message in controller.messages] == ["One", "First", "Two", ""]


def test_edit_cuts_the_conversation_at_the_edited_message():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("One", [ImageRef("a" * 64, "/a.png")])
    worker.answer_finished.emit(worker.requests[0].request_id, "First", {"stop_reason": "eos"})
    controller.send("Two")
    worker.answer_finished.emit(worker.requests[1].request_id, "Second", {"stop_reason": "eos"})
    assert controller.edit(2, "Second question, better", [])
    assert [turn.text for turn in worker.requests[2].messages] == ["One", "First", "Second question, better"]
    assert len(controller.messages) == 4


def test_an_answer_that_failed_before_any_text_is_left_out_of_the_next_prompt():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("One")
    worker.answer_failed.emit(worker.requests[0].request_id, Problem(Remedy.FREE_MEMORY, "Out of memory."))
    controller.send("Two")
    assert [(turn.role, turn.text) for turn in worker.requests[1].messages] == [("user", "One"), ("user", "Two")]


def test_late_chunks_of_an_abandoned_answer_are_ignored():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("One")
    old = worker.requests[0]
    controller.new_chat()
    assert old.cancel.is_set() and controller.messages == []
    worker.chunk_ready.emit(old.request_id, "late")
    worker.answer_finished.emit(old.request_id, "late", {"stop_reason": "cancelled"})
    assert controller.messages == [] and not controller.busy


def test_reloading_stops_the_answer_in_flight():
    controller, worker = make()
    loaded(controller, worker)
    controller.send("One")
    controller.load_model(LoadRequest(LoadOptions("other", device="cpu")))
    assert worker.requests[0].cancel.is_set() and controller.phase is ModelPhase.LOADING


def test_title_is_the_first_question_shortened():
    controller, _worker = make()
    assert controller.title == "New chat"
    controller.send("What   is the weather like in this photograph of the mountains at dawn, do you think?")
    assert controller.title == "What is the weather like in this photograph of the mountains…"
    controller.rename("Mountains")
    assert controller.title == "Mountains"


def saved_controller(tmp_path: Path) -> tuple[ChatController, ScriptedWorker]:
    from app.history.database import ChatStore
    from app.history.service import History

    controller, worker = make()
    controller.history = History(ChatStore(tmp_path / "chats.sqlite3"))
    loaded(controller, worker)
    return controller, worker


def test_an_answer_goes_on_for_its_chat_when_another_is_opened(tmp_path):
    controller, worker = saved_controller(tmp_path)
    left, finished = [], []
    controller.answer_left_running.connect(left.append)
    controller.background_answer_finished.connect(lambda *args: finished.append(args))
    controller.send("Alpha")
    alpha, request = controller.chat_id, worker.requests[0]
    worker.chunk_ready.emit(request.request_id, "So ")
    controller.new_chat()
    assert not request.cancel.is_set() and left == ["Alpha"] and not controller.busy
    controller.send("Beta")  # the next chat's question: the worker answers it after the first
    worker.chunk_ready.emit(request.request_id, "far.")
    assert [message.text for message in controller.messages] == ["Beta", ""]
    worker.answer_finished.emit(request.request_id, "So far.", {"stop_reason": "eos"})
    assert finished == [(alpha, "Alpha", Status.COMPLETE)] and controller.busy  # Beta's answer is still to come
    stored = controller.history.load_chat(alpha).messages
    assert [(message.text, message.status) for message in stored] == [("Alpha", "complete"),
                                                                       ("So far.", "complete")]


def test_going_back_to_a_chat_mid_answer_shows_it_going_on(tmp_path):
    controller, worker = saved_controller(tmp_path)
    controller.send("Alpha")
    alpha, request = controller.chat_id, worker.requests[0]
    worker.chunk_ready.emit(request.request_id, "One ")
    controller.new_chat()
    worker.chunk_ready.emit(request.request_id, "two ")
    busy = []
    controller.busy_changed.connect(busy.append)
    controller.open_chat(alpha)
    assert controller.busy and busy == [True] and controller.messages[-1].text == "One two "
    worker.chunk_ready.emit(request.request_id, "three")
    controller.stop()  # Stop works on it again
    assert request.cancel.is_set()
    worker.answer_finished.emit(request.request_id, "One two three", {"stop_reason": "cancelled"})
    assert controller.messages[-1].status == Status.STOPPED and not controller.busy


def test_closing_stops_and_saves_every_answer_being_written(tmp_path):
    controller, worker = saved_controller(tmp_path)
    controller.send("Alpha")
    alpha = controller.chat_id
    worker.chunk_ready.emit(worker.requests[0].request_id, "Half")
    controller.new_chat()
    controller.send("Beta")
    beta = controller.chat_id
    worker.chunk_ready.emit(worker.requests[1].request_id, "Other half")
    controller.close()
    assert all(request.cancel.is_set() for request in worker.requests)
    for chat_id, text in ((alpha, "Half"), (beta, "Other half")):
        last = controller.history.load_chat(chat_id).messages[-1]
        assert (last.text, last.status) == (text, "stopped")
    controller.history.close()


def test_images_attached_are_handed_to_the_model_once_it_is_ready_and_a_newer_set_cancels_the_older(qtbot):
    controller, worker = make()
    first, second = ImageRef("a" * 64, "/images/a.png"), ImageRef("b" * 64, "/images/b.png")
    controller.look_ahead([first])  # still loading: read with the answer
    assert worker.looks == []
    worker.loaded.emit({"name": "tiny"})
    controller.look_ahead([first])
    controller.look_ahead([first, second])
    assert [look.images for look in worker.looks] == [(first,), (first, second)]
    assert worker.looks[0].cancel.is_set() and not worker.looks[1].cancel.is_set()


def test_images_attached_are_read_after_the_chat_so_far_and_during_an_answer_alone():
    controller, worker = make()
    loaded(controller, worker)
    cat, dog = ImageRef("c" * 64, "/pictures/cat.png"), ImageRef("d" * 64, "/pictures/dog.png")
    controller.look_ahead([cat])
    assert worker.looks[-1].before == () and worker.looks[-1].system == "Be brief."
    controller.send("What is this?", [cat])
    controller.look_ahead([dog])  # the answer streams: what it will say is not known yet
    assert worker.looks[-1].before is None
    worker.answer_finished.emit(worker.requests[-1].request_id, "A cat.", {})
    controller.look_ahead([dog])
    assert worker.looks[-1].before == (Message("user", "What is this?", (cat,)), Message("assistant", "A cat."))
