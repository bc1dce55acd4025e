"""The "v1" conversation template the model was tuned with, and rendering a chat to token ids."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from xvlm_core.errors import XvlmError

IMAGE_PLACEHOLDER = "<image>"
EOS_TEXT = "</s>"

SYSTEM_V1 = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

Role = Literal["user", "assistant"]


@dataclass
class Message:
    """One turn. `images` are keys of images the session knows (paths or hashes), user turns only."""

    role: Role
    text: str
    images: list[str] = field(default_factory=list)


def render_prompt(messages: list[Message], system: str = SYSTEM_V1) -> str:
    """`SYSTEM USER: <image>\\nQ ASSISTANT: A</s>USER: Q2 ASSISTANT:` for messages ending on a user turn."""
    parts = [system, " "]
    for message in messages:
        if message.role == "user":
            parts += ["USER: "] + [IMAGE_PLACEHOLDER + "\n"] * len(message.images) + [message.text, " "]
        else:
            parts += ["ASSISTANT: ", message.text.strip(), EOS_TEXT]
    parts.append("ASSISTANT:")
    return "".join(parts)


def images_in_order(messages: list[Message]) -> list[str]:
    """The image keys in the order their placeholders appear in the rendered prompt."""
    return [key for message in messages for key in message.images]


def read_conversation(path: Path) -> list[Message]:
    """Turns from a JSON file: `[{"role", "content", "images"?}]`, image paths relative to the file."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XvlmError(f"{path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise XvlmError(f"{path}: cannot read it ({exc}).") from None
    except json.JSONDecodeError as exc:
        raise XvlmError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(raw, list):
        raise XvlmError(f"{path}: expected a JSON list of messages.")
    messages = []
    for index, item in enumerate(raw):
        where = f"{path}: message {index + 1}"
        if not isinstance(item, dict) or item.get("role") not in ("user", "assistant"):
            raise XvlmError(f'{where}: needs "role": "user" or "assistant".')
        if not isinstance(item.get("content"), str):
            raise XvlmError(f'{where}: "content" must be a string.')
        images = item.get("images") or []
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise XvlmError(f'{where}: "images" must be a list of file names.')
        if images and item["role"] != "user":
            raise XvlmError(f"{where}: only user messages can carry images.")
        messages.append(Message(item["role"], item["content"], [str(path.parent / image) for image in images]))
    return messages
