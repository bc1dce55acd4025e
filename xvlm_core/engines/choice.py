"""Loading a model on the engine the options name: PyTorch's, or llama.cpp's for the language model."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from xvlm_core.engines.pytorch.device import pick_device
from xvlm_core.engines.pytorch.loading import LoadedModel, load_model
from xvlm_core.errors import EngineUnavailable
from xvlm_core.precisions import ENGINE_CHOICES

log = logging.getLogger(__name__)


def chosen_engine(engine: str, device: str) -> str:
    """The engine that runs the language model. "auto" is llama.cpp where it can run, on the CPU with
    llama-cpp-python installed, because there it decodes exact and 4-bit weights about twice as fast as PyTorch
    and loads 8-bit ones three times as fast, where the two decode alike (docs/benchmarks.md); PyTorch everywhere
    else, GPUs included."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"'{engine}' is not an engine (use {', '.join(ENGINE_CHOICES)})")
    if engine != "auto":
        return engine
    if device not in ("auto", "cpu") or pick_device(device).type != "cpu":
        return "pytorch"
    return "llama.cpp" if _installed("llama_cpp") else "pytorch"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: taken away on purpose
        return False


def load_on_engine(
    model: str,
    vision_tower: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_stage: Callable[[str], None] = lambda stage: None,
    quantize: str = "none",
    engine: str = "auto",
) -> LoadedModel:
    """`pytorch.loading.load_model`, or llama.cpp's where `chosen_engine` says; a ChatSession answers on either.

    Chosen automatically, llama.cpp that cannot take the model (it cannot convert it, or the disk has no room for
    the converted file) gives way to PyTorch; named, its error is the answer."""
    chosen = chosen_engine(engine, device)
    if chosen == "pytorch":
        return load_model(model, vision_tower, device, dtype, on_stage, quantize)
    from xvlm_core.engines.llama_cpp.loading import load_model as load_llama_cpp

    try:
        return load_llama_cpp(model, vision_tower, device, dtype, on_stage, quantize)
    except EngineUnavailable as exc:
        if engine != "auto":
            raise
        log.warning("llama.cpp cannot run this model (%s); it runs on PyTorch instead", exc)
    return load_model(model, vision_tower, device, dtype, on_stage, quantize)
