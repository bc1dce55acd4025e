"""Export a chat as Markdown or as the JSON `xvlm ask --conversation` reads; import that JSON back, strictly."""

from __future__ import annotations

import io
import json
import os
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.store import ChatStore, ConversationFileError
from xvlm_core import prompt as prompt_module
from xvlm_core.errors import ImageError


def png_bytes(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buffer, "PNG")
    return buffer.getvalue()


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
    store.finish_answer(store.begin_answer(chat_id), "", "failed", {"error": "out of memory"})
    return chat_id


def test_json_export_has_the_shape_xvlm_ask_reads(store: ChatStore, chat_id: int, tmp_path: Path,
                                                   images_dir: Path) -> None:
    path = store.export_json(chat_id, tmp_path / "exports")
    assert path == tmp_path / "exports" / "What is in these pictures.json"
    items = json.loads(path.read_text(encoding="utf-8"))
    folder = "What is in these pictures_images"
    shapes = f"{folder}/{store.load_chat(chat_id).messages[0].images[0].name[:16]}.png"
    red = f"{folder}/{store.load_chat(chat_id).messages[0].images[1].name[:16]}.png"
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

    path = store.export_json(chat_id, tmp_path / "exports")
    code = main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--json",
                 "--max-new-tokens", "4", "--conversation", str(path), "One more question?"])
    assert code == 0, capsys.readouterr().err
    prompt = json.loads(capsys.readouterr().out)["prompt"]
    exported = json.loads(path.read_text(encoding="utf-8"))
    assert prompt.count("<image>") == sum(len(item.get("images", [])) for item in exported) > 0
    assert all(item["content"].strip() in prompt for item in exported)
    assert prompt.endswith("USER: One more question? ASSISTANT:")


def test_export_then_import_gives_the_same_chat(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    path = store.export_json(chat_id, tmp_path / "moved" / "elsewhere")
    imported_id = store.import_json(path)
    original, imported = store.load_chat(chat_id), store.load_chat(imported_id)
    assert imported_id != chat_id
    assert imported.title == original.title
    kept = [m for m in original.messages if m.text or m.role == "user"]
    assert [(m.role, m.text) for m in imported.messages] == [(m.role, m.text) for m in kept]
    assert [[p.read_bytes() for p in m.images] for m in imported.messages] == [
        [p.read_bytes() for p in m.images] for m in kept
    ]
    assert all(m.status == "complete" for m in imported.messages)
    # Exporting the imported chat gives the same file again.
    again = store.export_json(imported_id, tmp_path / "again")
    assert json.loads(again.read_text(encoding="utf-8")) == json.loads(path.read_text(encoding="utf-8"))


def test_markdown_export_links_its_images_relatively(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    path = store.export_markdown(chat_id, tmp_path / "exports")
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
        image.read_bytes() for message in store.load_chat(chat_id).messages for image in message.images
    ]


def test_exports_never_overwrite_and_names_are_safe(store: ChatStore, chat_id: int, tmp_path: Path) -> None:
    first = store.export_markdown(chat_id, tmp_path)
    second = store.export_markdown(chat_id, tmp_path)
    assert (first.name, second.name) == ("What is in these pictures.md", "What is in these pictures-2.md")
    odd = store.create_chat()
    store.rename_chat(odd, 'CON')
    assert store.export_json(odd, tmp_path).name == f"chat-{odd}.json"
    store.rename_chat(odd, '../../a<b>:c|d?*"e\\f')
    exported = store.export_json(odd, tmp_path)
    # No leading dots: neither hidden nor a way up.
    assert exported.parent == tmp_path and exported.name == "a b c d e f.json"
    assert json.loads(exported.read_text(encoding="utf-8")) == []


def write_conversation(folder: Path, items: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pic.png").write_bytes(png_bytes("blue"))
    path = folder / "conversation.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_import_of_a_hand_written_conversation(store: ChatStore, tmp_path: Path) -> None:
    path = write_conversation(tmp_path / "in", [
        {"role": "user", "content": "Hello there, what is this?", "images": ["pic.png", "./sub/../pic.png"]},
        {"role": "assistant", "content": "A blue rectangle."},
    ])
    chat = store.load_chat(store.import_json(path))
    assert chat.title == "Hello there, what is this?"
    assert [len(m.images) for m in chat.messages] == [2, 0]
    assert chat.messages[0].images[0].read_bytes() == png_bytes("blue")
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
                      "relative to the conversation file"),
    "windows drive": (lambda folder: [{"role": "user", "content": "x", "images": ["C:\\pic.png"]}],
                      "relative to the conversation file"),
    "windows share": (lambda folder: [{"role": "user", "content": "x", "images": ["\\\\server\\share\\pic.png"]}],
                      "relative to the conversation file"),
    "empty name": (lambda folder: [{"role": "user", "content": "x", "images": [""]}], "relative"),
    "parent folder": (lambda folder: [{"role": "user", "content": "x", "images": ["../outside.png"]}],
                      "outside the conversation's folder"),
    "link outside": (lambda folder: [{"role": "user", "content": "x", "images": [_symlink_outside(folder)]}],
                     "outside the conversation's folder"),
    "missing image": (lambda folder: [{"role": "user", "content": "x", "images": ["nope.png"]}], "does not exist"),
    "folder as image": (lambda folder: [{"role": "user", "content": "x", "images": ["."]}], "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_CONVERSATIONS))
def test_import_refuses_a_bad_conversation_and_saves_nothing(store: ChatStore, tmp_path: Path, case: str) -> None:
    make, message = BAD_CONVERSATIONS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder.parent / "outside.png").write_bytes(png_bytes("green"))
    path = write_conversation(folder, make(folder))
    with pytest.raises(ConversationFileError, match=message):
        store.import_json(path)
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
            store.import_json(path)
    with pytest.raises(ConversationFileError, match="no such file"):
        store.import_json(tmp_path / "missing.json")

    path = write_conversation(tmp_path / "big", [{"role": "user", "content": "x" * 100}] * 3)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_BYTES", 200)
    with pytest.raises(ConversationFileError, match="larger than"):
        store.import_json(path)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_BYTES", 10_000)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_MESSAGES", 2)
    with pytest.raises(ConversationFileError, match="more than 2 messages"):
        store.import_json(path)
    monkeypatch.setattr(prompt_module, "MAX_CONVERSATION_MESSAGES", 10)
    monkeypatch.setattr(prompt_module, "MAX_MESSAGE_CHARS", 99)
    with pytest.raises(ConversationFileError, match="longer than 99 characters"):
        store.import_json(path)
    assert store.list_chats() == []


def test_import_refuses_an_image_that_is_not_one(store: ChatStore, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    path = write_conversation(folder, [
        {"role": "user", "content": "fine", "images": ["pic.png"]},
        {"role": "user", "content": "not fine", "images": ["notes.txt"]},
    ])
    (folder / "notes.txt").write_text("just text", encoding="utf-8")
    with pytest.raises(ImageError, match=r"notes\.txt: not an image"):
        store.import_json(path)
    assert store.list_chats() == []
