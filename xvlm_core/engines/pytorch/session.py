"""A chat session: renders the conversation the original way and reuses the KV cache for what is unchanged.

The session is the same whichever engine runs the language model: PyTorch's (`TorchLanguageModel`, here), or
the one a loader names in `LoadedModel.open_language` (llama.cpp's).
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from xvlm_core.answers import Answer, AnswerResult, GenerationStats
from xvlm_core.engines.generation import TextStream, TokenPicker, decode
from xvlm_core.engines.language import BeforeChunk, LanguageModel, Run
from xvlm_core.engines.pytorch.decode_step import make_step, needs_zeroed_cache
from xvlm_core.engines.pytorch.kv_cache import PreallocatedCache
from xvlm_core.engines.pytorch.loading import LoadedModel
from xvlm_core.errors import Cancelled, Remedy, XvlmError
from xvlm_core.messages import Image, ImageRef, Message, image_limit, image_path, read_image_bytes
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.model.images import file_identity, load_image
from xvlm_core.model.prompt import (
    ANSWER_CUE,
    SYSTEM_V1,
    images_in_order,
    message_segments,
    render_prompt,
    system_segments,
)
from xvlm_core.sampling import SamplingSettings

# One cache position: a token id, or (image hash, index of the embedding within that image).
Position = Hashable
# transformers 5.24 renamed the forward's `past_key_values` to `cache`; the releases before take the old name and
# drop an unknown keyword silently (every answer but its first token would then be wrong).
CACHE_KEYWORD = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"
# Positions per forward pass of the prefill: Stop is checked between passes, so it waits for one at most.
PREFILL_CHUNK = 256
# Images whose embeddings a session keeps (~0.6 MB each at full size): a long chat, or a server's many
# clients, must not grow memory without end; one evicted is encoded again if it comes back.
KEPT_EMBEDDINGS = 64


class ChatSession:
    """Multi-turn chat on one loaded model. Not thread-safe: use it from one thread.

    `decode_mode` chooses PyTorch's decode step (`decode_step.DECODE_MODES`); "auto" is right outside of tests.
    """

    def __init__(self, loaded: LoadedModel, decode_mode: str = "auto"):
        self.loaded = loaded
        self.language: LanguageModel = (
            loaded.open_language() if loaded.open_language else TorchLanguageModel(loaded, decode_mode)
        )
        self.cached: list[Position] = []  # what each position of the language model's cache holds
        # image SHA-256 -> [144, hidden], the most recently used last; at most KEPT_EMBEDDINGS
        self._embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        # Plain paths (not ImageRefs) are hashed here once per file version: (path, mtime, size) -> SHA-256.
        self._hashes: dict[tuple[str, int, int], str] = {}

    def answer(
        self,
        messages: list[Message],
        settings: SamplingSettings | None = None,
        system: str = SYSTEM_V1,
        cancel: threading.Event | None = None,
    ) -> Answer:
        """Answer the last message (a user turn) of `messages`, the whole conversation so far."""
        self._check_conversation(messages)
        job = _Job(list(messages), settings or SamplingSettings(), system, cancel or threading.Event())
        return Answer(self._run(job))

    def look_at(
        self,
        images: Sequence[Image],
        cancel: threading.Event | None = None,
        before: Sequence[Message] | None = (),
        system: str = SYSTEM_V1,
    ) -> int:
        """Read images ahead of the question that will carry them, as the window does while it is typed, so that
        its answer starts with the question's own words: the images are encoded, and the prompt up to the last of
        them (`before`, the conversation so far, then the new message's images) is run through the language model.
        Returns how many images were encoded now: those already kept are not. What the question then asks
        differently (a longer conversation cut shorter, other images) is prefilled again, as for any answer.
        With `before=None` (the conversation is not known yet: an answer is still being written) the images are
        only encoded, and the cache is left as it is."""
        if self.loaded.model.vision_tower is None or not images:
            return 0
        cancel = cancel or threading.Event()
        if before is None:
            stats = GenerationStats()
            self._read_images(images[:KEPT_EMBEDDINGS], stats, cancel)
            return stats.images_encoded
        job = _Job([*before, Message("user", "", tuple(images))], SamplingSettings(), system, cancel)
        try:
            self._check_conversation(job._messages)
            messages, _ = self._fit_context(job)
        except Cancelled:
            raise
        except XvlmError:  # too many images or too long: the question meets the same problem and says it
            return 0
        hashes, embeddings = self._read_images(images_in_order(messages), job.stats, job.cancel)
        sequence = self._positions(job.input_ids, hashes)
        ahead = sequence[: max(i for i, position in enumerate(sequence) if isinstance(position, tuple)) + 1]
        if _common_prefix(self.cached, ahead) < len(ahead):
            with self._reset_on_failure():
                self._prefill(job, ahead, embeddings)
        return job.stats.images_encoded

    def reset(self) -> None:
        """Forget the cache (a new chat, or after an error left it in an unknown state)."""
        self.language.reset()
        self.cached = []

    @property
    def cache(self) -> PreallocatedCache:
        """PyTorch's KV cache, for tests that look into it."""
        if not isinstance(self.language, TorchLanguageModel):
            raise TypeError("only the PyTorch engine keeps a PreallocatedCache")
        return self.language.cache

    def _check_conversation(self, messages: Sequence[Message]) -> None:
        if not messages or messages[-1].role != "user":
            raise XvlmError("The conversation must end with a question from the user.")
        if any(message.images and message.role != "user" for message in messages):
            raise XvlmError("Only user messages can carry images.")
        if any(message.images for message in messages) and self.loaded.model.vision_tower is None:
            raise XvlmError("This model has no vision tower, so it cannot look at images.")
        limit = image_limit(self.loaded.context_length, self.loaded.model.image_tokens)
        crowded = max((len(message.images) for message in messages), default=0)
        if crowded > limit:
            raise XvlmError(
                f"A message has {crowded} images, and this model reads at most {limit} per message (each image "
                f"takes {self.loaded.model.image_tokens} of its {self.loaded.context_length} positions). "
                "Ask about the rest in another message."
            )

    @contextmanager
    def _reset_on_failure(self) -> Iterator[None]:
        """A failure mid-forward can leave layers of the cache at different lengths; a stop between chunks cannot."""
        try:
            yield
        except Cancelled:
            raise
        except Exception:
            self.reset()
            raise

    def _run(self, job: _Job) -> Generator[str, None, AnswerResult]:
        started = time.perf_counter()
        with self._reset_on_failure():
            return (yield from self._generate(job, started))

    def _generate(self, job: _Job, started: float) -> Generator[str, None, AnswerResult]:
        loaded, stats = self.loaded, job.stats
        try:
            messages, max_new = self._fit_context(job)
            tick = time.perf_counter()
            hashes, images = self._read_images(images_in_order(messages), stats, job.cancel)
            stats.image_encode_s = time.perf_counter() - tick
            sequence = self._positions(job.input_ids, hashes)
            tick = time.perf_counter()
            logits = self._prefill(job, sequence, images)
            stats.prefill_s = time.perf_counter() - tick
        except Cancelled:
            stats.stop_reason = "cancelled"
            return AnswerResult("", stats, job.prompt, job.input_ids, [])

        stream = TextStream(loaded.tokenizer)
        eos_id = loaded.tokenizer.eos_id

        def stop(ids: list[int]) -> str | None:
            if ids[-1] == eos_id:
                return "eos"
            if stream.stopped:
                return "stop_string"
            return "length" if len(ids) >= max_new else None

        # Sized by what fits the context, not by what was asked for: a client may ask for billions of tokens.
        picker = TokenPicker(replace(job.settings, max_new_tokens=max_new), job.input_ids, logits.device)
        tokens = decode(self.language.step, logits, picker, stop, job.cancel)
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
        return AnswerResult(stream.text, stats, job.prompt, job.input_ids, decoded.output_ids)

    def _prefill(self, job: _Job, sequence: list[Position], images: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run what the cache lacks of `sequence` through the model, in chunks; the last position's logits.

        Between chunks the cancel flag is checked; a cancelled prefill leaves the chunks done in the cache.
        """
        stats = job.stats
        reused = _common_prefix(self.cached, sequence)
        reused = min(reused, len(sequence) - 1)  # at least one position to prefill: its logits start the answer
        if self.language.length > reused:
            self.language.crop(reused)
        self.cached = sequence[:reused]
        stats.prompt_tokens, stats.reused_tokens = len(sequence), reused
        stats.prefilled_tokens = len(sequence) - reused

        def before_chunk(done: int) -> None:
            self.cached = sequence[: reused + done]
            _check(job.cancel)

        with torch.inference_mode():
            logits = self.language.prefill(_runs(sequence[reused:], images), before_chunk)
        self.cached = list(sequence)
        return logits

    def _fit_context(self, job: _Job) -> tuple[list[Message], int]:
        """Keep the newest turns that fit with room for the answer; drop older ones whole, carrying their images.

        A turn runs from a user message to the end of the assistant's answer (`</s>`), where the original
        tokenization also starts afresh; so each turn is tokenized once, on its own, from the newest back,
        and stops being tokenized once the kept ones fill the context. Only the first kept turn, which
        shares its first stretch of text with the system prompt, is tokenized again with it.
        Sets the answer's prompt and input ids; returns the kept messages and how many tokens the answer may have.
        """
        loaded, tokenizer, cancel = self.loaded, self.loaded.tokenizer, job.cancel
        context = loaded.context_length
        wanted_new = job.settings.max_new_tokens
        budget = context - min(wanted_new, context // 4)
        messages = job._messages
        per_image = loaded.model.image_tokens
        _check(cancel)
        # Where each turn starts: at the first message, and at each user message that follows an answer.
        starts = [0] + [
            i for i in range(1, len(messages)) if messages[i].role == "user" and messages[i - 1].role != "user"
        ]
        last = len(starts) - 1
        ends = [*starts[1:], len(messages)]
        images_before = [0]  # images in the messages before each turn: they are carried into the first kept turn
        for start, end in zip(starts, ends, strict=True):
            images_before.append(images_before[-1] + sum(len(m.images) for m in messages[start:end]))
        all_images = images_before[-1]
        carried_cost = len(tokenizer.encode_text("\n"))  # a carried image's own `\n` after its slot
        fixed = len(tokenizer.encode_segments(system_segments(job.system))) + all_images * per_image

        turn_ids: dict[int, list[int]] = {}
        text_tokens = 0
        first = last
        for turn in range(last, -1, -1):
            _check(cancel)
            segments = [seg for m in messages[starts[turn] : ends[turn]] for seg in message_segments(m)]
            ids = tokenizer.encode_segments(segments + ([ANSWER_CUE] if turn == last else []), bos=False)
            text_tokens += len(ids) - ids.count(IMAGE_TOKEN_INDEX)
            if turn < last and fixed + text_tokens + images_before[turn] * carried_cost > budget:
                break
            turn_ids[turn], first = ids, turn

        # The estimate counted the first kept turn apart from the system prompt; count it exactly, with
        # the images carried into it, dropping one more turn while that does not fit, and once only the
        # current turn is left, the oldest carried images.
        left_out = 0
        while True:
            _check(cancel)
            dropped = starts[first]
            kept = messages[dropped:]
            if dropped:
                carried = tuple(image for message in messages[:dropped] for image in message.images)[left_out:]
                kept = [replace(kept[0], images=carried + kept[0].images), *kept[1:]]
            head = system_segments(job.system)
            for message in kept[: ends[first] - dropped]:
                head += message_segments(message)
            if first == last:
                head.append(ANSWER_CUE)
            input_ids = tokenizer.encode_segments(head)
            for turn in range(first + 1, last + 1):
                input_ids += turn_ids[turn]
            images = input_ids.count(IMAGE_TOKEN_INDEX)
            length = len(input_ids) - images + images * per_image
            if length <= budget:
                break
            if first < last:
                first += 1
            elif left_out < images_before[first]:
                left_out = min(images_before[first], left_out + -(-(length - budget) // per_image))
            else:
                break
        job.stats.dropped_messages = dropped
        job.prompt = render_prompt(kept, job.system)
        job.input_ids = input_ids
        if length >= context:
            raise XvlmError(
                f"This message is too long for the model: {length} tokens, and it reads at most {context}.",
                code=Remedy.SHORTEN_CONVERSATION,
            )
        return kept, min(wanted_new, context - length)

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

    def _read_images(
        self, images: Sequence[Image], stats: GenerationStats, cancel: threading.Event
    ) -> tuple[list[str], dict[str, torch.Tensor]]:
        """Each image's SHA-256, in order, and the embeddings by SHA-256 (encoded where not kept)."""
        hashes = [self._image_hash(image, cancel) for image in images]
        embeddings = {
            key: self._encode_image(key, image_path(image), stats, cancel)
            for key, image in zip(hashes, images, strict=True)
        }
        return hashes, embeddings

    def _image_hash(self, image: Image, cancel: threading.Event) -> str:
        """The image's SHA-256: an ImageRef's own, or a plain path's, read once per version of the file."""
        if isinstance(image, ImageRef):
            return image.sha256
        _check(cancel)
        path = Path(image)
        file_id = file_identity(path)
        if file_id not in self._hashes:
            self._hashes[file_id] = hashlib.sha256(read_image_bytes(path)).hexdigest()
        return self._hashes[file_id]

    def _encode_image(self, key: str, path: str, stats: GenerationStats, cancel: threading.Event) -> torch.Tensor:
        """The image's embeddings, computed once per image content while it is among the recently used."""
        if key in self._embeddings:
            self._embeddings.move_to_end(key)
            return self._embeddings[key]
        _check(cancel)
        loaded = self.loaded
        assert loaded.preprocess is not None
        pixels = loaded.preprocess(load_image(path))  # [1, 3, 336, 336]
        _check(cancel)
        embeddings = self._embeddings[key] = loaded.model.encode_images(pixels)[0]  # [144, hidden]
        stats.images_encoded += 1
        while len(self._embeddings) > KEPT_EMBEDDINGS:
            self._embeddings.popitem(last=False)  # an answer holds its own images' tensors while it runs
        return embeddings


class TorchLanguageModel:
    """PyTorch's engine: the network's LlamaForCausalLM over a `PreallocatedCache`, one token at a time through
    `decode_step`'s step."""

    def __init__(self, loaded: LoadedModel, decode_mode: str = "auto"):
        self.language_model = loaded.model.language_model
        self.decode_step = make_step(self.language_model, decode_mode)
        self.cache = self._new_cache()

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def crop(self, length: int) -> None:
        self.cache.crop(length - self.cache.get_seq_length())

    def reset(self) -> None:
        self.cache = self._new_cache()

    def prefill(self, runs: Sequence[Run], before_chunk: BeforeChunk) -> torch.Tensor:
        embed_tokens = self.language_model.get_input_embeddings()
        weight = embed_tokens.weight
        pieces = [
            embed_tokens(torch.tensor(run, device=weight.device)) if isinstance(run, list)
            else run.to(weight.device, weight.dtype)
            for run in runs
        ]  # each [n, hidden]
        embeds = torch.cat(pieces).unsqueeze(0)  # [1, positions, hidden]
        for start, end in prefill_chunks(embeds.shape[1]):
            before_chunk(start)
            chunk = embeds[:, start:end]  # [1, < 1.5 * PREFILL_CHUNK, hidden]
            out = self.language_model(
                inputs_embeds=chunk, **{CACHE_KEYWORD: self.cache}, use_cache=True, logits_to_keep=1
            )
        return out.logits[:, -1].float()

    def step(self, token: int) -> torch.Tensor:
        return self.decode_step(token, self.cache)

    def _new_cache(self) -> PreallocatedCache:
        return PreallocatedCache(self.language_model.config, zeroed=needs_zeroed_cache(self.decode_step))


def prefill_chunks(count: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each forward pass over `count` positions: PREFILL_CHUNK each, and a last stretch shorter than
    half of one joins the pass before. Each pass makes a float copy of every 8- or 4-bit layer, and a short pass
    takes the packed kernel, which costs about as much as another copy. An image and a question, 331 positions, in
    one pass rather than 256 and 75 (AMD Zen 3, 2 cores, two runs each): 4-bit 7.7 s rather than 11.6, 8-bit 7.2
    rather than 8.3, exact 7.3 rather than 7.8. Stop then waits for up to 383 positions."""
    start = 0
    while start < count:
        end = start + PREFILL_CHUNK
        if count - end < PREFILL_CHUNK // 2:
            end = count
        yield start, end
        start = end


def _runs(positions: list[Position], images: dict[str, torch.Tensor]) -> list[Run]:
    """Positions as runs of token ids and runs of one image's consecutive embeddings ([n, hidden] each)."""
    groups: list[list[Position]] = []
    for position in positions:
        last = groups[-1][-1] if groups else None
        if (isinstance(last, int) and isinstance(position, int)) or (
            isinstance(last, tuple) and isinstance(position, tuple) and position == (last[0], last[1] + 1)
        ):
            groups[-1].append(position)
        else:
            groups.append([position])
    return [
        group if isinstance(group[0], int) else images[group[0][0]][group[0][1] : group[-1][1] + 1]
        for group in groups
    ]


def _check(cancel: threading.Event) -> None:
    """Stop an answer between its stages (fitting, images, prefill) once the user asked to."""
    if cancel.is_set():
        raise Cancelled("The answer was stopped.")


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
