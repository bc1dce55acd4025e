"""Xmodel-VLM for vLLM, loaded through the `vllm.general_plugins` entry point (never by the app or `xvlm`).

`register()` runs in every vLLM process, possibly more than once; it only records names, so vLLM imports the
model, tokenizer and renderer modules when it needs them.
"""

from __future__ import annotations

TOKENIZER_MODE = "xvlm"


def register() -> None:
    """Teach vLLM the `xmodelvlm` config, the model, tokenizer mode `xvlm` and its chat renderer."""
    from transformers import AutoConfig
    from vllm import ModelRegistry
    from vllm.renderers.registry import RENDERER_REGISTRY
    from vllm.tokenizers.registry import TokenizerRegistry
    from vllm.transformers_utils import config as vllm_config

    from xvlm_core.engines.vllm.config import ARCHITECTURE, MODEL_TYPE, XmodelVLMConfig

    AutoConfig.register(MODEL_TYPE, XmodelVLMConfig, exist_ok=True)
    # vLLM's own table of configs it reads without remote code; found there, `auto_map` is never followed.
    vllm_config._CONFIG_REGISTRY[MODEL_TYPE] = XmodelVLMConfig
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, "xvlm_core.engines.vllm.model:XmodelVLMForCausalLM")
    if TOKENIZER_MODE not in TokenizerRegistry.tokenizers:
        TokenizerRegistry.register(TOKENIZER_MODE, "xvlm_core.engines.vllm.tokenizer", "XvlmTokenizer")
    if TOKENIZER_MODE not in RENDERER_REGISTRY.renderers:
        RENDERER_REGISTRY.register(TOKENIZER_MODE, "xvlm_core.engines.vllm.renderer", "XvlmRenderer")
