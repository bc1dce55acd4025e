"""Loading a model on the engine the options name: PyTorch's, or llama.cpp's for the language model."""

from __future__ import annotations

from collections.abc import Callable

from xvlm_core.engines.pytorch.loading import LoadedModel, load_model
from xvlm_core.precisions import ENGINE_CHOICES


def load_on_engine(
    model: str,
    vision_tower: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    on_stage: Callable[[str], None] = lambda stage: None,
    quantize: str = "none",
    engine: str = "pytorch",
) -> LoadedModel:
    """`pytorch.loading.load_model`, or with `engine="llama.cpp"` llama.cpp's; a ChatSession answers on either."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"'{engine}' is not an engine (use {', '.join(ENGINE_CHOICES)})")
    if engine == "llama.cpp":
        from xvlm_core.engines.llama_cpp.loading import load_model as load_llama_cpp

        return load_llama_cpp(model, vision_tower, device, dtype, on_stage, quantize)
    return load_model(model, vision_tower, device, dtype, on_stage, quantize)
