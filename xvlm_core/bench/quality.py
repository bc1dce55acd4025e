"""How far quantized weights move a model from the exact one: per layer, and in next-token distributions.

Random weights cannot show whether answers stay good, but they show how much each quantized product and
each next-token distribution differs from the exact model's on the same input, which is what quantization
alone changes. Both models read the same tokens (teacher forcing), each with its own image features.
A model whose language model runs on another engine (llama.cpp) is compared on next-token distributions
only: its layers are not PyTorch modules to hook.
"""

from __future__ import annotations

import torch
from torch import nn

from xvlm_core.engines.pytorch.fused import named_products
from xvlm_core.engines.pytorch.loading import LoadedModel
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.model.images import load_image
from xvlm_core.model.prompt import SYSTEM_V1, Message, images_in_order, render_segments

# Rows of each layer's real input kept to compare the products on: enough for a stable error, small enough
# to keep for all 169 layers of the full model (~40 MB in float32).
_ROWS_PER_LAYER = 32


@torch.inference_mode()
def compare_to_exact(
    quantized: LoadedModel, exact: LoadedModel, messages: list[Message]
) -> dict[str, float | int | str]:
    """Teacher-forced top-1 agreement and mean KL(exact || quantized) over every position of `messages`'
    prompt, and each quantized layer's relative error on the inputs the exact model gave that layer."""
    if quantized.open_language is not None:
        return _distributions_only(quantized, exact, messages)
    layers = named_products(quantized.model.language_model)
    exact_layers = dict(exact.model.language_model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    hooks = [exact_layers[name].register_forward_hook(_keep_rows(inputs, name)) for name in layers]
    try:
        exact_logprobs = _next_token_logprobs(exact, messages)  # [T, vocab]
    finally:
        for hook in hooks:
            hook.remove()
    logprobs = _next_token_logprobs(quantized, messages)
    # KL(p || q) = sum p (log p - log q), one value per position.
    kl = (exact_logprobs.exp() * (exact_logprobs - logprobs)).sum(dim=-1)
    agreement = (exact_logprobs.argmax(dim=-1) == logprobs.argmax(dim=-1)).float()
    errors = {name: _relative_error(module, exact_layers[name], inputs[name]) for name, module in layers.items()}
    worst = max(errors, key=errors.__getitem__, default="")
    return {
        "quality_positions": int(kl.numel()),
        "quality_top1_agreement": agreement.mean().item(),
        "quality_mean_kl": kl.mean().item(),
        "quality_layers": len(errors),
        "quality_layer_error_mean": sum(errors.values()) / max(1, len(errors)),
        "quality_layer_error_max": errors.get(worst, 0.0),
        "quality_layer_error_worst": worst,
    }


def _distributions_only(
    quantized: LoadedModel, exact: LoadedModel, messages: list[Message]
) -> dict[str, float | int | str]:
    exact_logprobs = _next_token_logprobs(exact, messages)  # [T, vocab]
    logprobs = _one_position_at_a_time(quantized, messages)
    kl = (exact_logprobs.exp() * (exact_logprobs - logprobs)).sum(dim=-1)
    agreement = (exact_logprobs.argmax(dim=-1) == logprobs.argmax(dim=-1)).float()
    return {
        "quality_positions": int(kl.numel()),
        "quality_top1_agreement": agreement.mean().item(),
        "quality_mean_kl": kl.mean().item(),
    }


def _one_position_at_a_time(loaded: LoadedModel, messages: list[Message]) -> torch.Tensor:
    """`_next_token_logprobs` through the engine's own language model, which gives the last position's logits:
    each position is fed on its own. float32 [T, vocab]."""
    assert loaded.open_language is not None and loaded.preprocess is not None
    images = iter(loaded.model.encode_images(torch.cat([loaded.preprocess(load_image(path))
                                                        for path in images_in_order(messages)])))
    language = loaded.open_language()
    rows = []
    for token in loaded.tokenizer.encode_segments(render_segments(messages, SYSTEM_V1)):
        if token != IMAGE_TOKEN_INDEX:
            rows.append(language.prefill([[token]], lambda done: None))
            continue
        image = next(images)  # [144, hidden]
        rows += [language.prefill([image[index : index + 1]], lambda done: None) for index in range(image.shape[0])]
    return torch.cat(rows).log_softmax(dim=-1)


def _next_token_logprobs(loaded: LoadedModel, messages: list[Message]) -> torch.Tensor:
    """The model's log-probabilities for the token after each position of the prompt: float32 [T, vocab]."""
    model = loaded.model
    images = []
    if loaded.preprocess is not None and images_in_order(messages):
        pixels = torch.cat([loaded.preprocess(load_image(path)) for path in images_in_order(messages)])
        images = list(model.encode_images(pixels))
    embeds = model.embed(loaded.tokenizer.encode_segments(render_segments(messages, SYSTEM_V1)), images)
    logits = model.language_model(inputs_embeds=embeds, use_cache=False).logits[0]  # [T, vocab]
    return logits.float().log_softmax(dim=-1)


def _keep_rows(inputs: dict[str, torch.Tensor], name: str):
    """A forward hook keeping up to _ROWS_PER_LAYER rows of a layer's input, spread over the sequence."""

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        rows = args[0].reshape(-1, args[0].shape[-1])  # [..., in] -> [N, in]
        step = max(1, rows.shape[0] // _ROWS_PER_LAYER)
        inputs[name] = rows[::step][:_ROWS_PER_LAYER].clone()

    return hook


def _relative_error(quantized: nn.Module, exact: nn.Module, rows: torch.Tensor) -> float:
    """||quantized(x) - exact(x)|| / ||exact(x)|| (Frobenius, in float32)."""
    reference = exact(rows).float()
    return ((quantized(rows).float() - reference).norm() / reference.norm().clamp(min=1e-30)).item()
