"""The bench's baseline: plain transformers answering the bench's conversation, in a process of its own.

`python -m xvlm_core.bench.baseline --model FOLDER ...` loads the language model the plain way
(`LlamaForCausalLM.from_pretrained`, exact weights), keeps this project's vision tower and projector (plain
transformers has no XDP projector), answers each turn with default `generate` (the image encoded and the
whole prompt recomputed every turn) and prints one JSON object. Nothing else of this project runs in it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import LlamaForCausalLM
from transformers.generation.streamers import BaseStreamer

from xvlm_core import hub
from xvlm_core.bench.local import bench_image, bytes_read_per_token, conversation
from xvlm_core.engines.pytorch.device import peak_resident_set_mb
from xvlm_core.engines.pytorch.loading import LoadedModel, load_model
from xvlm_core.errors import XvlmError
from xvlm_core.model.images import load_image
from xvlm_core.model.prompt import SYSTEM_V1, Message, images_in_order, render_segments


def load_plain(model: str, vision_tower: str | None, device: str, dtype: str) -> LoadedModel:
    """The checkpoint with its language model read by `LlamaForCausalLM.from_pretrained`."""
    loaded = load_model(model, vision_tower=vision_tower, device=device, dtype=dtype)
    config = loaded.model.language_model.config
    del loaded.model.language_model
    gc.collect()
    language = LlamaForCausalLM.from_pretrained(hub.resolve_folder(model), config=config, dtype=loaded.dtype)
    loaded.model.language_model = language.to(loaded.device).eval()
    return loaded


def measure(loaded: LoadedModel, turns: int, new_tokens: int) -> dict[str, float | int]:
    """Turn 1's and the last turn's time to first token (turn 1's split into its image and the rest), and the
    decode rate over all turns."""
    with tempfile.TemporaryDirectory() as scratch:
        image = str(bench_image(Path(scratch)))
        plain_turn(loaded, conversation(1, image, [])[-1], new_tokens)  # untimed, as on the bench's side
        answers: list[str] = []
        done: list[PlainTurn] = []
        for turn in range(turns):
            done.append(plain_turn(loaded, conversation(turn + 1, image, answers)[-1], new_tokens))
            answers.append(done[-1].text)
    read_per_token = bytes_read_per_token(loaded)
    decode_tok_s = sum(t.decoded_tokens for t in done) / sum(t.decode_s for t in done)
    return {
        "pid": os.getpid(),  # shows the figures came from a process of their own
        "ttft_s": done[0].ttft_s,
        # The image costs both sides alike (the same tower and projector); what is left of TTFT is the prompt's.
        "image_encode_s": done[0].image_encode_s,
        f"turn{turns}_ttft_s": done[-1].ttft_s,
        # All tokens after each turn's first over all the time they took, as on the bench's side.
        "decode_tok_s": decode_tok_s,
        "weights_read_per_token_gb": read_per_token / 1e9,
        "implied_bandwidth_gbs": read_per_token * decode_tok_s / 1e9,
        "peak_rss_mb": peak_resident_set_mb(),
    }


class _TokenClock(BaseStreamer):
    """Records when `generate` produces each token (its first call carries the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@dataclass(frozen=True)
class PlainTurn:
    ttft_s: float
    image_encode_s: float  # reading, preprocessing and encoding the turn's images: part of ttft_s
    decoded_tokens: int  # after the first
    decode_s: float  # the time they took
    text: str


@torch.inference_mode()
def plain_turn(loaded: LoadedModel, messages: list[Message], new_tokens: int) -> PlainTurn:
    """One turn the plain way (default `generate`, the image encoded and the whole prompt recomputed)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    started = time.perf_counter()
    assert loaded.preprocess is not None
    pixels = torch.cat([loaded.preprocess(load_image(path)) for path in images_in_order(messages)])
    images = list(model.encode_images(pixels))
    encoded = time.perf_counter()
    input_ids = tokenizer.encode_segments(render_segments(messages, SYSTEM_V1))
    embeds = model.embed(input_ids, images)
    clock = _TokenClock()
    output = model.language_model.generate(
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        streamer=clock,
        pad_token_id=tokenizer.eos_id,
    )
    token_times = clock.times[1:]
    return PlainTurn(token_times[0] - started, encoded - started, len(token_times) - 1,
                     token_times[-1] - token_times[0], tokenizer.decode(output[0].tolist()).strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xvlm_core.bench.baseline", description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--vision-tower")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # the checkpoint's tower and projector keys are expected extras
    try:
        loaded = load_plain(args.model, args.vision_tower, args.device, args.dtype)
    except XvlmError as exc:
        print(exc, file=sys.stderr)  # the bench quotes this last line
        return 1
    print(json.dumps(measure(loaded, args.turns, args.new_tokens)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
