"""`xvlm bench`: load time, time to first token and decode speed over a multi-turn image chat.

The same conversation can also be run the plain transformers way in a process of its own
(`bench_baseline`), so both are measured on one machine in one sitting. Decode speed is also given as the
memory bandwidth it implies: the bytes of weights one token reads (int8 weights count one byte, int4 half
of one plus their scales) times tokens per second. The report names the processor and its instruction
sets, and the kernel each linear layer ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import platformdirs
import torch
from PIL import Image

from xvlm_core.answers import AnswerResult
from xvlm_core.bench.quality import compare_to_exact
from xvlm_core.engines.choice import load_on_engine
from xvlm_core.engines.pytorch.device import dtype_name, peak_resident_set_mb, processor
from xvlm_core.engines.pytorch.loading import LoadedModel, load_model
from xvlm_core.engines.pytorch.quantize import kernel_paths, weight_bytes
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import XvlmError
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings

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
    engine: str = "auto",
) -> dict[str, float | int | str]:
    """Measure one image + question, then follow-ups; `model=None` uses the synthetic full-size checkpoint.

    One untimed answer comes first: a process's first large allocations touch fresh memory, which on
    some machines costs seconds, and would otherwise be charged to whichever side runs first. With
    `baseline`, a separate plain transformers process (exact weights) answers the same conversation
    afterwards: a model inside this process would share its memory, allocator and threads.
    On llama.cpp (`engine`), quantized weights are compared with exact ones on next-token distributions only.
    """
    synthetic = model is None
    model = model or str(synthetic_checkpoint())
    loaded = load_on_engine(model, vision_tower, device, dtype, quantize=quantize, engine=engine)
    read_per_token = bytes_read_per_token(loaded)
    result: dict[str, float | int | str] = {
        "model": "synthetic full-size Xmodel-VLM" if synthetic else model,
        "device": str(loaded.device),
        **processor(),
        "dtype": dtype_name(loaded.dtype),
        "quantize": quantize,
        "engine": loaded.engine,
        "kernels": _kernels(loaded),
        "threads": torch.get_num_threads(),
        "load_s": loaded.load_s,
        "weights_read_per_token_gb": read_per_token / 1e9,
    }
    with tempfile.TemporaryDirectory() as scratch:
        image = str(bench_image(Path(scratch)))
        _answer(ChatSession(loaded), conversation(1, image, [])[-1], new_tokens)
        result["peak_rss_mb"] = peak_resident_set_mb()  # loading and one whole answer
        result.update(_run_turns(loaded, image, turns, new_tokens))
        result["ttft_image_read_ahead_s"] = _ttft_with_image_read_ahead(loaded, image)
        if quantize != "none":
            # After the timed turns and the peak above: the exact model is loaded only to compare with.
            exact = load_model(model, vision_tower, device, dtype)
            result.update(compare_to_exact(loaded, exact, conversation(1, image, [])[-1]))
            del exact
    result["implied_bandwidth_gbs"] = read_per_token * float(result["decode_tok_s"]) / 1e9
    if baseline:
        del loaded
        result.update(plain_process_baseline(model, vision_tower, str(result["device"]), str(result["dtype"]),
                                             turns, new_tokens, torch.get_num_threads()))
    return result


def plain_process_baseline(
    model: str, vision_tower: str | None, device: str, dtype: str, turns: int, new_tokens: int, threads: int
) -> dict[str, float | int | str]:
    """The same conversation answered by plain transformers in a process of its own; its figures as `baseline_*`."""
    command = [sys.executable, "-m", "xvlm_core.bench.baseline", "--model", model, "--device", device,
               "--dtype", dtype, "--turns", str(turns), "--new-tokens", str(new_tokens), "--threads", str(threads)]
    if vision_tower:
        command += ["--vision-tower", vision_tower]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise XvlmError(f"The plain transformers baseline could not run: {reason}")
    return {f"baseline_{key}": value for key, value in json.loads(lines[-1]).items()}


def _kernels(loaded: LoadedModel) -> str:
    if loaded.language_file is not None:
        from xvlm_core.engines.llama_cpp.gguf_export import weight_types

        return f"llama.cpp: {weight_types(loaded.language_file)}"
    return kernel_paths(loaded.model.language_model)


def bytes_read_per_token(loaded: LoadedModel) -> int:
    """Bytes of language-model weights one decoded token reads: all but the embedding table (one row of it)."""
    if loaded.language_file is not None:
        from xvlm_core.engines.llama_cpp.gguf_export import decode_bytes

        return decode_bytes(loaded.language_file)
    language = loaded.model.language_model
    table = language.get_input_embeddings().weight
    shared_with_head = getattr(language.lm_head, "weight", None) is table
    return weight_bytes(language) - (0 if shared_with_head else table.numel() * table.element_size())


def conversation(turns: int, image: str, answers: list[str]) -> list[list[Message]]:
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


def _ttft_with_image_read_ahead(loaded: LoadedModel, image: str) -> float:
    """Turn 1's time to first token in a new session that read the image before the question came, as the app
    does while a question is typed about a picture just attached: the prompt alone."""
    session = ChatSession(loaded)
    session.look_at([image])
    return _answer(session, conversation(1, image, [])[-1], 1).stats.ttft_s


def _run_turns(loaded: LoadedModel, image: str, turns: int, new_tokens: int) -> dict[str, float | int]:
    """The conversation in this project's session: its first and last turn, and the decode rate of all."""
    session = ChatSession(loaded)
    answers: list[str] = []
    stats = []
    for turn in range(turns):
        result = _answer(session, conversation(turn + 1, image, answers)[-1], new_tokens)
        answers.append(result.text)
        stats.append(result.stats)
    first, last = stats[0], stats[-1]
    decoded = sum(s.output_tokens - 1 for s in stats)
    # Step k of a turn feeds its token k after prompt + k cached positions; attention over them makes deeper steps
    # slower, so a rate is compared with another engine's at the same mean depth (`llama-bench -d D -n N` decodes
    # at D + (N - 1) / 2).
    depths = sum((s.output_tokens - 1) * s.prompt_tokens + (s.output_tokens - 1) * (s.output_tokens - 2) / 2
                 for s in stats)
    return {
        "prompt_tokens": first.prompt_tokens,
        "image_encode_s": first.image_encode_s,
        "prefill_s": first.prefill_s,
        "ttft_s": first.ttft_s,
        # All tokens after each turn's first over all the time they took: a mean of per-turn rates would weigh
        # a turn that ran while the machine was quiet more than one that ran while it was busy.
        "decode_tok_s": decoded / sum(s.decode_s for s in stats),
        "decode_mean_depth": depths / max(1, decoded),
        "output_tokens": first.output_tokens,
        f"turn{turns}_ttft_s": last.ttft_s,
        f"turn{turns}_prompt_tokens": last.prompt_tokens,
        f"turn{turns}_prefilled_tokens": last.prefilled_tokens,
    }
