"""A chat session: renders the conversation the original way and reuses the KV cache for what is unchanged."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Generator, Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from xvlm_core.config import IMAGE_TOKEN_INDEX
from xvlm_core.decode_step import make_step, needs_zeroed_cache
from xvlm_core.errors import ImageError, XvlmError
from xvlm_core.generation import GenerationStats, TextStream, TokenPicker, decode
from xvlm_core.images import load_image
from xvlm_core.kv_cache import PreallocatedCache
from xvlm_core.model import LoadedModel
from xvlm_core.prompt import SYSTEM_V1, Message, images_in_order, render_prompt
from xvlm_core.sampling import SamplingSettings

# One cache position: a token id, or (image hash, index of the embedding within that image).
Position = Hashable


@dataclass(frozen=True)
class AnswerResult:
    """A finished answer: its text, the prompt and ids it came from, and what it cost."""

    text: str
    prompt: str  # the rendered conversation the model read (after dropping turns that did not fit)
    input_ids: list[int]
    output_ids: list[int]  # every picked id, the final EOS included
    stats: GenerationStats


class Answer:
    """One answer being generated: iterate for text deltas; `result` is there once iteration has ended.

    Nothing runs until iteration starts; iteration runs image encoding, prefill and decoding. Stop early
    by setting the cancel event and iterating on (the result then says "cancelled"); an iteration that
    is abandoned or fails leaves no result.
    """

    def __init__(self, steps: Generator[str, None, AnswerResult]):
        self._steps = steps
        self._result: AnswerResult | None = None

    def __iter__(self) -> Iterator[str]:
        self._result = yield from self._steps

    @property
    def result(self) -> AnswerResult:
        if self._result is None:
            raise XvlmError("The answer is not finished yet: iterate over it to the end first.")
        return self._result


class ChatSession:
    """Multi-turn chat on one loaded model. Not thread-safe: use it from one thread.

    `decode_mode` chooses the decode step (`decode_step.DECODE_MODES`); "auto" is right outside of tests.
    """

    def __init__(self, loaded: LoadedModel, decode_mode: str = "auto"):
        self.loaded = loaded
        self.step = make_step(loaded.model.language_model, decode_mode)
        self.cache = self._new_cache()
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
        job = _Job(list(messages), settings or SamplingSettings(), system, cancel or threading.Event())
        return Answer(self._run(job))

    def reset(self) -> None:
        """Forget the cache (a new chat, or after an error left it in an unknown state)."""
        self.cache = self._new_cache()
        self.cached = []

    def _new_cache(self) -> PreallocatedCache:
        return PreallocatedCache(self.loaded.model.language_model.config, zeroed=needs_zeroed_cache(self.step))

    def _run(self, job: _Job) -> Generator[str, None, AnswerResult]:
        started = time.perf_counter()
        try:
            return (yield from self._generate(job, started))
        except Exception:
            self.reset()  # a failure mid-forward can leave layers of the cache at different lengths
            raise

    def _generate(self, job: _Job, started: float) -> Generator[str, None, AnswerResult]:
        loaded, stats = self.loaded, job.stats
        messages, max_new = self._fit_context(job)

        tick = time.perf_counter()
        paths = images_in_order(messages)
        hashes = [self._image_hash(Path(path)) for path in paths]
        images = [self._encode_image(key, path, stats) for key, path in zip(hashes, paths, strict=True)]
        stats.image_encode_s = time.perf_counter() - tick

        sequence = self._positions(job.input_ids, hashes)
        reused = _common_prefix(self.cached, sequence)
        reused = min(reused, len(sequence) - 1)  # at least one position to prefill: its logits start the answer
        if self.cache.get_seq_length() > reused:
            self.cache.crop(reused - self.cache.get_seq_length())
        stats.prompt_tokens, stats.reused_tokens = len(sequence), reused
        stats.prefilled_tokens = len(sequence) - reused

        tick = time.perf_counter()
        with torch.inference_mode():
            embeds = loaded.model.embed(job.input_ids, images)[:, reused:]  # [1, T - reused, hidden]
            out = loaded.model.language_model(inputs_embeds=embeds, cache=self.cache, use_cache=True, logits_to_keep=1)
        self.cached = sequence
        logits = out.logits[:, -1].float()
        stats.prefill_s = time.perf_counter() - tick

        stream = TextStream(loaded.tokenizer)
        eos_id = loaded.tokenizer.eos_id

        def stop(ids: list[int]) -> str | None:
            if ids[-1] == eos_id:
                return "eos"
            if stream.stopped:
                return "stop_string"
            return "length" if len(ids) >= max_new else None

        picker = TokenPicker(job.settings, job.input_ids, logits.device)
        tokens = decode(self.step, self.cache, logits, picker, stop, job.cancel)
        output_ids: list[int] = []
        try:
            while True:
                try:
                    token = next(tokens)
                except StopIteration as done:
                    decoded = done.value
                    break
                output_ids.append(token)
                if token != eos_id:
                    delta = stream.push(token)
                    if delta:
                        yield delta
        finally:
            # Also when the consumer stops iterating: every generated token but the last is in the cache.
            self.cached = sequence + output_ids[:-1]
        tail = stream.finish()
        if tail:
            yield tail
        stats.ttft_s = decoded.first_token_at - started
        stats.decode_s = decoded.finished_at - decoded.first_token_at
        stats.output_tokens = len(decoded.output_ids)
        stats.stop_reason = decoded.stop_reason
        return AnswerResult(stream.text, job.prompt, job.input_ids, decoded.output_ids, stats)

    def _fit_context(self, answer: _Job) -> tuple[list[Message], int]:
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


@dataclass
class _Job:
    """One answer's request, and what is worked out for it before decoding (filled by `_fit_context`)."""

    _messages: list[Message]
    settings: SamplingSettings
    system: str
    cancel: threading.Event
    prompt: str = ""
    input_ids: list[int] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)


def _common_prefix(first: list[Position], second: list[Position]) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length
