"""The streaming decode loop: pick a token, check stops and cancel, yield text, feed the token back."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import Cache

from xvlm_core.errors import XvlmError
from xvlm_core.prompt import EOS_TEXT
from xvlm_core.tokenizer import StreamDecoder, Tokenizer


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick tokens. Temperature 0 means greedy, the authors' default."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise XvlmError(f"{name} must be a finite number, not {value!r}.")
        if self.max_new_tokens < 1:
            raise XvlmError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}.")
        if self.temperature < 0:
            raise XvlmError(f"temperature must be 0 (greedy) or positive, not {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise XvlmError(f"top_p must be in (0, 1], not {self.top_p}.")
        if self.top_k < 0:
            raise XvlmError(f"top_k must be 0 (off) or positive, not {self.top_k}.")
        if self.repetition_penalty <= 0:
            raise XvlmError(f"repetition_penalty must be positive, not {self.repetition_penalty}.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationStats:
    """What one answer cost. Times in seconds; "tokens" count positions, an image as its embeddings."""

    image_encode_s: float = 0.0
    prefill_s: float = 0.0
    ttft_s: float = 0.0
    decode_s: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    output_tokens: int = 0
    images_encoded: int = 0
    dropped_messages: int = 0
    stop_reason: str = ""  # "eos", "stop_string", "length", "cancelled"

    @property
    def decode_tok_s(self) -> float:
        """Tokens per second after the first one (the first one's time is the ttft)."""
        return (self.output_tokens - 1) / self.decode_s if self.output_tokens > 1 and self.decode_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "decode_tok_s": self.decode_tok_s}


class TokenPicker:
    """Greedy argmax, or sampling through transformers' logits processors."""

    def __init__(self, settings: SamplingSettings, device: torch.device):
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

    def __call__(self, logits: torch.Tensor, context: torch.Tensor) -> int:
        """logits [1, vocab] float32; context [1, n] ids seen so far (for the repetition penalty)."""
        scores = self.processors(context, logits) if self.processors else logits
        if self.settings.greedy:
            return int(scores.argmax(dim=-1))
        probabilities = torch.softmax(scores, dim=-1).cpu()
        return int(torch.multinomial(probabilities, 1, generator=self.generator))


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


@torch.inference_mode()
def decode(
    language_model: torch.nn.Module,
    cache: Cache,
    logits: torch.Tensor,
    context_ids: list[int],
    stream: TextStream,
    eos_id: int,
    settings: SamplingSettings,
    stats: GenerationStats,
    output_ids: list[int],
    cancel: threading.Event,
    started: float,
    max_new_tokens: int,
) -> Iterator[str]:
    """Yield text deltas until EOS, `</s>`, `max_new_tokens` or `cancel`; fill `output_ids`, `stream`, `stats`.

    `logits` are the prefill's last-position logits; each generated token except the last is fed
    back through `language_model`, extending `cache`.
    """
    picker = TokenPicker(settings, logits.device)
    device = logits.device
    context = torch.tensor([[i for i in context_ids if i >= 0]], device=device)
    first_token_at = started
    while True:
        token = picker(logits, context)
        output_ids.append(token)
        stats.output_tokens = len(output_ids)
        if len(output_ids) == 1:
            first_token_at = time.perf_counter()
            stats.ttft_s = first_token_at - started
        if token == eos_id:
            stats.stop_reason = "eos"
            break
        delta = stream.push(token)
        if delta:
            yield delta
        if stream.stopped:
            stats.stop_reason = "stop_string"
            break
        if cancel.is_set():
            stats.stop_reason = "cancelled"
            break
        if len(output_ids) >= max_new_tokens:
            stats.stop_reason = "length"
            break
        token_tensor = torch.tensor([[token]], device=device)
        context = torch.cat([context, token_tensor], dim=1)
        out = language_model(input_ids=token_tensor, cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float()
    stats.decode_s = time.perf_counter() - first_token_at
    tail = stream.finish()
    if tail:
        yield tail
