"""What a chat session needs of the language model that runs it: positions in, next-token logits out.

The conversation (fitting the context, images, which positions are reused, picking, streaming) is the
session's, the same for every engine; an engine only keeps a cache of positions and extends it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

# A stretch of the input: token ids, or embeddings [n, hidden] that go in as they are (an image's).
Run = list[int] | torch.Tensor
# Called before each chunk of a prefill with the positions of it done so far; it may raise to stop there.
BeforeChunk = Callable[[int], None]


class LanguageModel(Protocol):
    """A language model with a cache of the positions fed to it so far, in order."""

    @property
    def length(self) -> int:
        """Positions in the cache."""
        ...

    def crop(self, length: int) -> None:
        """Keep the first `length` positions of the cache, forget the rest."""
        ...

    def reset(self) -> None:
        """Forget every position (after an error left the cache in an unknown state)."""
        ...

    def prefill(self, runs: Sequence[Run], before_chunk: BeforeChunk) -> torch.Tensor:
        """Feed `runs` after what is cached, in chunks; the last position's logits [1, vocab] float32."""
        ...

    def step(self, token: int) -> torch.Tensor:
        """Feed one token after what is cached; the next position's logits [1, vocab] float32."""
        ...

