"""Tokenizer mode `xvlm`: xvlm_core's SentencePiece tokenizer behind vLLM's tokenizer protocol.

Ids are the original wrapper's (BOS once, `</s>` as EOS, each stretch of text with its own dummy prefix), so
vLLM sees exactly the prompt `xvlm` builds. `<image>` in a text prompt becomes one placeholder id, which the
multimodal processor widens to the image's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import BatchEncoding

from xvlm_core.messages import Message
from xvlm_core.model.prompt import IMAGE_PLACEHOLDER, SYSTEM_V1, ImageSlot, render_segments
from xvlm_core.model.tokenizer import Tokenizer, find_tokenizer_file

# Conversation parts that stand for an image, in vLLM's "openai" content format and OpenAI's own.
IMAGE_PART_TYPES = ("image", "image_url", "image_pil", "image_embeds")


class XvlmTokenizer:
    """SentencePiece with the original wrapper's rules; the chat template is xvlm_core's v1 prompt."""

    def __init__(self, tokenizer: Tokenizer, name_or_path: str):
        self.core = tokenizer
        self.name_or_path = name_or_path
        self.image_token_id = tokenizer.vocab_size  # one past the pieces: no text ever maps to it
        self._vocab = {tokenizer.sp.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
        self._special_ids = sorted({tokenizer.sp.unk_id(), tokenizer.bos_id, tokenizer.eos_id} - {-1})

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *args: Any,
        trust_remote_code: bool = False,
        revision: str | None = None,
        download_dir: str | None = None,
        **kwargs: Any,
    ) -> XvlmTokenizer:
        folder = Path(path_or_repo_id).expanduser()
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(path_or_repo_id), revision=revision, cache_dir=download_dir,
                                            allow_patterns=["*.model", "config.json"]))
        return cls(Tokenizer(find_tokenizer_file(folder)), str(path_or_repo_id))

    # Ids and pieces.
    @property
    def vocab_size(self) -> int:
        return self.core.vocab_size

    @property
    def max_token_id(self) -> int:
        return self.image_token_id

    @property
    def bos_token_id(self) -> int:
        return self.core.bos_id

    @property
    def eos_token_id(self) -> int:
        return self.core.eos_id

    @property
    def pad_token_id(self) -> int:
        return self.core.sp.pad_id() if self.core.sp.pad_id() >= 0 else 0

    @property
    def all_special_ids(self) -> list[int]:
        return list(self._special_ids)

    @property
    def all_special_tokens(self) -> list[str]:
        return [self.core.sp.id_to_piece(i) for i in self._special_ids]

    @property
    def is_fast(self) -> bool:
        return False

    @property
    def max_chars_per_token(self) -> int:
        return max(map(len, self._vocab), default=1)

    @property
    def truncation_side(self) -> str:
        return "left"

    def __len__(self) -> int:
        return self.vocab_size

    def __hash__(self) -> int:
        return hash(id(self))

    def num_special_tokens_to_add(self) -> int:
        return 1  # BOS

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def get_added_vocab(self) -> dict[str, int]:
        return {}

    # Text to ids.
    def encode(
        self,
        text: str,
        truncation: bool | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        """Ids of a prompt, `<image>` as the placeholder id: the original splits its prompt there the same way."""
        ids = [self.bos_token_id] if add_special_tokens else []
        for index, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
            if index:
                ids.append(self.image_token_id)
            ids += self.core.encode_text(chunk)
        if truncation and max_length is not None and len(ids) > max_length:
            ids = ids[len(ids) - max_length :]
        return ids

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
    ) -> BatchEncoding:
        if text_pair is not None:
            raise ValueError("Xmodel-VLM's tokenizer takes one text, not a pair.")
        texts = [text] if isinstance(text, str) else text
        ids = [self.encode(t, truncation, max_length, add_special_tokens) for t in texts]
        data = {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}
        if isinstance(text, str):
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.core.sp.piece_to_id(tokens)
        return [self.core.sp.piece_to_id(token) for token in tokens]

    # Ids to text.
    def convert_ids_to_tokens(self, ids: Sequence[int], skip_special_tokens: bool = False) -> list[str]:
        # An id past the pieces (the image placeholder, or a model wider than its tokenizer) has no text.
        return [
            self.core.sp.id_to_piece(i) if 0 <= i < self.vocab_size else ""
            for i in ids
            if not (skip_special_tokens and i in self._special_ids)
        ]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self.core.sp.decode_pieces([token for token in tokens if token])

    def decode(self, ids: Sequence[int] | int, skip_special_tokens: bool = False) -> str:
        return self.core.decode([ids] if isinstance(ids, int) else list(ids))

    # Chat.
    def apply_chat_template(
        self,
        messages: list[Any],
        tools: list[dict[str, Any]] | None = None,
        *,
        conversation: list[Any] | None = None,
        tokenize: bool = True,
        **kwargs: Any,
    ) -> str | list[int]:
        """The v1 prompt `xvlm` renders for these OpenAI messages: ids, or text with `<image>` per image."""
        system, turns = conversation_messages(conversation if conversation is not None else messages)
        segments = render_segments(turns, system)
        if tokenize:
            ids = self.core.encode_segments(segments)
            return [self.image_token_id if i < 0 else i for i in ids]  # xvlm_core's image sentinel is negative
        return "".join(IMAGE_PLACEHOLDER if isinstance(s, ImageSlot) else s for s in segments)


def conversation_messages(messages: list[Any]) -> tuple[str, list[Message]]:
    """(system prompt, turns) from OpenAI-style messages, by `xvlm serve`'s rules.

    System (or developer) messages joined by newlines replace the default system prompt; a message's text parts
    are joined by newlines and its images come before its text, in order.
    """
    system: list[str] = []
    turns: list[Message] = []
    for message in messages:
        role = message["role"]
        texts, images = _parts(message.get("content"))
        if role in ("system", "developer"):
            system.append("\n".join(texts))
        elif role == "assistant" and images:
            raise ValueError("Only user messages can carry images.")
        elif role in ("user", "assistant"):
            turns.append(Message(role, "\n".join(texts), tuple(f"image {n}" for n in range(images))))
        else:
            raise ValueError(f"Xmodel-VLM has no role {role!r} (use system, user or assistant).")
    if not turns or turns[-1].role != "user":
        raise ValueError("The last message must be from the user: that is the question to answer.")
    return ("\n".join(system) if system else SYSTEM_V1), turns


def _parts(content: Any) -> tuple[list[str], int]:
    if content is None:
        return [], 0
    if isinstance(content, str):
        return [content], 0
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text", ""))
        elif kind in IMAGE_PART_TYPES:
            images += 1
        else:
            raise ValueError(f"Xmodel-VLM reads text and images, not a {kind!r} part.")
    return texts, images
