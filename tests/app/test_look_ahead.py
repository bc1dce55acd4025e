"""An image is read by the model when it is attached, while the question is typed, so the answer starts with the
prompt: the window asks the model thread to look at each image as it becomes ready."""

from __future__ import annotations

from fakes import FakeSession, SlowSession
from PySide6.QtCore import QMimeData, QUrl
from test_history import fake_worker
from test_window import ask, drop_mime, wait_answered, wait_image_checked, wait_ready

from app.model.worker import ModelWorker


def drop_files(qtbot, window, *paths) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path)) for path in paths])
    assert drop_mime(window, mime)
    wait_image_checked(qtbot, window, len(window.composer.chips))


def test_each_image_dropped_is_handed_to_the_model_as_it_is_ready(qtbot, make_window, images_dir):
    session = FakeSession()
    window = make_window(fake_worker(session))
    wait_ready(qtbot, window)
    drop_files(qtbot, window, images_dir / "gradient_square.png")
    qtbot.waitUntil(lambda: len(session.looked_at) == 1, timeout=5_000)
    drop_files(qtbot, window, images_dir / "shapes_wide.png")
    qtbot.waitUntil(lambda: len(session.looked_at) == 2, timeout=5_000)
    first, second = window.composer.images
    assert session.looked_at == [(first,), (first, second)]  # the model skips what it has read
    assert session.looked_after == [(), ()]  # a new chat
    ask(qtbot, window, "Compare them.")
    wait_answered(qtbot, window)
    assert session.calls[-1][-1].images == (first, second)
    drop_files(qtbot, window, images_dir / "gradient_square.png")
    qtbot.waitUntil(lambda: len(session.looked_at) == 3, timeout=5_000)
    assert session.looked_after[-1] == (*session.calls[-1], window.controller.messages[-1].message)


def test_the_answer_to_an_image_read_ahead_does_not_encode_it_again(qtbot, make_window, images_dir, app_settings):
    sessions = []

    def session_factory(loaded):
        sessions.append(SlowSession(loaded, delay_s=0.0))
        return sessions[-1]

    window = make_window(ModelWorker(session_factory=session_factory))  # the tiny model
    wait_ready(qtbot, window)
    drop_files(qtbot, window, images_dir / "gradient_square.png")
    [image] = window.composer.images
    qtbot.waitUntil(lambda: image.sha256 in sessions[0].session._embeddings, timeout=20_000)
    qtbot.waitUntil(lambda: len(sessions[0].session.cached) > 144, timeout=20_000)  # and the prompt up to it
    ask(qtbot, window, "What is in it?")
    wait_answered(qtbot, window)
    answer = window.controller.messages[-1]
    assert answer.text and answer.stats.images_encoded == 0
    assert 0 < answer.stats.prefilled_tokens < 16 < 144 < answer.stats.reused_tokens  # the question's words only
