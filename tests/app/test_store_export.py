"""Export a chat as Markdown or as the JSON `xvlm ask --conversation` reads; import that JSON back, strictly."""

from __future__ import annotations

import io
import json
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.history import exchange, image_files
from app.history.database import ChatStore
from app.history.records import AnswerStats, ConversationFileError, TransferCancelled
from xvlm_core.errors import ImageError
from xvlm_core.model import prompt as prompt_module


def png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


def export_json(store: ChatStore, chat_id: int, folder: Path) -> Path:
    return exchange.write_json(store.load_chat(chat_id), folder)


def export_markdown(store: ChatStore, chat_id: int, folder: Path) -> Path:
    return exchange.write_markdown(store.load_chat(chat_id), folder)


def import_json(store: ChatStore, path: Path) -> int:
    """Both halves of an import, as the app runs them: the files off the UI thread, then the database."""
    return store.add_imported_chat(exchange.read_chat_file(path, store.images))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChatStore]:
    with ChatStore(tmp_path / "data" / "chats.sqlite3") as opened:
        yield opened


@pytest.fixture
def chat_id(store: ChatStore, images_dir: Path) -> int:
    """Two turns with images (one shared by both), a stopped answer and a failed one with no text."""
    chat_id = store.create_chat(model="Xmodel_VLM")
    store.add_user_message(chat_id, "What is in: these/pictures?", [images_dir / "shapes_wide.png", png_bytes("red")])
    store.finish_answer(store.begin_answer(chat_id), "Shapes, and **red**.\n\n- one\n- two", "complete")
    store.add_user_message(chat_id, "是红色的吗？", [png_bytes("red")])
    store.finish_answer(store.begin_answer(chat_id), "是的", "stopped")
    store.add_user_message(chat_id, "And now?")
    store.finish_answer(store.begin_answer(chat_id), "", "failed", AnswerStats(error="out of memory"))
    return chat_id


def test_json_export_has_the_shape_xvlm_ask_reads(store: ChatStore, chat_id: int, tmp_path: Path,
                                                   images_dir: Path) -> None:
    path = export_json(store, chat_id, tmp_path / "exports")
    assert path == tmp_path / "exports" / "What is in these pictures.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    folder = "What is in these pictures_images"
    shapes = f"{folder}/{store.load_chat(chat_id).messages[0].images[0].sha256[:16]}.png"
    red = f"{folder}/{store.load_chat(chat_id).messages[0].images[1].sha256[:16]}.png"
    assert items == [
        {"role": "user", "content": "What is in: these/pictures?", "images": [shapes, red]},
        {"role": "assistant", "content": "Shapes, and **red**.\n\n- one\n- two"},
        {"role": "user", "content": "是红色的吗？", "images": [red]},
        {"role": "assistant", "content": "是的"},
        {"role": "user", "content": "And now?"},
    ]  # the failed answer had no text, so it is left out
    assert (path.parent / shapes).read_bytes() == (images_dir / "shapes_wide.png").read_bytes()
    assert (path.parent / red).read_bytes() == png_bytes("red")
    assert sorted(p.name for p in (path.parent / folder).iterdir()) == sorted([Path(shapes).name, Path(red).name])


def test_json_export_is_read_by_the_xvlm_command(store: ChatStore, chat_id: int, tmp_path: Path, capsys,
                                                 tiny_model_dir: Path, tiny_tower_dir: Path) -> None:
    from xvlm_core.cli import main

    path = export_json(store, chat_id, tmp_path / "exports")
    code = main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--json",
                 "--max-new-tokens", "4", "--conversation", str(path), "One more question?"])
    assert code == 0, capsys.readouterr().err
    prompt = json.loads(capsys.readouterr().out)["prompt"]
    exported = json.loads(path.read_text(encoding="utf-8"))
    assert prompt.count("<image>") == sum(len(item.get("images", [])) for item in exported) > 0
    assert all(item["content"].strip() in prompt for item in exported)
    assert prompt.endswith("USER: One more question? ASSISTANT:")


def test_export_then_import_gives_the_same_chat(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    path = export_json(store, chat_id, tmp_path / "moved" / "elsewhere")
    imported_id = import_json(store, path)
    original, imported = store.load_chat(chat_id), store.load_chat(imported_id)
    assert imported_id != chat_id
    assert imported.title == f"{original.title} (2)"  # told apart from the chat it came from
    kept = [m for m in original.messages if m.text or m.role == "user"]
    assert [(m.role, m.text) for m in imported.messages] == [(m.role, m.text) for m in kept]
    assert [[Path(i.path).read_bytes() for i in m.images] for m in imported.messages] == [
        [Path(i.path).read_bytes() for i in m.images] for m in kept
    ]
    assert all(m.status == "complete" for m in imported.messages)
    # Exporting the imported chat, under the same title again, gives the same file again.
    store.rename_chat(imported_id, original.title)
    again = export_json(store, imported_id, tmp_path / "again")
    assert json.loads(again.read_text(encoding="utf-8")) == json.loads(path.read_text(encoding="utf-8"))


def test_markdown_export_links_its_images_relatively(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    path = export_markdown(store, chat_id, tmp_path / "exports")
    assert path.name == "What is in these pictures.md"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# What is in: these/pictures?\n")
    assert "model Xmodel_VLM" in text
    for fragment in ("## You", "## Assistant", "Shapes, and **red**.\n\n- one\n- two", "是红色的吗？",
                     "*(answer stopped)*", "*(answer failed)*"):
        assert fragment in text
    links = [line[line.index("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(links) == 3
    targets = [path.parent / urllib.parse.unquote(link) for link in links]
    assert all(not Path(urllib.parse.unquote(link)).is_absolute() for link in links)
    assert [target.read_bytes() for target in targets] == [
        Path(image.path).read_bytes() for message in store.load_chat(chat_id).messages for image in message.images
    ]


def test_exports_never_overwrite_and_names_are_safe(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    first = export_markdown(store, chat_id, tmp_path)
    second = export_markdown(store, chat_id, tmp_path)
    assert (first.name, second.name) == ("What is in these pictures.md", "What is in these pictures-2.md")
    odd = store.create_chat()
    store.rename_chat(odd, 'CON')
    assert export_json(store, odd, tmp_path).name == f"chat-{odd}.json"
    store.rename_chat(odd, '../../a<b>:c|d?*"e\\f')
    exported = export_json(store, odd, tmp_path)
    # No leading dots: neither hidden nor a way up.
    assert exported.parent == tmp_path and exported.name == "a b c d e f.json"
    assert json.loads(exported.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("title", ["这张图片里有什么东西" * 8, "🙂" * 60, "👩‍👩‍👧" * 30, "é" * 200],
                         ids=["80 CJK", "60 emoji", "joined emoji", "200 accented"])
def test_export_names_fit_the_file_system_in_bytes(store: ChatStore, tmp_path: Path, title: str) -> None:
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "look", [png_bytes("red")])
    store.rename_chat(chat_id, title)
    for export in (export_json, export_markdown, export_json):  # the third one is named "-2"
        path = export(store, chat_id, tmp_path)
        assert path.is_file() and len(path.name.encode("utf-8")) <= 200
        assert path.stem.removesuffix("-2") and title.startswith(path.stem.removesuffix("-2"))
        assert not path.stem.endswith("\u200d")
        assert (tmp_path / f"{path.stem}_images").is_dir()


def test_import_reads_and_hashes_each_distinct_image_once(store: ChatStore, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    path = write_conversation(folder, [{"role": "user", "content": f"again {n}", "images": ["pic.png"] * 10}
                                       for n in range(50)])
    hashed = []
    real_digest = image_files.digest
    monkeypatch.setattr(image_files, "digest", lambda data: hashed.append(len(data)) or real_digest(data))
    progress: list[tuple[int, int]] = []
    turns = exchange.read_chat_file(path, store.images, lambda done, total: progress.append((done, total)))
    assert len(hashed) == 1 and progress == [(0, 1), (1, 1)]
    chat = store.load_chat(store.add_imported_chat(turns))
    assert len(chat.messages) == 50 and all(len(m.images) == 10 for m in chat.messages)


def cancelled_after_one(cancel: threading.Event):
    """A progress callback that asks to cancel once the first file is done."""

    def on_progress(done: int, total: int) -> None:
        if done == 1:
            cancel.set()

    return on_progress


def test_a_cancelled_transfer_leaves_nothing_behind(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    cancel = threading.Event()
    with pytest.raises(TransferCancelled):
        exchange.write_json(store.load_chat(chat_id), tmp_path / "out", cancelled_after_one(cancel), cancel)
    assert list((tmp_path / "out").iterdir()) == []
    path = write_conversation(tmp_path / "in", [{"role": "user", "content": "x", "images": ["pic.png"]}])
    with pytest.raises(TransferCancelled):
        exchange.read_chat_file(path, store.images, None, cancel)
    assert not list(store.images_dir.glob(image_files.digest(png_bytes("blue")) + ".*"))


def test_a_cancelled_export_keeps_the_images_of_an_earlier_one(store: ChatStore, chat_id: int,
                                                                tmp_path: Path) -> None:
    markdown = export_markdown(store, chat_id, tmp_path / "out")
    images = sorted((tmp_path / "out").glob("*_images/*"))
    assert len(images) == 2
    cancel = threading.Event()
    with pytest.raises(TransferCancelled):
        exchange.write_json(store.load_chat(chat_id), tmp_path / "out", cancelled_after_one(cancel), cancel)
    assert sorted((tmp_path / "out").glob("*_images/*")) == images
    assert sorted((tmp_path / "out").glob("*.*")) == [markdown]


def write_conversation(folder: Path, items: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pic.png").write_bytes(png_bytes("blue"))
    path = folder / "conversation.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_import_of_a_hand_written_conversation(store: ChatStore, tmp_path: Path) -> None:
    path = write_conversation(tmp_path / "in", [
        {"role": "user", "content": "Hello there, what is this?", "images": ["pic.png", "pic.png"]},
        {"role": "assistant", "content": "A blue rectangle."},
    ])
    chat = store.load_chat(import_json(store, path))
    assert chat.title == "Hello there, what is this?"
    assert [len(m.images) for m in chat.messages] == [2, 0]
    assert Path(chat.messages[0].images[0].path).read_bytes() == png_bytes("blue")
    assert [c.id for c in store.list_chats()] == [chat.id]


def _symlink_outside(folder: Path) -> str:
    outside = folder.parent / "outside.png"
    outside.write_bytes(png_bytes("green"))
    os.symlink(outside, folder / "link.png")
    return "link.png"


BAD_CONVERSATIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "object": (lambda folder: {"role": "user", "content": "hi"}, "expected a JSON list"),
    "empty": (lambda folder: [], "at least one message"),
    "string item": (lambda folder: ["hi"], "needs \"role\""),
    "system role": (lambda folder: [{"role": "system", "content": "x"}], "needs \"role\""),
    "no content": (lambda folder: [{"role": "user"}], "\"content\" must be a string"),
    "number content": (lambda folder: [{"role": "user", "content": 5}], "\"content\" must be a string"),
    "unknown field": (lambda folder: [{"role": "user", "content": "x", "status": "ok"}], "unknown fields 'status'"),
    "images not a list": (lambda folder: [{"role": "user", "content": "x", "images": "pic.png"}], "list of file names"),
    "image not a string": (lambda folder: [{"role": "user", "content": "x", "images": [1]}], "list of file names"),
    "null images": (lambda folder: [{"role": "user", "content": "x", "images": None}], "list of file names"),
    "assistant image": (lambda folder: [{"role": "assistant", "content": "x", "images": ["pic.png"]}],
                        "only user messages"),
    "absolute path": (lambda folder: [{"role": "user", "content": "x", "images": [str(folder / "pic.png")]}],
                      "absolute path"),
    "windows drive": (lambda folder: [{"role": "user", "content": "x", "images": ["C:pic.png"]}], "absolute path"),
    "backslashes": (lambda folder: [{"role": "user", "content": "x", "images": ["\\\\server\\share\\pic.png"]}],
                    "backslash"),
    "empty name": (lambda folder: [{"role": "user", "content": "x", "images": [""]}], "not a file name"),
    "parent folder": (lambda folder: [{"role": "user", "content": "x", "images": ["../outside.png"]}],
                      r"'\.\.' component"),
    "dotted path": (lambda folder: [{"role": "user", "content": "x", "images": ["./sub/../pic.png"]}],
                    r"'\.\.' component"),
    "link outside": (lambda folder: [{"role": "user", "content": "x", "images": [_symlink_outside(folder)]}],
                     "leads outside"),
    "missing image": (lambda folder: [{"role": "user", "content": "x", "images": ["nope.png"]}], "does not exist"),
    "folder as image": (lambda folder: (folder / "sub").mkdir()
                        or [{"role": "user", "content": "x", "images": ["sub"]}], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CONVERSATIONS))
def test_import_refuses_a_bad_conversation_and_saves_nothing(store: ChatStore, tmp_path: Path, case: str) -> None:
    make, message = BAD_CONVERSATIONS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder.parent / "outside.png").write_bytes(png_bytes("green"))
    path = write_conversation(folder, make(folder))
    with pytest.raises(ConversationFileError, match=message):
        import_json(store, path)
    assert store.list_chats() == []


def test_import_refuses_files_that_are_not_json_or_too_big(store: ChatStore, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    for content, message in [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe garbage", "cannot read it"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]:
        path.write_bytes(content)
        with pytest.raises(ConversationFileError, match=message):
            import_json(store, path)
    with pytest.raises(ConversationFileError, match="no such file"):
        import_json(store, tmp_path / "missing.json")

    path = write_conversation(tmp_path / "big", [{"role": "user", "content": "x" * 100}] * 3)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_BYTES", 200)
    with pytest.raises(ConversationFileError, match="larger than"):
        import_json(store, path)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_BYTES", 10_000)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_MESSAGES", 2)
    with pytest.raises(ConversationFileError, match="more than 2 messages"):
        import_json(store, path)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_MESSAGES", 10)
    monkeypatch.setattr(prompt_module, "MAX_MESSAGE_CHARS", 99)
    with pytest.raises(ConversationFileError, match="longer than 99 characters"):
        import_json(store, path)
    assert store.list_chats() == []


def test_import_refuses_an_image_that_is_not_one(store: ChatStore, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    path = write_conversation(folder, [
        {"role": "user", "content": "fine", "images": ["pic.png"]},
        {"role": "user", "content": "not fine", "images": ["notes.txt"]},
    ])
    (folder / "notes.txt").write_text("just text", encoding="utf-8")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        import_json(store, path)
    assert store.list_chats() == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_export_refuses_a_stored_image_that_is_a_fifo_or_a_giant_without_waiting(store: ChatStore, chat_id: int,
                                                                                   tmp_path: Path) -> None:
    from fifo_guard import outcome_without_hanging

    from app.history.records import StoreError

    chat = store.load_chat(chat_id)
    stored = Path(chat.messages[0].images[0].path)
    stored.unlink()
    os.mkfifo(stored)
    _, error = outcome_without_hanging(lambda: exchange.write_json(chat, tmp_path / "out"), [stored])
    assert isinstance(error, StoreError)
    assert str(error) == (f"An image of this chat cannot be exported: {stored}: not a regular file (a device, pipe "
                          "or socket); only ordinary files are read.")
    stored.unlink()
    with stored.open("wb") as file:
        file.truncate(200 * 2**20)  # sparse: no disk taken, and more than any image the history keeps
    with pytest.raises(StoreError, match=r"cannot be exported: .*: the file is larger than 100 MB\.$"):
        export_markdown(store, chat_id, tmp_path / "out")
    assert sum(path.stat().st_size for path in (tmp_path / "out").rglob("*")) < 2**20


@pytest.fixture
def regenerated(store: ChatStore) -> int:
    """A chat whose last answer was regenerated twice; the person went back to the second of three versions."""
    chat_id = store.create_chat()
    store.add_user_message(chat_id, "Name a colour")
    answer = store.begin_answer(chat_id)
    store.finish_answer(answer, "Red.", "complete", AnswerStats(output_tokens=2))
    for text in ("Teal, the colour of a duck's wing.", "Ochre."):
        store.begin_version(answer)
        store.finish_answer(answer, text, "complete")
    store.show_version(answer, 1)
    return chat_id


def test_the_other_versions_of_an_answer_travel_through_export_and_import(store, regenerated, tmp_path):
    before = store.load_chat(regenerated)
    assert [version.text for version in before.versions] == ["Red.", "Teal, the colour of a duck's wing.", "Ochre."]
    assert before.messages[-1].text.startswith("Teal")

    items = json.loads(export_json(store, regenerated, tmp_path / "out").read_text())
    assert items[-1]["version"] == 1
    assert [other["content"] for other in items[-1]["other_versions"]] == ["Red.", "Ochre."]
    assert items[-1]["other_versions"][0]["stats"] == {"output_tokens": 2}
    markdown = export_markdown(store, regenerated, tmp_path / "out").read_text()
    assert "version 2 of 3" in markdown and "Red." in markdown and "Ochre." in markdown

    after = store.load_chat(import_json(store, tmp_path / "out" / f"{items[0]['content']}.json"))
    assert [version.text for version in after.versions] == [version.text for version in before.versions]
    assert after.messages[-1].text == before.messages[-1].text
    assert after.versions[0].stats == AnswerStats(output_tokens=2)


@pytest.mark.parametrize(("field", "value", "refusal"), [
    ("version", 3, "version"),
    ("version", True, "version"),
    ("other_versions", [{"content": "x", "colour": "red"}], "other version 1"),
    ("other_versions", [{"content": 5}], "content"),
    ("other_versions", [{"content": "x"}] * 101, "at most 100"),
])
def test_other_versions_from_outside_are_checked(store, tmp_path, field, value, refusal):
    path = tmp_path / "odd.json"
    answer = {"role": "assistant", "content": "A", "other_versions": [{"content": "B"}], field: value}
    path.write_text(json.dumps([{"role": "user", "content": "Q"}, answer]))
    with pytest.raises(ConversationFileError, match=refusal):
        exchange.read_chat_file(path, store.images)


def test_only_the_last_answer_has_other_versions(store, tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([{"role": "user", "content": "Q"},
                                {"role": "assistant", "content": "A", "other_versions": [{"content": "B"}]},
                                {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]))
    with pytest.raises(ConversationFileError, match="only the last answer"):
        exchange.read_chat_file(path, store.images)
