"""The model worker on its own thread: what it streams, how often, how it stops and how it fails."""

from __future__ import annotations

import time

import pytest
from fakes import FakeSession, Recorder, SlowSession, fake_load
from PySide6.QtCore import QObject, Signal

from app.error_text import error_text
from app.model.worker import AnswerRequest, LoadRequest, ModelThread, ModelWorker
from xvlm_core.errors import Problem, Remedy
from xvlm_core.load_options import LoadOptions
from xvlm_core.messages import ImageRef, Message
from xvlm_core.sampling import SamplingSettings

WORKER_SIGNALS = ("loaded", "load_failed", "chunk_ready", "answer_finished", "answer_failed")


class Caller(QObject):
    """Stands in for the controller: requests reach the worker's thread as queued signals."""

    load = Signal(object)
    generate = Signal(object)


@pytest.fixture
def run_worker():
    threads: list[ModelThread] = []

    def start(worker: ModelWorker) -> tuple[Caller, Recorder]:
        thread = ModelThread(worker)
        threads.append(thread)
        caller = Caller()
        caller.load.connect(worker.load)
        caller.generate.connect(worker.generate)
        recorder = Recorder(worker, *WORKER_SIGNALS)
        thread.start()
        worker.keep_alive = (caller, recorder)
        return caller, recorder

    yield start
    for thread in threads:
        assert thread.stop(5000)


def test_streamed_chunks_join_to_what_the_core_answers(qtbot, run_worker, tiny_model_dir, tiny_tower_dir, images_dir):
    from xvlm_core.engines.pytorch.loading import load_model
    from xvlm_core.engines.pytorch.session import ChatSession
    from xvlm_core.sampling import SamplingSettings

    image = ImageRef.from_file(images_dir / "gradient_square.png")
    worker = ModelWorker(session_factory=lambda loaded: SlowSession(loaded, delay_s=0.04))
    caller, seen = run_worker(worker)
    caller.load.emit(LoadRequest(LoadOptions(str(tiny_model_dir), str(tiny_tower_dir), "cpu", "float32")))
    qtbot.waitUntil(lambda: bool(seen["loaded"]), timeout=20_000)
    question = Message("user", "What is in the picture?", (image,))
    caller.generate.emit(AnswerRequest(1, (question,), SamplingSettings(max_new_tokens=12)))
    qtbot.waitUntil(lambda: bool(seen["answer_finished"]), timeout=20_000)

    direct = ChatSession(load_model(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32")).answer(
        [Message("user", "What is in the picture?", (image,))], SamplingSettings(max_new_tokens=12))
    expected = "".join(direct)
    chunks = [text for _id, text in seen["chunk_ready"]]
    _request_id, text, stats = seen["answer_finished"][0]
    assert len(chunks) >= 3
    assert "".join(chunks) == expected == text
    assert stats["stop_reason"] == direct.result.stats.stop_reason and stats["output_tokens"] == 12
    assert stats["memory_mb"] > 0


def test_fast_deltas_are_batched_to_at_most_30_chunks_a_second(qtbot, run_worker):
    session = FakeSession([f"{i} " for i in range(600)], delay_s=0.0005)  # ~2000 deltas a second
    worker = ModelWorker(load=fake_load(), session_factory=lambda loaded: session)
    caller, seen = run_worker(worker)
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["loaded"]))
    started = time.monotonic()
    caller.generate.emit(AnswerRequest(1, (Message("user", "count"),)))
    qtbot.waitUntil(lambda: bool(seen["answer_finished"]), timeout=10_000)
    elapsed = time.monotonic() - started
    chunks = [text for _id, text in seen["chunk_ready"]]
    assert "".join(chunks) == "".join(session.deltas)
    assert 2 <= len(chunks) <= 30 * elapsed + 2


def test_cancel_event_stops_the_answer_and_keeps_its_text(qtbot, run_worker):
    session = FakeSession([f"w{i} " for i in range(500)], delay_s=0.01)
    worker = ModelWorker(load=fake_load(), session_factory=lambda loaded: session)
    caller, seen = run_worker(worker)
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["loaded"]))
    request = AnswerRequest(7, (Message("user", "talk"),))
    caller.generate.emit(request)
    qtbot.waitUntil(lambda: len(seen["chunk_ready"]) >= 2)
    request.cancel.set()  # from this (the UI) thread, while the worker's thread is busy generating
    qtbot.waitUntil(lambda: bool(seen["answer_finished"]), timeout=2000)
    request_id, text, stats = seen["answer_finished"][0]
    assert request_id == 7 and stats["stop_reason"] == "cancelled"
    assert text == "".join(chunk for _id, chunk in seen["chunk_ready"])
    assert 0 < len(text) < len("".join(session.deltas))


def test_a_bad_model_folder_fails_with_a_message_for_people(qtbot, run_worker, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    caller, seen = run_worker(ModelWorker())
    caller.load.emit(LoadRequest(LoadOptions(str(tmp_path), device="cpu")))
    qtbot.waitUntil(lambda: bool(seen["load_failed"]), timeout=20_000)
    (problem,) = seen["load_failed"][0]
    assert problem.code is Remedy.CHOOSE_MODEL
    assert str(tmp_path) in problem.details and "Traceback" not in problem.details
    assert not seen["loaded"]


def test_an_unexpected_error_is_caught_at_the_edge_and_logged(qtbot, run_worker, caplog):
    caller, seen = run_worker(ModelWorker(load=fake_load(error=KeyError("weights"))))
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["load_failed"]))
    (problem,) = seen["load_failed"][0]
    assert problem == Problem(Remedy.SEE_LOG, "KeyError")
    assert "log" in error_text(problem).headline
    assert any(record.exc_info and record.exc_info[0] is KeyError for record in caplog.records)


def test_out_of_memory_is_known_by_its_type_and_says_what_to_do(qtbot, run_worker):
    import torch

    caller, seen = run_worker(ModelWorker(load=fake_load(error=torch.OutOfMemoryError("CUDA out of memory."))))
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["load_failed"]))
    (problem,) = seen["load_failed"][0]
    assert problem == Problem(Remedy.FREE_MEMORY, "The model ran out of memory (OutOfMemoryError: CUDA out of memory).")
    assert "CPU" in error_text(problem).headline


def test_words_alone_are_not_out_of_memory(qtbot, run_worker):
    caller, seen = run_worker(ModelWorker(load=fake_load(error=RuntimeError("the cache ran out of memory"))))
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["load_failed"]))
    assert seen["load_failed"][0][0].code is Remedy.SEE_LOG


def test_generate_before_load_fails_politely(qtbot, run_worker):
    caller, seen = run_worker(ModelWorker(load=fake_load()))
    caller.generate.emit(AnswerRequest(3, (Message("user", "hi"),)))
    qtbot.waitUntil(lambda: bool(seen["answer_failed"]))
    assert seen["answer_failed"] == [(3, Problem(Remedy.NONE, "No model is loaded yet."))]


def test_stopping_the_thread_cancels_a_running_answer(qtbot):
    session = FakeSession([f"w{i} " for i in range(10_000)], delay_s=0.01)  # 100 s if nothing stopped it
    worker = ModelWorker(load=fake_load(), session_factory=lambda loaded: session)
    thread = ModelThread(worker)
    caller = Caller()
    caller.load.connect(worker.load)
    caller.generate.connect(worker.generate)
    seen = Recorder(worker, "loaded", "chunk_ready")
    thread.start()
    caller.load.emit(LoadRequest(LoadOptions("fake")))
    qtbot.waitUntil(lambda: bool(seen["loaded"]))
    caller.generate.emit(AnswerRequest(1, (Message("user", "go on forever"),)))
    qtbot.waitUntil(lambda: bool(seen["chunk_ready"]))
    started = time.monotonic()
    assert thread.stop(2000)
    assert time.monotonic() - started < 0.5


def test_a_load_request_for_8_bit_weights_loads_them_and_answers(qtbot, run_worker, tiny_model_dir, tiny_tower_dir):
    caller, seen = run_worker(ModelWorker())
    caller.load.emit(LoadRequest(LoadOptions(str(tiny_model_dir), str(tiny_tower_dir), "cpu", "float32", "int8")))
    qtbot.waitUntil(lambda: bool(seen["loaded"]), timeout=20_000)
    assert seen["loaded"][0][0]["quantize"] == "int8"
    caller.generate.emit(AnswerRequest(1, (Message("user", "Hello"),), SamplingSettings(max_new_tokens=8)))
    qtbot.waitUntil(lambda: bool(seen["answer_finished"]), timeout=20_000)
    _request_id, text, stats = seen["answer_finished"][0]
    assert text and stats["output_tokens"] > 0
