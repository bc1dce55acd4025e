"""Loading a checkpoint for the llama.cpp engine: the tower and projector in PyTorch, the language model as GGUF."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch

from xvlm_core import hub
from xvlm_core.engines.llama_cpp.gguf_export import gguf_file
from xvlm_core.engines.llama_cpp.runner import LlamaLanguageModel, LlamaModel, llama_cpp_module
from xvlm_core.engines.pytorch import loading
from xvlm_core.engines.pytorch.device import cpu_supports_bf16
from xvlm_core.errors import Cancelled, EngineUnavailable, OutOfMemory, Remedy, XvlmError
from xvlm_core.model import checkpoint
from xvlm_core.stages import Stage


def load_model(
    model: str,
    vision_tower: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_stage: Callable[[str], None] = lambda stage: None,
    quantize: str = "none",
) -> loading.LoadedModel:
    """`loading.load_model`'s model with llama.cpp running the language model, on the CPU.

    The exact weights are held in `dtype`, in 16 bits for "auto" (`language_dtype`); `quantize` "int8" runs
    llama.cpp's Q8_0 and "int4" its Q4_K_M, both made from the exact file by llama.cpp's quantizer.
    """
    started = time.perf_counter()
    llama_cpp_module()  # not installed: say so before anything is read
    if device not in ("auto", "cpu"):
        raise EngineUnavailable(f"The llama.cpp engine runs on the CPU only, not on {device}.",
                                code=Remedy.CHOOSE_DEVICE)
    # The tower's linear layers go 8-bit in the quantized modes, as on the PyTorch engine.
    loaded = loading.load_model(model, vision_tower, "cpu", dtype, on_stage, quantize, language_weights=False)
    files = checkpoint.find_weight_files(hub.resolve_folder(model))
    exact_dtype = language_dtype(dtype, loaded.dtype)
    try:
        path = gguf_file(files, loaded.config.language, loaded.tokenizer, exact_dtype, quantize, on_stage)
        on_stage(Stage.LOADING_INTO_LLAMA_CPP)
        language = LlamaModel(path, float32_cache=exact_dtype == torch.float32)
    except (Cancelled, OutOfMemory):
        raise
    except XvlmError as exc:  # PyTorch may still run the model: `engines.choice` decides
        raise EngineUnavailable(exc.details, code=exc.code, repo_id=exc.repo_id) from exc
    context_length = loaded.context_length
    return replace(
        loaded,
        quantize=quantize,
        engine="llama.cpp",
        open_language=lambda: LlamaLanguageModel(language, context_length),
        language_file=path,
        language_dtype=exact_dtype,
        load_s=time.perf_counter() - started,
    )


def language_dtype(requested: str, tower_dtype: torch.dtype) -> torch.dtype:
    """The number format of llama.cpp's exact file: the one asked for, else 16 bits.

    PyTorch's "auto" is float32 on a processor without bf16 instructions (AVX2 only, as many desktop CPUs are),
    where its own bf16 products are slow. llama.cpp widens 16-bit weights as it reads them, and float16 is its
    fastest format there (F16C): on an AMD Zen 3 (AVX2), 2 threads, float32 decoded 6.4 tokens/s and float16 8.5,
    and float16 read a prompt 1.5x as fast as bfloat16. Where the processor has bf16 instructions, "auto" is
    bfloat16, as PyTorch's is.
    """
    if requested != "auto":
        return tower_dtype
    return torch.bfloat16 if cpu_supports_bf16() else torch.float16
