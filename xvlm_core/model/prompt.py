"""The "v1" conversation template the model was tuned with, and rendering a chat into text and image slots."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xvlm_core.errors import ConversationError
from xvlm_core.local_files import read_regular_file
from xvlm_core.messages import Image, Message

IMAGE_PLACEHOLDER = "<image>"
EOS_TEXT = "</s>"
# Bounds for conversation files, which are untrusted input.
MAX_CONVERSATION_BYTES = 32 * 1024 * 1024
MAX_CONVERSATION_MESSAGES = 5_000
MAX_MESSAGE_CHARS = 1_000_000
MAX_IMAGES_PER_MESSAGE = 32
MAX_STATS_FIELDS = 32  # an answer's timing line, as the app exports it; the core reads none of it
MAX_OTHER_VERSIONS = 100  # answers Regenerate wrote before or after the one shown
# A JSON string, to leave out when counting what is outside strings.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

SYSTEM_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

@dataclass(frozen=True)
class ImageSlot:
    """Where one attached image's embeddings go. Only attached images make slots; text never does."""

    image: Image


# A rendered conversation: text (the template's `</s>` included) and the image slots between it.
Segment = str | ImageSlot
ANSWER_CUE = "ASSISTANT:"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with lone surrogates (from a broken JSON escape or an undecodable argument) as U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def system_segments(system: str) -> list[Segment]:
    return [clean_text(system) + " "]


def message_segments(message: Message) -> list[Segment]:
    """One message in the template: `USER: <image>\n<image>\nQ ` (a slot per image, in order) or `ASSISTANT: A</s>`."""
    if message.role == "user":
        slots: list[Segment] = []
        for image in message.images:
            slots += [ImageSlot(image), "\n"]
        return ["USER: ", *slots, clean_text(message.text) + " "]
    return ["ASSISTANT: " + clean_text(message.text).strip() + EOS_TEXT]


def render_segments(messages: list[Message], system: str = SYSTEM_V1) -> list[Segment]:
    """`SYSTEM USER: [image]\nQ ASSISTANT: A</s>USER: Q2 ASSISTANT:` for messages ending on a user turn."""
    segments = system_segments(system)
    for message in messages:
        segments += message_segments(message)
    segments.append(ANSWER_CUE)
    return segments


def render_prompt(messages: list[Message], system: str = SYSTEM_V1) -> str:
    """The rendered conversation as text for people and logs, `<image>` standing for each slot."""
    return "".join(IMAGE_PLACEHOLDER if isinstance(s, ImageSlot) else s for s in render_segments(messages, system))


def images_in_order(messages: list[Message]) -> list[Image]:
    """The images in the order their slots appear in the rendered prompt."""
    return [image for message in messages for image in message.images]


def read_conversation(path: Path) -> list[Message]:
    """Turns from an untrusted JSON file: `[{"role", "content", "images"?, ...}, ...]`; what the app exports beside
    each message (an answer's stats and other versions) is passed over."""
    return [turn.message for turn in read_turns(path)]


@dataclass(frozen=True)
class Turn:
    """A message of a conversation file and what the app exports beside it, which the core checks only in shape."""

    message: Message
    stats: dict[str, Any] = field(default_factory=dict)  # an answer's, as written: whoever shows them checks them
    # An answer's other versions (text, stats), in order, and where the message itself sits among them.
    other_versions: tuple[tuple[str, dict[str, Any]], ...] = ()
    version: int = 0


def read_turns(path: Path) -> list[Turn]:
    """Turns from an untrusted JSON file, each with what the app exports beside its message:
    `[{"role", "content", "images"?, "stats"?, "other_versions"?: [{"content", "stats"?}], "version"?}, ...]`.

    Image names are returned as written in the file (relative to it, in files the app exports), as plain
    paths; the caller resolves them (into ImageRefs). Sizes are bounded so a hostile file cannot fill memory.
    """
    data = read_regular_file(path, MAX_CONVERSATION_BYTES, ConversationError, "a conversation")
    try:
        # `[[],[],...]` costs twenty times its bytes once decoded: count the values before building them.
        if _json_values(data) > _max_json_values():
            raise ConversationError(f"{path}: too many JSON values for {MAX_CONVERSATION_MESSAGES} messages.")
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConversationError(f"{path}: cannot read it ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise ConversationError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except RecursionError:
        raise ConversationError(f"{path}: not a conversation (nested too deeply).") from None
    except ValueError:  # the one other refusal of json.loads: an integer longer than Python's limit
        raise ConversationError(f"{path}: a number in it has more than {sys.get_int_max_str_digits()} digits.") \
            from None
    if not isinstance(raw, list) or not raw:
        raise ConversationError(f"{path}: expected a JSON list of messages, with at least one message.")
    if len(raw) > MAX_CONVERSATION_MESSAGES:
        raise ConversationError(f"{path}: more than {MAX_CONVERSATION_MESSAGES} messages.")
    return [_parse_turn(item, f"{path}: message {index}") for index, item in enumerate(raw, 1)]


def _json_values(data: bytes) -> int:
    """At least how many values and keys JSON text holds: outside strings, each follows a `,`, `:`, `[` or `{`."""
    outside = _JSON_STRING.sub(b"", data)
    return 1 + sum(outside.count(mark) for mark in b",:[{")


def _max_json_values() -> int:
    # A message is an object of four fields, a list of image names and an object of stats.
    return MAX_CONVERSATION_MESSAGES * (10 + MAX_IMAGES_PER_MESSAGE + 2 * MAX_STATS_FIELDS)


def _parse_turn(item: object, where: str) -> Turn:
    if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
        raise ConversationError(f'{where}: needs "role": "user" or "assistant".')
    unknown = set(item) - {"role", "content", "images", "stats", "other_versions", "version"}
    if unknown:
        raise ConversationError(f"{where}: unknown fields {', '.join(sorted(map(repr, unknown)))}.")
    text = _text(item, where)
    names = item.get("images", [])
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConversationError(f'{where}: "images" must be a list of file names.')
    if names and item["role"] != "user":
        raise ConversationError(f"{where}: only user messages can carry images.")
    if len(names) > MAX_IMAGES_PER_MESSAGE:
        raise ConversationError(f"{where}: more than {MAX_IMAGES_PER_MESSAGE} images.")
    others = item.get("other_versions", [])
    if not isinstance(others, list) or len(others) > MAX_OTHER_VERSIONS:
        raise ConversationError(f'{where}: "other_versions" must be a list of at most {MAX_OTHER_VERSIONS} answers.')
    version = item.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= len(others):
        raise ConversationError(f'{where}: "version" must be a number from 0 to {len(others)}.')
    other_versions = []
    for number, other in enumerate(others, 1):
        if not isinstance(other, dict) or set(other) - {"content", "stats"}:
            raise ConversationError(f'{where}: other version {number} must have "content" and "stats" only.')
        other_versions.append((_text(other, f"{where}, other version {number}"), _stats(other, where)))
    stats = _stats(item, where)
    if item["role"] != "assistant" and (stats or other_versions or version):
        raise ConversationError(f"{where}: only answers carry stats and versions.")
    return Turn(Message(item["role"], text, tuple(names)), stats, tuple(other_versions), version)


def _text(item: dict[str, Any], where: str) -> str:
    text = item.get("content")
    if not isinstance(text, str):
        raise ConversationError(f'{where}: "content" must be a string.')
    if len(text) > MAX_MESSAGE_CHARS:
        raise ConversationError(f"{where}: the text is longer than {MAX_MESSAGE_CHARS} characters.")
    return text


def _stats(item: dict[str, Any], where: str) -> dict[str, Any]:
    stats = item.get("stats", {})
    if not isinstance(stats, dict) or len(stats) > MAX_STATS_FIELDS:
        raise ConversationError(f'{where}: "stats" must be an object of at most {MAX_STATS_FIELDS} fields.')
    return stats
