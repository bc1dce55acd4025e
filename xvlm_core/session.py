"""A chat session: renders the conversation the original way and reuses the KV cache for what is unchanged."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DynamicCache

from xvlm_core.config import IMAGE_TOKEN_INDEX
from xvlm_core.errors import ImageError, XvlmError
from xvlm_core.generation import GenerationStats, SamplingSettings, TextStream, decode
from xvlm_core.images import load_image
from xvlm_core.model import LoadedModel
from xvlm_core.prompt import SYSTEM_V1, Message, images_in_order, render_prompt

# One cache position: a token id, or (image hash, index of the embedding within that image).
Position = Hashable


class Answer:
    """One answer being generated: iterate for text deltas; then read `text`, `output_ids`, `stats`.

    Nothing runs until iteration starts; iteration runs image encoding, prefill and decoding.
    """

    def __init__(
        self,
        session: ChatSession,
        messages: list[Message],
        settings: SamplingSettings,
        system: str,
        cancel: threading.Event,
    ):
        self._session = session
        self._messages = messages
        self.settings = settings
        self.system = system
        self.cancel = cancel
        self.prompt = ""
        self.input_ids: list[int] = []
        self.output_ids: list[int] = []
        self.stats = GenerationStats()
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        return self._session._run(self)


class ChatSession:
    """Multi-turn chat on one loaded model. Not thread-safe: use it from one thread."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded
        self.cache = DynamicCache(config=loaded.model.language_model.config)
        self.cached: list[Position] = []  # what each position of `cache` holds
        self._embeddings: dict[str, torch.Tensor] = {}  # image hash -> [144, hidden]
        self._hashes: dict[tuple[str, int, int], str] = {}  # (path, mtime, size) -> image hash

    def answer(
        self,
        messages: list[Message],
        settings: SamplingSettings | None = None,
        system: str = SYSTEM_V1,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """Answer the last message (a user turn) of `messages`, the whole conversation so far."""
        if not messages or messages[-1].role != "user":
            raise XvlmError("The conversation must end with a question from the user.")
        if any(message.images and message.role != "user" for message in messages):
            raise XvlmError("Only user messages can carry images.")
        if any(message.images for message in messages) and self.loaded.model.vision_tower is None:
            raise XvlmError("This model has no vision tower, so it cannot look at images.")
        return Answer(self, list(messages), settings or SamplingSettings(), system, cancel or threading.Event())

    def reset(self) -> None:
        """Forget the cache (a new chat, or after an error left it in an unknown state)."""
        self.cache = DynamicCache(config=self.loaded.model.language_model.config)
        self.cached = []

    def _run(self, answer: Answer) -> Iterator[str]:
        started = time.perf_counter()
        try:
            yield from self._generate(answer, started)
        except Exception:
            self.reset()  # a failure mid-forward can leave layers of the cache at different lengths
            raise

    def _generate(self, answer: Answer, started: float) -> Iterator[str]:
        loaded, stats = self.loaded, answer.stats
        messages, max_new = self._fit_context(answer)

        tick = time.perf_counter()
        paths = images_in_order(messages)
        hashes = [self._image_hash(Path(path)) for path in paths]
        images = [self._encode_image(key, path, stats) for key, path in zip(hashes, paths, strict=True)]
        stats.image_encode_s = time.perf_counter() - tick

        sequence = self._positions(answer.input_ids, hashes)
        reused = _common_prefix(self.cached, sequence)
        reused = min(reused, len(sequence) - 1)  # at least one position to prefill: its logits start the answer
        if self.cache.get_seq_length() > reused:
            self.cache.crop(reused - self.cache.get_seq_length())
        stats.prompt_tokens, stats.reused_tokens = len(sequence), reused
        stats.prefilled_tokens = len(sequence) - reused

        tick = time.perf_counter()
        with torch.inference_mode():
            embeds = loaded.model.embed(answer.input_ids, images)[:, reused:]  # [1, T - reused, hidden]
            out = loaded.model.language_model(inputs_embeds=embeds, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cached = sequence
        logits = out.logits[:, -1].float()
        stats.prefill_s = time.perf_counter() - tick

        stream = TextStream(loaded.tokenizer)
        try:
            yield from decode(
                loaded.model.language_model,
                self.cache,
                logits,
                answer.input_ids,
                stream,
                loaded.tokenizer.eos_id,
                answer.settings,
                stats,
                answer.output_ids,
                answer.cancel,
                started,
                max_new,
            )
        finally:
            # Also when the consumer stops iterating: every generated token but the last is in the cache.
            self.cached = sequence + answer.output_ids[:-1]
            answer.text = stream.text

    def _fit_context(self, answer: Answer) -> tuple[list[Message], int]:
        """Drop the oldest turns until prompt + answer fit the context; carry their images forward.

        Sets the answer's prompt and input ids to those of the messages kept; returns them and how many
        tokens the answer may have.
        """
        context = self.loaded.context_length
        wanted_new = answer.settings.max_new_tokens
        reserve = min(wanted_new, context // 4)
        messages = answer._messages
        while True:
            answer.prompt = render_prompt(messages, answer.system)
            answer.input_ids = self.loaded.tokenizer.encode_prompt(answer.prompt)
            images = answer.input_ids.count(IMAGE_TOKEN_INDEX)
            length = len(answer.input_ids) - images + images * self.loaded.model.image_tokens
            user_turns = [i for i, message in enumerate(messages) if message.role == "user"]
            if length + reserve <= context or len(user_turns) < 2:
                break
            cut = user_turns[1]
            carried = [path for message in messages[:cut] for path in message.images]
            messages = [replace(messages[cut], images=carried + messages[cut].images), *messages[cut + 1 :]]
            answer.stats.dropped_messages += cut
        if length >= context:
            raise XvlmError(
                f"This message is too long for the model: {length} tokens, and it reads at most {context}. "
                "Shorten it or start a new chat."
            )
        return messages, min(wanted_new, context - length)

    def _positions(self, input_ids: list[int], hashes: list[str]) -> list[Position]:
        positions: list[Position] = []
        image_hashes = iter(hashes)
        for token in input_ids:
            if token == IMAGE_TOKEN_INDEX:
                key = next(image_hashes)
                positions += [(key, index) for index in range(self.loaded.model.image_tokens)]
            else:
                positions.append(token)
        return positions

    def _image_hash(self, path: Path) -> str:
        try:
            info = path.stat()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read the image ({exc.strerror}).") from None
        file_id = (str(path), info.st_mtime_ns, info.st_size)
        if file_id not in self._hashes:
            self._hashes[file_id] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._hashes[file_id]

    def _encode_image(self, key: str, path: str, stats: GenerationStats) -> torch.Tensor:
        """The image's embeddings, computed once per image content for the whole session."""
        if key not in self._embeddings:
            loaded = self.loaded
            assert loaded.preprocess is not None
            pixels = loaded.preprocess(load_image(path))  # [1, 3, 336, 336]
            self._embeddings[key] = loaded.model.encode_images(pixels)[0]  # [144, hidden]
            stats.images_encoded += 1
        return self._embeddings[key]


def _common_prefix(first: list[Position], second: list[Position]) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length
