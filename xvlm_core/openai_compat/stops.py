"""The request's `stop` strings applied to streamed text, as OpenAI does: the answer ends before the first one."""

from __future__ import annotations


class StopMatcher:
    """Applies the request's `stop` strings to streamed text: never shows a stop string or the start of one.

    Each character is looked at once per stop string (plus the steps back a partial match takes, at most one
    per step forward), so the work grows with the generated text, not with its square or with the stop
    strings' lengths squared.
    """

    def __init__(self, stops: list[str]):
        self._stops = [_StopString(stop) for stop in stops]
        self._shown: list[str] = []  # released text, in pieces: joined once, at the end
        self._held = ""  # text that may be the start of a stop string
        self.stopped = False

    @property
    def text(self) -> str:
        """Everything seen, cut before the first stop string once one appears."""
        return "".join(self._shown) + self._held

    def push(self, delta: str) -> str:
        """The part of the text so far that can be shown now."""
        if self.stopped:
            return ""
        window = self._held + delta  # a stop string that ends in `delta` starts at the earliest in `_held`
        cut: int | None = None
        for index, char in enumerate(delta, start=len(self._held)):
            for stop in self._stops:
                if stop.feed(char):
                    start = index + 1 - len(stop.text)
                    cut = start if cut is None else min(cut, start)
        if cut is not None:
            self.stopped = True
            return self._release(window[:cut], "")
        hold = max((stop.matched for stop in self._stops), default=0)
        return self._release(window[: len(window) - hold], window[len(window) - hold :])

    def finish(self) -> str:
        """What was held back because it might have started a stop string that never came."""
        return self._release(self._held, "")

    def _release(self, shown: str, held: str) -> str:
        self._held = held
        if shown:
            self._shown.append(shown)
        return shown


class _StopString:
    """One stop string and how much of it the text so far ends with (Knuth-Morris-Pratt)."""

    def __init__(self, text: str):
        self.text = text
        self.matched = 0
        # fallback[k]: the longest proper prefix of text[:k] that is also a suffix of it, where a partial
        # match of k characters continues when the next character does not extend it.
        self.fallback = [0] * (len(text) + 1)
        k = 0
        for index in range(1, len(text)):
            while k and text[index] != text[k]:
                k = self.fallback[k]
            if text[index] == text[k]:
                k += 1
            self.fallback[index + 1] = k

    def feed(self, char: str) -> bool:
        """Take the next character of the text; whether the text now ends with the whole stop string."""
        k = self.matched
        if k == len(self.text):
            k = self.fallback[k]
        while k and char != self.text[k]:
            k = self.fallback[k]
        if char == self.text[k]:
            k += 1
        self.matched = k
        return k == len(self.text)
