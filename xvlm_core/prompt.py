"""The "v1" conversation template the model was tuned with, and rendering a chat to token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xvlm_core.tokenizer import EOS_TEXT, IMAGE_PLACEHOLDER

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
