"""`xvlm bench`: load time, time to first token and decode speed over a multi-turn image chat.

The same conversation can also be run the plain transformers way (`generate`, the image encoded and
the whole prompt recomputed every turn, exact weights), so both are measured in one process on one machine.
Decode speed is also given as the memory bandwidth it implies: the bytes of weights one token reads
(int8 weights count one byte) times tokens per second.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import platformdirs
import torch
from PIL import Image
from transformers.generation.streamers import BaseStreamer

from xvlm_core.device import dtype_name, peak_resident_set_mb
from xvlm_core.images import load_image
from xvlm_core.model import LoadedModel, load_model
from xvlm_core.prompt import SYSTEM_V1, Message, images_in_order, render_segments
from xvlm_core.quality import compare_to_exact
from xvlm_core.quantize import weight_bytes
from xvlm_core.sampling import SamplingSettings
from xvlm_core.session import AnswerResult, ChatSession

# About 60 tokens with the Xmodel tokenizer, like a detailed first question about a photo.
QUESTION = (
    "Please look carefully at this picture and describe what you see in it. Which objects are in the "
    "foreground and which are in the background, what colours dominate, and is there any text or "
    "writing visible anywhere? Finally, guess where and when it might have been taken."
)
FOLLOW_UPS = (
    "Which colour covers the largest area?",
    "Is there anything unusual in the corners?",
    "Describe the lighting in one sentence.",
    "What would you call this picture?",
)


def synthetic_checkpoint(folder: Path | None = None) -> Path:
    """A checkpoint with Xmodel-VLM's full dimensions and random weights, written once and reused."""
    from xvlm_core.testing import FULL_LANGUAGE, FULL_TOWER, write_checkpoint

    folder = folder or Path(platformdirs.user_cache_dir("xvlm", appauthor=False)) / "synthetic-xmodel-vlm-full"
    if (folder / "model.safetensors").is_file():
        return folder
    building = folder.with_name(folder.name + ".partial")
    shutil.rmtree(building, ignore_errors=True)
    write_checkpoint(building, language=FULL_LANGUAGE, tower=FULL_TOWER, dtype=torch.bfloat16)
    building.rename(folder)
    return folder


def bench_image(folder: Path) -> Path:
    """A 640x480 photo-like test image (smooth gradients plus noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    pixels = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    path = folder / "bench.png"
    Image.fromarray(pixels).save(path)
    return path


def run_benchmark(
    model: str | None,
    vision_tower: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    turns: int = 5,
    new_tokens: int = 32,
    baseline: bool = False,
    quantize: str = "none",
) -> dict[str, float | int | str]:
    """Measure one image + question, then follow-ups; `model=None` uses the synthetic full-size checkpoint.

    One untimed answer comes first: a process's first large allocations touch fresh memory, which on
    some machines costs seconds, and would otherwise be charged to whichever side runs first. With
    `baseline`, plain transformers (always with exact weights, loaded a second time for `quantize="int8"`)
    answers each turn right after this project does, so both see the machine in the same state.
    """
    synthetic = model is None
    model = model or str(synthetic_checkpoint())
    loaded = load_model(model, vision_tower=vision_tower, device=device, dtype=dtype, quantize=quantize)
    read_per_token = bytes_read_per_token(loaded)
    with tempfile.TemporaryDirectory() as scratch:
        image = str(bench_image(Path(scratch)))
        _answer(ChatSession(loaded), _conversation(1, image, [])[-1], new_tokens)
        result: dict[str, float | int | str] = {
            "model": "synthetic full-size Xmodel-VLM" if synthetic else model,
            "device": str(loaded.device),
            "dtype": dtype_name(loaded.dtype),
            "quantize": quantize,
            "threads": torch.get_num_threads(),
            "load_s": loaded.load_s,
            "weights_read_per_token_gb": read_per_token / 1e9,
            # Loading and one whole answer, before a baseline model is loaded.
            "peak_rss_mb": peak_resident_set_mb(),
        }
        plain = None
        if baseline:
            plain = loaded if quantize == "none" else load_model(model, vision_tower, device, dtype)
        result.update(_run_turns(loaded, plain, image, turns, new_tokens))
        if quantize != "none":
            # After the timed turns and the peak above: the exact model is loaded only to compare with.
            exact = plain if plain is not None else load_model(model, vision_tower, device, dtype)
            result.update(compare_to_exact(loaded, exact, _conversation(1, image, [])[-1]))
            del exact
    result["implied_bandwidth_gbs"] = read_per_token * float(result["decode_tok_s"]) / 1e9
    if plain is not None:
        plain_bytes = bytes_read_per_token(plain)
        result["baseline_weights_read_per_token_gb"] = plain_bytes / 1e9
        result["baseline_implied_bandwidth_gbs"] = plain_bytes * float(result["baseline_decode_tok_s"]) / 1e9
    return result


def bytes_read_per_token(loaded: LoadedModel) -> int:
    """Bytes of language-model weights one decoded token reads: all but the embedding table (one row of it)."""
    language = loaded.model.language_model
    table = language.get_input_embeddings().weight
    shared_with_head = getattr(language.lm_head, "weight", None) is table
    return weight_bytes(language) - (0 if shared_with_head else table.numel() * table.element_size())


def _conversation(turns: int, image: str, answers: list[str]) -> list[list[Message]]:
    """The prompt of every turn, given the answers of the turns before it."""
    messages = [Message("user", QUESTION, [image])]
    prompts = [list(messages)]
    for turn, answer in enumerate(answers[: turns - 1]):
        messages += [Message("assistant", answer), Message("user", FOLLOW_UPS[turn % len(FOLLOW_UPS)])]
        prompts.append(list(messages))
    return prompts


def _answer(session: ChatSession, messages: list[Message], new_tokens: int) -> AnswerResult:
    answer = session.answer(messages, SamplingSettings(max_new_tokens=new_tokens))
    for _ in answer:
        pass
    return answer.result


def _run_turns(
    loaded: LoadedModel, plain: LoadedModel | None, image: str, turns: int, new_tokens: int
) -> dict[str, float | int]:
    """The conversation in this project's session and, turn by turn after it, the plain way on `plain`."""
    session = ChatSession(loaded)
    answers: list[str] = []
    plain_answers: list[str] = []
    stats, plain_ttfts, plain_decodes = [], [], []
    for turn in range(turns):
        result = _answer(session, _conversation(turn + 1, image, answers)[-1], new_tokens)
        answers.append(result.text)
        stats.append(result.stats)
        if plain is not None:
            ttft, decoded, text = _plain_turn(plain, _conversation(turn + 1, image, plain_answers)[-1], new_tokens)
            plain_ttfts.append(ttft)
            plain_decodes.append(decoded)
            plain_answers.append(text)
    first, last = stats[0], stats[-1]
    decoded = sum(s.output_tokens - 1 for s in stats)
    figures: dict[str, float | int] = {
        "prompt_tokens": first.prompt_tokens,
        "image_encode_s": first.image_encode_s,
        "prefill_s": first.prefill_s,
        "ttft_s": first.ttft_s,
        "decode_tok_s": decoded / sum(s.decode_s for s in stats),
        "output_tokens": first.output_tokens,
        f"turn{turns}_ttft_s": last.ttft_s,
        f"turn{turns}_prompt_tokens": last.prompt_tokens,
        f"turn{turns}_prefilled_tokens": last.prefilled_tokens,
    }
    if plain is not None:
        figures["baseline_ttft_s"] = plain_ttfts[0]
        figures[f"baseline_turn{turns}_ttft_s"] = plain_ttfts[-1]
        # Both sides as all tokens after each turn's first over all the time they took: a mean of per-turn
        # rates would weigh a turn that ran while the machine was quiet more than one that ran while it was busy.
        figures["baseline_decode_tok_s"] = sum(n for n, _ in plain_decodes) / sum(s for _, s in plain_decodes)
    return figures


class _TokenClock(BaseStreamer):
    """Records when `generate` produces each token (its first call carries the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@torch.inference_mode()
def _plain_turn(
    loaded: LoadedModel, messages: list[Message], new_tokens: int
) -> tuple[float, tuple[int, float], str]:
    """One turn the plain way (default `generate`, the image encoded and the whole prompt recomputed):
    time to first token, (tokens after the first, seconds they took), answer."""
    model, tokenizer = loaded.model, loaded.tokenizer
    started = time.perf_counter()
    assert loaded.preprocess is not None
    pixels = torch.cat([loaded.preprocess(load_image(path)) for path in images_in_order(messages)])
    input_ids = tokenizer.encode_segments(render_segments(messages, SYSTEM_V1))
    embeds = model.embed(input_ids, list(model.encode_images(pixels)))
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
    decoded = (len(token_times) - 1, token_times[-1] - token_times[0])
    return token_times[0] - started, decoded, tokenizer.decode(output[0].tolist()).strip()
