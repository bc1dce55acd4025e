"""Chats to and from files: Markdown and the JSON `xvlm ask --conversation` reads, and importing that JSON back.

Files only, no database, so all of it runs off the UI thread: the database side is `ChatStore.load_chat` before an
export and `ChatStore.add_imported_chat` after an import. Long steps report `progress(done, total)` and stop with
TransferCancelled between files once `cancel` is set.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from xvlm_core.errors import ConversationError, ImageError
from xvlm_core.messages import ImageRef, image_limit, read_image_bytes
from xvlm_core.model.prompt import clean_text, read_turns
from xvlm_core.safepath import UnsafePathError, path_inside

from app.history.image_files import ImageFolder, write_atomic
from app.history.records import Chat, ChatMessage, ConversationFileError, ImportedChat, StoreError, TransferCancelled
from app.history.rows import known_stats
from app.i18n import translate

Progress = Callable[[int, int], None]

# Most file systems allow 255 bytes per name (UTF-8 on Linux and macOS, UTF-16 units on Windows). The stem leaves
# room for "-NN", the suffix, "_images" and the temporary name an atomic write uses.
STEM_BYTES = 180
STEM_CHARS = 80


def write_markdown(chat: Chat, folder: Path, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> Path:
    """Write the chat as `TITLE.md` in `folder`, its images in `TITLE_images/` linked relatively."""
    target = _free_path(Path(folder), file_stem(chat.title, chat.id), ".md")
    links = _export_images(chat, target, progress, cancel)
    title = chat.title or f"Chat of {chat.created.astimezone():%Y-%m-%d %H:%M}"
    about = f"Exported from XVLM Chat on {datetime.now():%Y-%m-%d %H:%M}"
    if chat.model:
        about += f", model {chat.model}"
    lines = [f"# {title}", "", f"*{about}*", ""]
    for message in chat.messages:
        lines += ["## " + ("You" if message.role == "user" else "Assistant"), ""]
        for number, image in enumerate(message.images, 1):
            lines += [f"![image {number}]({urllib.parse.quote(links[image])})", ""]
        if message.text:
            lines += [message.text, ""]
        if message.status != "complete":
            lines += [f"*(answer {message.status})*", ""]
    lines += _other_versions_markdown(chat)
    write_atomic(target, "\n".join(lines).encode("utf-8"), shared=True)
    return target


def write_json(chat: Chat, folder: Path, progress: Progress | None = None,
               cancel: threading.Event | None = None) -> Path:
    """Write the chat as `TITLE.json` for `xvlm ask --conversation`, images copied to `TITLE_images/`.

    The shape is `[{"role", "content", "images"?, "stats"?}]`, "stats" being an answer's timing line; the last
    answer adds the other versions Regenerate wrote ("other_versions": [{"content", "stats"?}], "version": where it
    sits among them), which `xvlm ask` passes over. Answers without any text are left out.
    """
    target = _free_path(Path(folder), file_stem(chat.title, chat.id), ".json")
    links = _export_images(chat, target, progress, cancel)
    items: list[dict[str, Any]] = []
    for message in chat.messages:
        if message.role == "assistant" and not message.text:
            continue
        item: dict[str, Any] = {"role": message.role, "content": message.text}
        if message.images:
            item["images"] = [links[image] for image in message.images]
        stats = message.stats.as_dict()
        if stats and message.role == "assistant":
            item["stats"] = stats
        if message is chat.messages[-1] and len(chat.versions) > 1:
            others = [version for version in chat.versions if version is not message]
            item["other_versions"] = [_version_item(version) for version in others]
            item["version"] = chat.versions.index(message)
        items.append(item)
    write_atomic(target, json.dumps(items, ensure_ascii=False, indent=2).encode("utf-8"), shared=True)
    return target


def _other_versions_markdown(chat: Chat) -> list[str]:
    """The other versions Regenerate wrote of the last answer, after it, each under its number."""
    if len(chat.versions) < 2:
        return []
    shown, count = chat.versions.index(chat.messages[-1]), len(chat.versions)
    lines = [f"*This was version {shown + 1} of {count} of the answer; the others follow.*", ""]
    for number, version in enumerate(chat.versions, 1):
        if version is not chat.messages[-1]:
            lines += [f"### Answer, version {number} of {count}", "", version.text, ""]
    return lines


def _version_item(version: ChatMessage) -> dict[str, Any]:
    stats = version.stats.as_dict()
    return {"content": version.text, **({"stats": stats} if stats else {})}


def read_chat_file(path: Path, images: ImageFolder, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> ImportedChat:
    """Check an untrusted conversation file in the `write_json` shape and copy its images into `images`; of an
    answer's stats only those the app shows are kept, each checked; the last answer keeps its other versions.

    Each distinct image file is read, checked and hashed once, however often the file refers to it. Anything
    unexpected raises ConversationFileError (or ImageError); nothing goes into the database here. A chat the model
    could not continue (more images in one message than it reads) is refused too.
    """
    path = Path(path)
    try:
        turns = read_turns(path)
    except ConversationError as exc:
        raise _not_an_export(path, str(exc).removeprefix(f"{path}: ")) from None
    messages = [turn.message for turn in turns]
    if any(turn.other_versions for turn in turns[:-1]):
        raise _not_an_export(path, translate("ChatStore", "only the last answer can have other versions."))
    limit = image_limit()
    for index, message in enumerate(messages, 1):
        # A JSON escape can make half a character, which no file name and no database can hold.
        if any(clean_text(text) != text for text in (message.text, *message.images,
                                                     *(other for other, _stats in turns[index - 1].other_versions))):
            raise _not_an_export(path, translate("ChatStore", "message {index} holds a broken character (a lone "
                                                              "surrogate such as {example}).")
                                 .format(index=index, example="\\ud800"))
        if len(message.images) > limit:
            raise _not_an_export(path, translate("ChatStore", "message {index} has {count} images, and the model "
                                                              "reads at most {limit} in one message.")
                                 .format(index=index, count=len(message.images), limit=limit))
    folder = path.parent
    files = [[_image_file(folder, name, translate("ChatStore", "{path} (message {index})").format(path=path,
                                                                                            index=index))
              for name in message.images]
             for index, message in enumerate(messages, 1)]
    distinct = list(dict.fromkeys(file for message_files in files for file in message_files))
    stored: dict[Path, ImageRef] = {}
    for done, file in enumerate(distinct):
        _check(cancel, progress, done, len(distinct))
        stored[file] = images.store(file)
    _check(cancel, progress, len(distinct), len(distinct))
    chat = [ChatMessage(turn.message.role, turn.message.text, tuple(stored[file] for file in message_files),
                        stats=known_stats(turn.stats))
            for turn, message_files in zip(turns, files, strict=True)]
    last = turns[-1]
    if not last.other_versions:
        return ImportedChat(chat)
    others = [ChatMessage("assistant", text, stats=known_stats(stats)) for text, stats in last.other_versions]
    return ImportedChat(chat, (*others[:last.version], chat[-1], *others[last.version:]))


def file_stem(title: str, chat_id: int) -> str:
    """A file name for a chat's export, safe on every system: the title without characters paths reserve,
    at most 80 characters and 180 bytes of UTF-8."""
    stem = re.sub(r'[\x00-\x1f\x7f<>:"/\\|?*]', " ", title)
    stem = " ".join(stem.split())[:STEM_CHARS]
    # Cut at a character boundary; a joiner left at the end would glue the name to whatever follows it.
    stem = stem.encode("utf-8")[:STEM_BYTES].decode("utf-8", "ignore").rstrip("\u200d\ufe0f")
    stem = stem.strip(" .…")
    # Windows reserves these names with any extension.
    if not stem or re.fullmatch(r"(con|prn|aux|nul|com\d|lpt\d)", stem, re.I):
        stem = f"chat-{chat_id}"
    return stem


def _not_an_export(path: Path, reason: str) -> ConversationFileError:
    return ConversationFileError(translate("ChatStore", "{path} is not a valid chat export: {reason}")
                                 .format(path=path, reason=reason))


def _image_file(folder: Path, name: object, where: str) -> Path:
    """The regular file an imported image name stands for, inside the conversation's folder."""
    try:
        path = path_inside(folder, name, source=f"the conversation file {where}", follow_last_link=True)
    except UnsafePathError as exc:
        raise ConversationFileError(str(exc)) from None
    if not path.is_file():
        raise ConversationFileError(translate("ChatStore", "{where}: image {name} does not exist.")
                                    .format(where=where, name=repr(name)))
    return path.resolve()


def _export_images(chat: Chat, target: Path, progress: Progress | None,
                   cancel: threading.Event | None) -> dict[ImageRef, str]:
    """Copy the chat's images to `STEM_images/` beside `target`; stored path -> link relative to `target`.

    A cancelled export takes away the copies it made, and only those: an earlier export of the same chat (the
    other format) shares the folder.
    """
    folder = target.with_name(target.stem + "_images")
    distinct = list(dict.fromkeys(image for message in chat.messages for image in message.images))
    links: dict[ImageRef, str] = {}
    created: list[Path] = []
    try:
        for done, image in enumerate(distinct):
            _check(cancel, progress, done, len(distinct))
            stored = Path(image.path)
            try:
                data = read_image_bytes(stored)  # the history's own copy, yet a file like any other
            except ImageError as exc:
                raise StoreError(translate("ChatStore", "An image of this chat cannot be exported: {reason}.")
                                 .format(reason=str(exc).rstrip("."))) from exc
            # Named by the content's hash, so one name never stands for two different images.
            name = image.sha256[:16] + stored.suffix
            if not (folder / name).exists():
                created.append(folder / name)
            write_atomic(folder / name, data, shared=True)
            links[image] = f"{folder.name}/{name}"
        _check(cancel, progress, len(distinct), len(distinct))
    except TransferCancelled:
        for path in created:
            path.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise
    return links


def _check(cancel: threading.Event | None, progress: Progress | None, done: int, total: int) -> None:
    if cancel is not None and cancel.is_set():
        raise TransferCancelled()
    if progress is not None:
        progress(done, total)


def _free_path(folder: Path, stem: str, suffix: str) -> Path:
    """`folder/stem.suffix`, or `stem-2.suffix`... when that exists: an export never overwrites a file."""
    folder.mkdir(parents=True, exist_ok=True)
    candidate, counter = folder / f"{stem}{suffix}", 2
    while candidate.exists():
        candidate, counter = folder / f"{stem}-{counter}{suffix}", counter + 1
    return candidate
