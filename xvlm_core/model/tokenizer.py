"""The Xmodel SentencePiece tokenizer, built from the .model file alone (no code from the checkpoint)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from xvlm_core.errors import CheckpointError
from xvlm_core.local_files import read_regular_file
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.model.prompt import EOS_TEXT, ImageSlot, Segment, clean_text

# LLaMA's model is 0.5 MB and a 256k-piece multilingual one about 4 MB; a larger file is not a tokenizer.
MAX_TOKENIZER_BYTES = 64 * 2**20


class Tokenizer:
    """SentencePiece with the original wrapper's rules: BOS once, `</s>` as EOS, an image slot as -200."""

    def __init__(self, model_file: Path):
        # Read once, through the regular-file check, and parsed from the bytes: SentencePiece never opens the path.
        proto = read_regular_file(model_file, MAX_TOKENIZER_BYTES, CheckpointError, "a SentencePiece model")
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(proto)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"{model_file}: not a readable SentencePiece model ({exc}).") from None
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else 1
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else 2
        self.vocab_size = self.sp.get_piece_size()

    def _encode_plain(self, text: str) -> list[int]:
        # The original wrapper encodes to pieces and maps each piece to its id. SentencePiece cannot take
        # lone surrogates, which Python strings may hold.
        text = clean_text(text)
        return [self.sp.piece_to_id(piece) for piece in self.sp.encode(text, out_type=str)]

    def encode_text(self, text: str) -> list[int]:
        """Ids for text that may contain `</s>`: each stretch between them gets its own dummy prefix."""
        ids: list[int] = []
        stretches = text.split(EOS_TEXT)
        for index, stretch in enumerate(stretches):
            if stretch:
                ids += self._encode_plain(stretch)
            if index < len(stretches) - 1:
                ids.append(self.eos_id)
        return ids

    def encode_segments(self, segments: Iterable[Segment], bos: bool = True) -> list[int]:
        """BOS (if `bos`), then each run of text encoded as text and IMAGE_TOKEN_INDEX for each image slot.

        Text is only ever text: `<image>` written in a message stays characters, so only attached
        images get a slot. Runs end at slots, as the original split its prompt at each placeholder.
        """
        ids = [self.bos_id] if bos else []
        run: list[str] = []
        for segment in segments:
            if isinstance(segment, ImageSlot):
                ids += self.encode_text("".join(run))
                ids.append(IMAGE_TOKEN_INDEX)
                run = []
            else:
                run.append(segment)
        return ids + self.encode_text("".join(run))

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if 0 <= i < self.vocab_size])


class StreamDecoder:
    """Turns generated ids into text deltas that never split a character.

    SentencePiece byte pieces (<0xE6>...) only become text once the whole UTF-8 sequence is
    there, and a leading `▁` only becomes a space once a following piece shows it is not the
    end; so the decoded text is held back while it ends in an incomplete character.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        """Add one id; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return ""
        delta, self.emitted = text[len(self.emitted) :], text
        return delta

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids)


def find_tokenizer_file(folder: Path) -> Path:
    """The SentencePiece model of a checkpoint folder."""
    for name in ("tokenizer.model", "xmodel_32000.model"):
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(folder.glob("*.model"))
    if candidates:
        return candidates[0]
    raise CheckpointError(f"{folder}: no SentencePiece tokenizer (tokenizer.model or *.model) in this folder.")
