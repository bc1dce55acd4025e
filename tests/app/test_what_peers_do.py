"""What other chat apps do: a relaunch reopens the chat you were in, search shows the match, imports keep their
timings and get a title of their own, every chat has an icon, file dialogs start where pictures are."""

from __future__ import annotations

from fakes import FakeSession, fake_load
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog
from test_window import ask, wait_answered

from app.history.records import AnswerStats
from app.history.service import open_history
from app.model.worker import ModelWorker


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


def export_and_import(qtbot, window, tmp_path, monkeypatch, times: int = 1) -> list[int]:
    """File > Export Chat as JSON into a folder, then File > Import Chat of that file `times` times, as a person
    picks them in the file dialogs; the chats imported."""
    folder = tmp_path / "exported"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args, **kwargs: str(folder))
    window.export_json_action.trigger()
    qtbot.waitUntil(lambda: any(folder.glob("*.json")) and not window.transfer_bar.running, timeout=10_000)
    exported = str(next(folder.glob("*.json")))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (exported, ""))
    imported = []
    for _ in range(times):
        before = window.controller.chat_id
        window.import_action.trigger()
        qtbot.waitUntil(lambda before=before: window.controller.chat_id != before and not window.transfer_bar.running,
                        timeout=10_000)
        imported.append(window.controller.chat_id)
    return imported


def test_an_imported_chat_whose_title_exists_is_numbered(qtbot, make_window, tmp_path, monkeypatch):
    window = relaunch(make_window, tmp_path)
    ask(qtbot, window, "Colours of the sea")
    wait_answered(qtbot, window)
    export_and_import(qtbot, window, tmp_path, monkeypatch, times=2)
    titles = [window.chat_list.list.item(row).text() for row in range(window.chat_list.list.count())]
    assert sorted(titles) == ["Colours of the sea", "Colours of the sea (2)", "Colours of the sea (3)"]
    assert window.controller.title == "Colours of the sea (3)"


def test_every_chat_in_the_sidebar_has_an_icon_so_titles_line_up(qtbot, make_window, tmp_path, images_dir):
    from xvlm_core.messages import ImageRef

    window = relaunch(make_window, tmp_path)
    window.controller.send("With a picture", (ImageRef.from_file(images_dir / "gradient_square.png"),))
    wait_answered(qtbot, window)
    window.new_chat()
    ask(qtbot, window, "Only words")
    wait_answered(qtbot, window)
    window.chat_list.refresh()
    chat_list = window.chat_list.list
    assert chat_list.count() == 2
    assert [chat_list.item(row).icon().isNull() for row in range(2)] == [False, False]
    lefts = {chat_list.visualItemRect(chat_list.item(row)).left() for row in range(2)}
    assert len(lefts) == 1


def test_an_imported_chat_keeps_each_answers_timing_line(qtbot, make_window, tmp_path, monkeypatch):
    window = relaunch(make_window, tmp_path, ("Blue, ", "mostly."))
    ask(qtbot, window, "Colours of the sea")
    wait_answered(qtbot, window)
    timing = window.view.widgets[-1].footer.text()
    assert "tokens" in timing
    export_and_import(qtbot, window, tmp_path, monkeypatch)
    assert [widget.message.text for widget in window.view.widgets] == ["Colours of the sea", "Blue, mostly."]
    assert window.view.widgets[-1].footer.text() == timing


def test_timings_in_an_imported_file_are_checked(tmp_path):
    import json

    import pytest

    from app.history.exchange import read_chat_file
    from app.history.image_files import ImageFolder
    from app.history.records import ConversationFileError

    path = tmp_path / "chat.json"
    stats = {"ttft_s": 0.5, "decode_tok_s": "fast", "output_tokens": -3, "stop_reason": "eos", "ours": [1, 2]}
    path.write_text(json.dumps([{"role": "user", "content": "Hi"},
                                {"role": "assistant", "content": "Hello", "stats": stats}]))
    messages = read_chat_file(path, ImageFolder(tmp_path / "images")).messages
    assert messages[1].stats == AnswerStats(ttft_s=0.5, stop_reason="eos")  # only what the app reads, as it must be

    path.write_text(json.dumps([{"role": "user", "content": "Hi", "stats": {"ttft_s": 1.0}}]))
    with pytest.raises(ConversationFileError, match="answers"):
        read_chat_file(path, ImageFolder(tmp_path / "images"))


def all_within_width(chat_list) -> bool:
    """Whether every item of the sidebar's list fits its width: nothing to scroll sideways to."""
    return chat_list.horizontalScrollBar().maximum() == 0 and all(
        chat_list.visualItemRect(chat_list.item(row)).right() < chat_list.viewport().width()
        for row in range(chat_list.count()))


def test_search_results_mark_the_match_and_never_scroll_sideways(qtbot, make_window, tmp_path):
    from PySide6.QtCore import Qt

    from app.chat.chat_list import MESSAGE_ID
    from app.theme import match_colour

    window = relaunch(make_window, tmp_path)
    ask(qtbot, window, "Where is the lighthouse?")
    wait_answered(qtbot, window)
    window.new_chat()
    ask(qtbot, window, "lighthouse" + "x" * 400)  # one long word: wider than any sidebar
    wait_answered(qtbot, window)
    chat_list = window.chat_list
    chat_list.refresh()
    assert all_within_width(chat_list.list)  # the long title too
    qtbot.keyClicks(chat_list.search_edit, "lighthouse")
    qtbot.waitUntil(lambda: chat_list.list.count() == 2 and chat_list.list.item(0).data(MESSAGE_ID) is not None,
                    timeout=5000)
    qtbot.wait(50)

    assert chat_list.list.horizontalScrollBarPolicy() == Qt.ScrollBarPolicy.ScrollBarAlwaysOff
    assert all_within_width(chat_list.list)
    image = chat_list.list.viewport().grab().toImage()
    mark = match_colour(window.palette())
    for row in range(2):
        rect = chat_list.list.visualItemRect(chat_list.list.item(row))
        marked = sum(1 for x in range(rect.left(), rect.right(), 2) for y in range(rect.top(), rect.bottom(), 2)
                     if image.pixelColor(x, y) == mark)
        assert marked > 10, f"result {row} shows no marked match"


def test_the_attach_dialog_starts_in_the_pictures_folder_then_where_the_last_picture_was(
        qtbot, make_window, tmp_path, images_dir, monkeypatch):
    from PySide6.QtCore import QStandardPaths
    from test_window import wait_image_checked

    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    monkeypatch.setattr(QStandardPaths, "writableLocation", lambda _location: str(pictures))
    opened_in = []

    def pick(_parent, _caption, folder, _filter):
        opened_in.append(folder)
        return [str(images_dir / "gradient_square.png")], ""

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", pick)
    window = relaunch(make_window, tmp_path)
    qtbot.mouseClick(window.composer.attach_button, Qt.MouseButton.LeftButton)
    wait_image_checked(qtbot, window)
    window.close()

    again = relaunch(make_window, tmp_path)
    qtbot.mouseClick(again.composer.attach_button, Qt.MouseButton.LeftButton)
    assert opened_in == [str(pictures), str(images_dir)]


def test_settings_name_the_model_running_when_the_command_line_or_another_launch_chose_it(
        qtbot, make_window, app_settings, tmp_path, tiny_model_dir, monkeypatch):
    from dataclasses import replace

    from PySide6.QtWidgets import QDialog
    from test_window import wait_ready

    from app.ui.settings_dialog import SettingsDialog
    from xvlm_core.load_options import LoadOptions

    seen = []

    def look(dialog):  # what a person sees in Model > Settings; then OK, touching nothing
        seen.append((dialog.model_edit.text(), dialog.running_label.isVisibleTo(dialog), dialog.running_label.text(),
                     dialog.running_label.toolTip()))
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SettingsDialog, "exec", look)
    saved = tmp_path / "saved model"
    saved.mkdir()
    window = make_window(ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession()),
                         settings=replace(app_settings, model=str(saved)))  # and launched with --model TINY
    wait_ready(qtbot, window)
    window.settings_action.trigger()
    field, shown, line, tooltip = seen[-1]
    assert field == str(saved) and shown and "Running now" in line and tooltip == str(tiny_model_dir)
    assert window.settings.model == str(saved) and window.controller.phase.value == "ready"  # nothing changed

    window.startup.start_again(LoadOptions(str(saved)))  # another launch named the saved model
    qtbot.waitUntil(lambda: window.controller.phase.value == "loading", timeout=5_000)
    wait_ready(qtbot, window)
    window.settings_action.trigger()
    assert seen[-1][:2] == (str(saved), False)  # it runs what the field says: nothing more to tell


def test_the_export_and_import_dialogs_start_in_documents_then_in_the_folder_of_the_last_chat_file(
        qtbot, make_window, tmp_path, monkeypatch):
    from PySide6.QtCore import QStandardPaths

    documents = tmp_path / "Documents"
    documents.mkdir()
    monkeypatch.setattr(QStandardPaths, "writableLocation", lambda location: str(
        documents if location == QStandardPaths.StandardLocation.DocumentsLocation else tmp_path / "Pictures"))
    folder = tmp_path / "chats"
    folder.mkdir()
    opened_in = []

    def pick_folder(_parent, _caption, start="", *_options):
        opened_in.append(("export", start))
        return str(folder)

    def pick_file(_parent, _caption, start="", *_filters):
        opened_in.append(("import", start))
        return str(next(folder.glob("*.json"))), ""

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", pick_folder)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", pick_file)
    window = relaunch(make_window, tmp_path)
    ask(qtbot, window, "Keep this")
    wait_answered(qtbot, window)
    window.export_json_action.trigger()
    qtbot.waitUntil(lambda: any(folder.glob("*.json")) and not window.transfer_bar.running, timeout=10_000)
    window.close()

    again = relaunch(make_window, tmp_path)
    again.import_action.trigger()
    qtbot.waitUntil(lambda: again.controller.chat_id != 1 and not again.transfer_bar.running, timeout=10_000)
    again.export_json_action.trigger()
    qtbot.waitUntil(lambda: len(list(folder.glob("*.json"))) == 2 and not again.transfer_bar.running, timeout=10_000)
    assert opened_in == [("export", str(documents)), ("import", str(folder)), ("export", str(folder))]
