"""Quantized layers that read the same input, multiplied as one: each member gets the product it had alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xvlm_core.bench.quality import compare_to_exact
from xvlm_core.engines.pytorch import fused
from xvlm_core.engines.pytorch.fused import FusedProduct, ProductPart, fused_groups, install, named_products
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.quantize import (
    DynamicInt8Linear,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    fbgemm_weight_levels,
    kernel_paths,
)
from xvlm_core.model.prompt import Message
from xvlm_core.testing import LanguageShape, write_checkpoint

CLASSES = [
    Int8Linear,
    pytest.param(DynamicInt8Linear, marks=pytest.mark.skipif(fbgemm_weight_levels() is None, reason="x86 only")),
    Int4Linear,
]


class Attention(nn.Module):
    """A module with q, k and v projections of one input, as transformers' attention has."""

    def __init__(self, width: int, widths: tuple[int, int, int], bias: bool, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        for name, out_features in zip(("q_proj", "k_proj", "v_proj"), widths, strict=True):
            linear = nn.Linear(width, out_features, bias=bias).requires_grad_(False)
            linear.weight.copy_(torch.randn(out_features, width, generator=generator) * 0.02)
            if bias:
                linear.bias.copy_(torch.randn(out_features, generator=generator) * 0.1)
            setattr(self, name, linear)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)


def quantized_pair(layer_class: type[QuantizedLinear], bias: bool = False) -> tuple[Attention, Attention]:
    """The same random attention projections quantized one by one, and fused."""
    separate, together = Attention(128, (128, 64, 64), bias), Attention(128, (128, 64, 64), bias)
    members = ["q_proj", "k_proj", "v_proj"]
    weight = torch.cat([together.get_submodule(name).weight for name in members])
    bias_rows = torch.cat([together.get_submodule(name).bias for name in members]) if bias else None
    install(together, "qkv_proj", members, layer_class.from_weight(weight, bias_rows, torch.float32))
    for name in members:
        separate.set_submodule(name, layer_class.from_linear(separate.get_submodule(name)))
    return separate, together


@pytest.mark.parametrize("layer_class", CLASSES)
@pytest.mark.parametrize("rows", [1, 40, 200])  # one decoded token; a prompt in the kernel; one through a float copy
def test_each_member_of_a_fused_layer_gives_the_product_it_gave_alone(layer_class, rows):
    separate, together = quantized_pair(layer_class, bias=layer_class is not Int4Linear)
    x = torch.randn(1, rows, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        for alone, part in zip(separate(x), together(x), strict=True):
            assert part.shape == alone.shape
            torch.testing.assert_close(part, alone, rtol=1e-5, atol=1e-6)


def test_the_fused_product_is_computed_once_for_all_members_and_then_let_go(monkeypatch):
    _, together = quantized_pair(Int8Linear)
    product = together.qkv_proj
    calls = []
    monkeypatch.setattr(product.layer, "forward", lambda x: calls.append(x) or torch.zeros(*x.shape[:-1], 256))
    x = torch.randn(3, 128)
    together(x)
    assert len(calls) == 1
    assert product._input is None and product._output is None  # no prompt-sized tensors held between calls
    together(x)
    assert len(calls) == 2  # the same tensor again: a new forward, computed anew


def test_a_member_called_on_another_input_gets_its_own_product():
    separate, together = quantized_pair(Int8Linear)
    first, second = torch.randn(2, 128), torch.randn(2, 128)
    with torch.inference_mode():
        together.q_proj(first)
        torch.testing.assert_close(together.k_proj(second), separate.k_proj(second))
        torch.testing.assert_close(together.q_proj(second), separate.q_proj(second))  # asked twice for one input
        torch.testing.assert_close(together.q_proj(second), separate.q_proj(second))


def test_members_keep_their_names_shapes_and_weights():
    separate, together = quantized_pair(Int8Linear)
    assert isinstance(together.qkv_proj, FusedProduct)
    assert [type(together.get_submodule(name)) for name in ("q_proj", "k_proj", "v_proj")] == [ProductPart] * 3
    assert (together.k_proj.in_features, together.k_proj.out_features) == (128, 64)
    torch.testing.assert_close(together.v_proj.dequantized(), separate.v_proj.dequantized())
    # Registered once, under the fused name; the members stand for the checkpoint's layers.
    assert [type(module) for module in together.modules()].count(Int8Linear) == 1
    assert sorted(named_products(together)) == ["k_proj", "q_proj", "v_proj"]


def test_only_groups_whose_members_are_all_quantized_are_fused():
    layer = "model.layers.3."
    names = [f"{layer}self_attn.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
    names += [f"{layer}mlp.{n}" for n in ("gate_proj", "up_proj", "down_proj")]
    assert fused_groups(names) == {
        f"{layer}self_attn.qkv_proj": names[:3],
        f"{layer}mlp.gate_up_proj": names[4:6],
    }
    assert fused_groups([name for name in names if not name.endswith("k_proj")]) == {
        f"{layer}mlp.gate_up_proj": names[4:6]
    }
    assert fused_groups(["lm_head"]) == {}


def test_an_8_bit_model_fuses_its_layers_and_answers_as_with_separate_ones(tiny_model_dir, tiny_tower_dir,
                                                                            images_dir, monkeypatch):
    together = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
    monkeypatch.setattr(fused, "FUSED_GROUPS", {})
    separate = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
    layer = together.model.language_model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, FusedProduct) and isinstance(layer.mlp.gate_up_proj, FusedProduct)
    tower_layer = together.model.vision_tower.clip.encoder.layers[0]
    assert isinstance(tower_layer.self_attn.qkv_proj, FusedProduct)  # CLIP's have biases: stacked too
    # The tiny model's 2 decoder layers: 4 products each where there were 7, and the output layer.
    assert kernel_paths(together.model.language_model).endswith("x9")
    assert kernel_paths(separate.model.language_model).endswith("x15")
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    result = compare_to_exact(together, separate, messages)
    assert result["quality_top1_agreement"] == 1.0 and result["quality_layers"] == 15
    assert result["quality_layer_error_max"] < 1e-5 and result["quality_mean_kl"] < 1e-6


def test_a_4_bit_model_fuses_its_layers_and_answers_as_with_separate_ones(tmp_path, tiny_model_dir, tiny_tower_dir,
                                                                          images_dir, monkeypatch):
    # Every projection of this shape fits the 4-bit kernel (the tiny fixture's k, v, gate and up do not).
    shape = LanguageShape(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
    model = str(write_checkpoint(tmp_path / "model", tiny_model_dir / "xmodel_32000.model", shape))
    together = load_model(model, vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int4")
    monkeypatch.setattr(fused, "FUSED_GROUPS", {})
    separate = load_model(model, vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int4")
    layer = together.model.language_model.model.layers[1]
    assert isinstance(layer.self_attn.qkv_proj.layer, Int4Linear) and isinstance(layer.mlp.gate_up_proj.layer,
                                                                                 Int4Linear)
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    result = compare_to_exact(together, separate, messages)
    assert result["quality_top1_agreement"] == 1.0 and result["quality_layers"] == 2 * 7 + 1
    assert result["quality_layer_error_max"] < 1e-5 and result["quality_mean_kl"] < 1e-6
