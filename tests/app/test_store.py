"""The chat store: round trips, images, the chat list, streaming writes, one writer, recovery from a damaged file."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import platformdirs
import pytest
from PIL import Image

from app.history import image_files
from app.history.database import ChatStore, default_store_path
from app.history.records import AnswerStats, ReadOnlyStoreError, Status, StoreError, StoreInUseError, auto_title
from xvlm_core.errors import ImageError


def png_bytes(color: str = "red", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def raw_rows(path: Path, sql: str, parameters: tuple = ()) -> list[tuple]:
    """What is really on disk, read through a connection of the test's own."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, parameters).fetchall()
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chats.sqlite3"


@pytest.fixture
def store(db_path: Path) -> Iterator[ChatStore]:
    with ChatStore(db_path) as opened:
        yield opened


def test_default_location_is_the_user_data_folder(isolated_user_dirs: Path) -> None:
    expected = Path(platformdirs.user_data_dir("XVLM Chat", appauthor=False)) / "chats.sqlite3"
    assert default_store_path() == expected
    assert str(expected).startswith(str(isolated_user_dirs))
    with ChatStore() as store:
        assert store.path == expected
        store.create_chat()
    assert expected.is_file()


def test_database_uses_wal_foreign_keys_and_the_current_schema(store: ChatStore, db_path: Path) -> None:
    assert raw_rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert raw_rows(db_path, "PRAGMA user_version") == [(4,)]
    # The store's own connection enforces foreign keys: a message of a chat that does not exist is refused.
    with pytest.raises(sqlite3.IntegrityError):
        store._read().execute(
            "INSERT INTO messages (chat_id, position, role, created) VALUES (999, 0, 'user', 0)"
        )


def test_chat_round_trip_with_images_and_stats(store: ChatStore, images_dir: Path, tmp_path: Path) -> None:
    original = tmp_path / "holiday.png"
    original.write_bytes((images_dir / "shapes_wide.png").read_bytes())
    chat_id = store.create_chat(model="Xmodel_VLM")
    question = store.add_user_message(chat_id, "What is in these pictures?", [original, png_bytes("blue")])
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "Shapes, and a blue square.", "complete",
                        AnswerStats(output_tokens=7, decode_tok_s=41.5))
    stopped = store.begin_answer(chat_id)
    store.finish_answer(stopped, "Half an ans", "stopped", AnswerStats(output_tokens=3))
    original.unlink()  # the chat keeps its own copy

    store.close()
    with ChatStore(store.path) as reopened:
        chat = reopened.load_chat(chat_id)

    assert (chat.id, chat.title, chat.model) == (chat_id, "What is in these pictures?", "Xmodel_VLM")
    assert not chat.pinned
    assert [(m.id, m.role, m.text, m.status) for m in chat.messages] == [
        (question, "user", "What is in these pictures?", "complete"),
        (answer, "assistant", "Shapes, and a blue square.", "complete"),
        (stopped, "assistant", "Half an ans", "stopped"),
    ]
    assert chat.messages[1].stats == AnswerStats(output_tokens=7, decode_tok_s=41.5)
    first, second = (Path(image.path) for image in chat.messages[0].images)
    assert first.read_bytes() == (images_dir / "shapes_wide.png").read_bytes()
    assert second.read_bytes() == png_bytes("blue")
    assert all(Path(image.path).parent == store.images_dir for image in chat.messages[0].images)
    assert [image.sha256 for image in chat.messages[0].images] == [first.stem, second.stem]
    assert chat.created <= chat.updated


def test_images_are_stored_once_under_their_hash(store: ChatStore) -> None:
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "one", [png_bytes("green")])
    store.add_user_message(chat_id, "again", [png_bytes("green"), png_bytes("green")])
    messages = store.load_chat(chat_id).messages
    paths = {Path(image.path) for message in messages for image in message.images}
    assert len(paths) == 1
    (path,) = paths

    assert path.name == hashlib.sha256(png_bytes("green")).hexdigest() + ".png"
    assert sorted(p.name for p in store.images_dir.iterdir()) == sorted([path.name, path.stem + ".thumb.jpg"])
    assert store.list_chats()[0].thumbnail == store.images_dir / (path.stem + ".thumb.jpg")


def test_thumbnail_is_small_and_upright(store: ChatStore) -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; the picture is 1000 wide as stored, upright 1000 tall
    Image.new("RGB", (1000, 400), "orange").save(buffer, "JPEG", exif=exif)
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "rotated", [buffer.getvalue()])
    with Image.open(store.list_chats()[0].thumbnail) as image:
        assert image.format == "JPEG"
        assert image.size == (102, 256)


def test_transparent_and_sixteen_bit_images_get_thumbnails(store: ChatStore) -> None:
    transparent = io.BytesIO()
    Image.new("RGBA", (50, 50), (0, 0, 0, 0)).save(transparent, "PNG")
    deep = io.BytesIO()
    gradient = Image.new("I;16", (64, 8))
    gradient.putdata([x * 1000 for x in range(64)] * 8)
    gradient.save(deep, "PNG")
    store.add_user_message(store.create_chat(), "transparent", [transparent.getvalue()])
    store.add_user_message(store.create_chat(), "sixteen bits", [deep.getvalue()])
    ramp, clear = (chat.thumbnail for chat in store.list_chats())
    with Image.open(clear) as image:
        assert image.convert("RGB").getpixel((25, 25)) >= (250, 250, 250)  # transparency shows as white
    with Image.open(ramp) as image:
        grey = image.convert("L")
        assert grey.getpixel((0, 0)) < 10 and grey.getpixel((63, 0)) > 200  # scaled, not clipped to white


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: b"GIF89a not really", "not an image"),
        (lambda tmp: b"%PDF-1.7 hello", "not an image"),
        (lambda tmp: png_bytes()[:60], "truncated or damaged"),
        (lambda tmp: tmp / "missing.png", "no such file"),
        (lambda tmp: tmp, "folder"),
        (lambda tmp: _huge_png(), "too large"),
    ],
    ids=["garbage", "pdf", "truncated", "missing", "folder", "decompression-bomb"],
)
def test_bad_image_is_refused_and_nothing_is_saved(store: ChatStore, tmp_path: Path, make, message: str) -> None:
    chat_id = store.create_chat()
    with pytest.raises(ImageError, match=message):
        store.add_user_message(chat_id, "look", [png_bytes(), make(tmp_path)])
    assert store.load_chat(chat_id).messages == []
    assert store.load_chat(chat_id).title == ""


def _huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buffer, "PNG")  # 81 megapixels, a few kilobytes on disk
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("  What colour is the car?  \nAnd the sky?", "What colour is the car?"),
        ("\n\nsecond line first", "second line first"),
        (
            "Please describe every object you can see in this photograph, including the small ones at the back",
            "Please describe every object you can see in this photograph…",
        ),
        ("这张图片里有什么东西？" * 10, ("这张图片里有什么东西？" * 10)[:60] + "…"),
        ("", ""),
    ],
)
def test_first_question_becomes_the_title(question: str, title: str) -> None:
    assert auto_title(question) == title
    assert len(auto_title(question)) <= 61


def test_title_comes_from_the_first_question_and_can_be_renamed(store: ChatStore) -> None:
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "", [png_bytes()])  # an image alone leaves the chat untitled
    assert store.load_chat(chat_id).title == ""
    store.add_user_message(chat_id, "Is this red?")
    store.add_user_message(chat_id, "And now?")
    assert store.load_chat(chat_id).title == "Is this red?"
    store.rename_chat(chat_id, "  Red\nthings ")
    store.add_user_message(chat_id, "More")
    assert store.load_chat(chat_id).title == "Red things"


def test_chat_list_puts_pinned_first_then_newest(store: ChatStore) -> None:
    old, middle, new = (store.create_chat() for _ in range(3))
    store.add_user_message(old, "old question", [png_bytes("red"), png_bytes("blue")])
    store.add_user_message(middle, "middle question")
    store.add_user_message(new, "new question")
    store.set_pinned(old, True)
    chats = store.list_chats()
    assert [chat.id for chat in chats] == [old, new, middle]
    assert [chat.pinned for chat in chats] == [True, False, False]
    assert [chat.message_count for chat in chats] == [1, 1, 1]
    first_image = Path(store.load_chat(old).messages[0].images[0].path)
    assert chats[0].thumbnail == first_image.with_suffix(".thumb.jpg") and chats[1].thumbnail is None
    store.add_user_message(middle, "a follow-up moves it up")
    assert [chat.id for chat in store.list_chats()] == [old, middle, new]
    store.set_pinned(old, False)
    assert [chat.id for chat in store.list_chats()] == [middle, new, old]


def test_delete_can_be_undone_until_purged(store: ChatStore, db_path: Path) -> None:
    kept, deleted = store.create_chat(), store.create_chat()
    store.add_user_message(kept, "shared picture", [png_bytes("red")])
    store.add_user_message(deleted, "about a unicorn", [png_bytes("red"), png_bytes("blue")])
    store.delete_chat(deleted)
    assert [chat.id for chat in store.list_chats()] == [kept]
    assert store.search("unicorn") == []
    store.restore_chat(deleted)
    assert {chat.id for chat in store.list_chats()} == {kept, deleted}
    assert len(store.search("unicorn")) == 1

    store.delete_chat(deleted)
    assert store.purge_deleted(older_than=timedelta(days=30)) == 0  # deleted just now: kept for undo
    blue = Path(store.load_chat(deleted).messages[0].images[1].path)
    assert store.purge_deleted() == 1
    with pytest.raises(StoreError, match="no chat"):
        store.load_chat(deleted)
    assert raw_rows(db_path, "SELECT COUNT(*) FROM messages WHERE chat_id = ?", (deleted,)) == [(0,)]
    assert not blue.exists()  # used only by the purged chat
    assert Path(store.load_chat(kept).messages[0].images[0].path).exists()  # still used by another chat
    assert raw_rows(db_path, "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')") == []


def test_truncate_after_for_regenerate(store: ChatStore) -> None:
    chat_id = store.create_chat()
    first = store.add_user_message(chat_id, "first")
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "first answer")
    second = store.add_user_message(chat_id, "second")
    store.finish_answer(store.begin_answer(chat_id), "second answer")

    store.truncate_after(first)
    assert [m.text for m in store.load_chat(chat_id).messages] == ["first"]
    assert store.search("second") == []
    again = store.begin_answer(chat_id)
    store.finish_answer(again, "a new answer")
    assert [(m.id, m.text) for m in store.load_chat(chat_id).messages] == [(first, "first"), (again, "a new answer")]
    with pytest.raises(StoreError, match="no message"):
        store.truncate_after(second)


def test_regenerated_versions_are_kept_until_the_chat_goes_on(store: ChatStore, db_path: Path) -> None:
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "Hi")
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "one")
    for text in ("", "three"):  # an answer with no text is nothing to go back to: not kept
        store.begin_version(answer)
        store.finish_answer(answer, text, Status.FAILED if not text else Status.COMPLETE)
    assert [version.text for version in store.load_chat(chat_id).versions] == ["one", "three"]
    store.show_version(answer, 0)
    chat = store.load_chat(chat_id)
    assert chat.messages[-1].text == "one" and chat.versions[0] is chat.messages[-1]
    with sqlite3.connect(db_path) as db:  # as a tool or a damaged disk might leave them
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("UPDATE answer_versions SET status = 'odd', stats = 'not json'")
    db.close()
    chat = store.load_chat(chat_id)
    assert (chat.versions[1].text, chat.versions[1].status) == ("three", "interrupted")
    assert chat.versions[1].stats == AnswerStats()
    assert len(chat.damage) == 2

    store.add_user_message(chat_id, "And then?")
    assert store.load_chat(chat_id).versions == () and raw_rows(db_path, "SELECT * FROM answer_versions") == []


def test_streaming_writes_at_most_once_per_interval(db_path: Path) -> None:
    with ChatStore(db_path, stream_write_interval=3600) as store:
        chat_id = store.create_chat()
        store.add_user_message(chat_id, "count")
        answer = store.begin_answer(chat_id)
        store.update_streaming(answer, "one")  # the first piece is written at once
        for text in ("one two", "one two three"):
            store.update_streaming(answer, text)
        assert raw_rows(db_path, "SELECT text, status FROM messages WHERE id = ?", (answer,)) == [("one", "streaming")]
        assert store.load_chat(chat_id).messages[-1].text == "one two three"  # the store itself is up to date
        store.flush()
        assert raw_rows(db_path, "SELECT text FROM messages WHERE id = ?", (answer,)) == [("one two three",)]


def test_streaming_writes_when_the_interval_has_passed(db_path: Path) -> None:
    with ChatStore(db_path, stream_write_interval=0) as store:
        chat_id = store.create_chat()
        answer = store.begin_answer(chat_id)
        for text in ("a", "a b", "a b c"):
            store.update_streaming(answer, text)
            assert raw_rows(db_path, "SELECT text FROM messages WHERE id = ?", (answer,)) == [(text,)]
        store.finish_answer(answer, "a b c d", "complete", AnswerStats(output_tokens=4))
        store.update_streaming(answer, "late chunk")  # a finished answer is never overwritten
        assert raw_rows(db_path, "SELECT text, status FROM messages WHERE id = ?", (answer,)) == [
            ("a b c d", "complete")
        ]


def test_close_writes_pending_text_and_reopen_marks_it_interrupted(db_path: Path) -> None:
    with ChatStore(db_path, stream_write_interval=3600) as store:
        chat_id = store.create_chat()
        store.add_user_message(chat_id, "tell me a story")
        answer = store.begin_answer(chat_id)
        store.update_streaming(answer, "Once")
        store.update_streaming(answer, "Once upon a time")
    with ChatStore(db_path) as store:
        last = store.load_chat(chat_id).messages[-1]
        assert (last.id, last.text, last.status) == (answer, "Once upon a time", "interrupted")


def test_read_only_store_reads_but_refuses_writes(db_path: Path) -> None:
    with ChatStore(db_path) as writer:
        chat_id = writer.create_chat()
        writer.add_user_message(chat_id, "hello from the writer")
        answer = writer.begin_answer(chat_id)
        with ChatStore(db_path, read_only=True) as reader:
            assert [chat.id for chat in reader.list_chats()] == [chat_id]
            assert reader.search("writer")[0].chat_id == chat_id
            # A reader never marks the writer's live answer as interrupted.
            assert reader.load_chat(chat_id).messages[-1].status == "streaming"
            for change in (
                lambda: reader.create_chat(),
                lambda: reader.add_user_message(chat_id, "no", [png_bytes()]),
                lambda: reader.update_streaming(answer, "no"),
                lambda: reader.rename_chat(chat_id, "no"),
                lambda: reader.delete_chat(chat_id),
                lambda: reader.purge_deleted(),
            ):
                with pytest.raises(ReadOnlyStoreError, match="read-only"):
                    change()
        assert writer.load_chat(chat_id).title == "hello from the writer"
    assert not (db_path.parent / "images").exists()  # the refused image was not copied in
    with ChatStore(db_path, read_only=True) as reader:  # also with no writer running
        assert [chat.title for chat in reader.list_chats()] == ["hello from the writer"]


def test_a_second_writer_is_refused_until_the_first_closes(db_path: Path) -> None:
    first = ChatStore(db_path)
    with pytest.raises(StoreInUseError, match="Another XVLM Chat window"):
        ChatStore(db_path)
    first.close()
    with ChatStore(db_path) as second:
        second.create_chat()


def test_read_only_without_a_history_says_so(db_path: Path) -> None:
    with pytest.raises(StoreError, match="no chat history"):
        ChatStore(db_path, read_only=True)


def test_garbage_database_is_moved_aside_and_a_new_one_started(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = b"this is not a database, just some bytes " * 200
    db_path.write_bytes(garbage)
    Path(f"{db_path}-wal").write_bytes(b"wal garbage")
    with ChatStore(db_path) as store:
        aside = store.recovered_from
        assert aside is not None
        assert aside.parent == db_path.parent
        assert aside.name.startswith("chats.sqlite3.corrupt-")
        assert aside.read_bytes() == garbage
        assert Path(f"{aside}-wal").read_bytes() == b"wal garbage"
        chat_id = store.create_chat()
        store.add_user_message(chat_id, "a fresh start")
    with ChatStore(db_path) as store:
        assert store.recovered_from is None
        assert [chat.title for chat in store.list_chats()] == ["a fresh start"]


def test_database_damaged_inside_is_moved_aside(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        chat_id = store.create_chat()
        for number in range(200):
            store.add_user_message(chat_id, f"message {number} " + "padding " * 50)
    data = bytearray(db_path.read_bytes())
    page_size = 4096
    data[3 * page_size:len(data) - page_size] = b"\xa5" * (len(data) - 4 * page_size)  # keep the header intact
    db_path.write_bytes(bytes(data))
    with ChatStore(db_path) as store:
        assert store.recovered_from is not None and store.recovered_from.read_bytes() == bytes(data)
        assert store.list_chats() == []


def test_history_from_a_newer_app_is_not_touched(db_path: Path) -> None:
    with ChatStore(db_path) as store:
        store.create_chat()
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer version"):
        ChatStore(db_path)
    assert raw_rows(db_path, "SELECT COUNT(*) FROM chats") == [(1,)]
    assert not list(db_path.parent.glob("*.corrupt-*"))


def test_sqlite_errors_leave_the_store_as_store_errors(store: ChatStore) -> None:
    chat_id = store.create_chat()
    store._read().close()  # the connection fails underneath, as a failing disk would make it
    for call in (store.list_chats, lambda: store.load_chat(chat_id), lambda: store.search("anything"),
                 lambda: store.rename_chat(chat_id, "new"), lambda: store.begin_answer(chat_id)):
        with pytest.raises(StoreError, match="chat history at .* could not be"):
            call()


def test_closed_store_says_so(store: ChatStore) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.list_chats()


def test_stats_are_json(store: ChatStore) -> None:
    chat_id = store.create_chat()
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "x", "failed", AnswerStats(error="内存不足", output_tokens=3))
    stats = raw_rows(store.path, "SELECT stats FROM messages WHERE id = ?", (answer,))[0][0]
    assert json.loads(stats) == {"error": "内存不足", "output_tokens": 3}
    with pytest.raises(ValueError, match="status"):
        store.finish_answer(answer, "x", "streaming")


def test_an_image_prepared_on_another_thread_is_not_decoded_again(store: ChatStore, monkeypatch) -> None:
    import threading

    calls = []
    real_thumbnail = image_files.make_thumbnail
    monkeypatch.setattr(image_files, "make_thumbnail",
                        lambda data, name: calls.append(name) or real_thumbnail(data, name))
    worker = threading.Thread(target=store.images.store, args=(png_bytes(),))
    worker.start()
    worker.join()
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "look", [png_bytes()])
    assert len(calls) == 1
    (image,) = store.load_chat(chat_id).messages[0].images
    assert Path(image.path).read_bytes() == png_bytes()
