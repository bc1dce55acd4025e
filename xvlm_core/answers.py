"""What every engine that answers gives back, torch-free: a stream of text deltas with a typed result at its end.

The PyTorch session (xvlm_core.engines.pytorch.session), the model-server client (xvlm_core.openai_compat.client)
and `xvlm serve`'s runner all answer through `AnsweringSession`, so the model thread and the server never know
which one answers.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from xvlm_core.errors import XvlmError
from xvlm_core.messages import Image, Message
from xvlm_core.sampling import SamplingSettings


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


@dataclass(frozen=True)
class AnswerResult:
    """A finished answer: its text and what it cost; a local engine adds the prompt and ids it came from."""

    text: str
    stats: GenerationStats
    prompt: str = ""  # the rendered conversation the model read (after dropping turns that did not fit)
    input_ids: list[int] = field(default_factory=list)
    output_ids: list[int] = field(default_factory=list)  # every picked id, the final EOS included


class Answer:
    """One answer being generated: iterate for text deltas; `result` is there once iteration has ended.

    Nothing runs until iteration starts. Stop early by setting the cancel event and iterating on (the result
    then says "cancelled"); an iteration that is abandoned or fails leaves no result.
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


class AnsweringSession(Protocol):
    """A conversation partner: answers the last of `messages`, reusing what it can of earlier calls."""

    def answer(self, messages: Sequence[Message], settings: SamplingSettings, system: str = ...,
               cancel: threading.Event | None = None) -> Answer: ...

    def look_at(self, images: Sequence[Image], cancel: threading.Event | None = None,
                before: Sequence[Message] | None = (), system: str = ...) -> int:
        """Read images ahead of the question that will carry them, after the conversation `before` (None: not
        known yet); how many images were read now (0: nothing to do)."""
        ...


class LoadedEngine(Protocol):
    """A model ready to answer, here or on a server: what the model thread holds besides its session."""

    def summary(self) -> dict[str, Any]: ...
