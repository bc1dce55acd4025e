"""The streaming decode loop: pick a token, check stops and cancel, yield text, feed the token back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from xvlm_core.model.prompt import EOS_TEXT
from xvlm_core.model.tokenizer import StreamDecoder, Tokenizer
from xvlm_core.sampling import SamplingSettings


class TokenPicker:
    """Greedy argmax, or sampling through transformers' logits processors.

    Keeps the ids seen so far (prompt, then each pick) in one preallocated row, for the repetition penalty.
    """

    def __init__(self, settings: SamplingSettings, prompt_ids: list[int], device: torch.device):
        self.settings = settings
        self.processors = LogitsProcessorList()
        if settings.repetition_penalty != 1.0:
            self.processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        if not settings.greedy:
            self.processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k > 0:
                self.processors.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(settings.top_p))
        self.generator = None
        if settings.seed is not None:
            # CPU generator: the same seed gives the same answer on every device.
            self.generator = torch.Generator("cpu").manual_seed(settings.seed)
        seen = [i for i in prompt_ids if i >= 0]  # image placeholders are not tokens
        self.context = torch.empty(1, len(seen) + settings.max_new_tokens, dtype=torch.long, device=device)
        self.context[0, : len(seen)] = torch.tensor(seen, dtype=torch.long)
        self.length = len(seen)

    def __call__(self, logits: torch.Tensor) -> int:
        """logits [1, vocab] float32 -> the next token id."""
        scores = self.processors(self.context[:, : self.length], logits) if self.processors else logits
        if self.settings.greedy:
            token = int(scores.argmax(dim=-1))
        else:
            probabilities = torch.softmax(scores, dim=-1).cpu()
            token = int(torch.multinomial(probabilities, 1, generator=self.generator))
        if self.length < self.context.shape[1]:
            self.context[0, self.length] = token
            self.length += 1
        return token


class TextStream:
    """Text deltas that never show a broken character, a partial `</s>`, or surrounding whitespace.

    What has been yielded, joined, is always a prefix of the final answer text.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.decoder = StreamDecoder(tokenizer)
        self.full = ""  # decoded so far, stop string excluded
        self.shown = 0  # characters of `full.strip()` already yielded
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.full += self.decoder.push(token_id)
        if EOS_TEXT in self.full:
            self.full = self.full[: self.full.index(EOS_TEXT)]
            self.stopped = True
            return self._release(len(self.full))
        hold = next((n for n in range(len(EOS_TEXT) - 1, 0, -1) if self.full.endswith(EOS_TEXT[:n])), 0)
        return self._release(len(self.full) - hold)

    def _release(self, upto: int) -> str:
        visible = self.full[:upto].strip()
        delta, self.shown = visible[self.shown :], max(self.shown, len(visible))
        return delta

    def finish(self) -> str:
        """The text still held back once no more tokens come (a trailing `<` that was not `</s>`)."""
        return self._release(len(self.full))

    @property
    def text(self) -> str:
        return self.full.strip()


@dataclass(frozen=True)
class Decoded:
    """What `decode` returns once it stops: the ids it picked, why it stopped, and when."""

    output_ids: list[int]
    stop_reason: str  # "eos", "stop_string", "length", "cancelled"
    first_token_at: float  # time.perf_counter() when the first id was picked
    finished_at: float


# Why to stop after these output ids ("eos", "stop_string", "length"), or None to go on.
StopCondition = Callable[[list[int]], str | None]
# Feeds one picked token to the language model (which caches it) and gives the next logits [1, vocab].
DecodeStep = Callable[[int], torch.Tensor]


@torch.inference_mode()
def decode(
    step: DecodeStep,
    logits: torch.Tensor,
    pick: Callable[[torch.Tensor], int],
    stop: StopCondition,
    cancel: threading.Event,
) -> Generator[int, None, Decoded]:
    """Yield each picked token id until `stop` says why or `cancel` is set; return what was decoded.

    `logits` [1, vocab] are the prefill's last-position logits; each picked id except the last is fed back
    through `step`. `stop` is asked after the consumer has handled the id just yielded.
    """
    output_ids: list[int] = []
    first_token_at = 0.0
    while True:
        token = pick(logits)
        output_ids.append(token)
        if len(output_ids) == 1:
            first_token_at = time.perf_counter()
        yield token
        reason = stop(output_ids) or ("cancelled" if cancel.is_set() else None)
        if reason:
            return Decoded(output_ids, reason, first_token_at, time.perf_counter())
        logits = step(token)
