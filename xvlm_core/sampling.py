"""How tokens are picked: one typed, validated set of settings with one set of defaults.

Torch-free, so the app's UI thread, the CLI's argument parser and the core all share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xvlm_core.errors import XvlmError

# Below this temperature the pick is greedy. Sampling divides the logits by the temperature: a tiny one
# (1e-320 is a valid float) turns them into inf and the probabilities into NaN, and long before that the
# distribution is the greedy pick for any logits that float32 tells apart.
GREEDY_BELOW = 1e-5
# The penalty divides (or multiplies) a seen token's logit: past these bounds float32 logits turn into inf or 0,
# and no useful penalty comes near them (transformers suggests about 1.2).
REPETITION_PENALTY_RANGE = (0.01, 100.0)


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick tokens. Temperature 0 (or below GREEDY_BELOW) means greedy, the authors' default."""

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
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed < 2**63):
            raise XvlmError(f"seed must be a whole number from 0 to 2**63 - 1, not {self.seed!r}.")
        if self.max_new_tokens < 1:
            raise XvlmError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}.")
        if self.temperature < 0:
            raise XvlmError(f"temperature must be 0 (greedy) or positive, not {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise XvlmError(f"top_p must be in (0, 1], not {self.top_p}.")
        if self.top_k < 0:
            raise XvlmError(f"top_k must be 0 (off) or positive, not {self.top_k}.")
        low, high = REPETITION_PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:
            raise XvlmError(f"repetition_penalty must be between {low} and {high}, not {self.repetition_penalty}.")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

