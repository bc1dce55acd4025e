"""8-bit rows for FBGEMM: products against the dequantized weights, each row's own steps, the rotation, the
saturation the weights' levels avoid, and where the loader uses these layers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from xvlm_core.engines.pytorch import quantize
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.quantize import (
    DynamicInt8Linear,
    Int4Linear,
    Int8Linear,
    fbgemm_weight_levels,
    hadamard,
    kernel_paths,
    quantize_weight,
    quantized_linear,
    rotated,
    weight_bytes,
)

pytestmark = pytest.mark.skipif(fbgemm_weight_levels() is None, reason="FBGEMM runs on x86 processors only")
CPU = torch.device("cpu")


def random_linear(out_features: int, in_features: int, seed: int = 0) -> nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features).requires_grad_(False)
    linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.02)
    linear.bias.copy_(torch.randn(out_features, generator=generator) * 0.1)
    return linear


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    return ((got - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 64), (256, 2048), (96, 5632)])
@pytest.mark.parametrize("rows", [1, 7, 331])
def test_each_row_keeps_its_own_steps_next_to_a_loud_one(out_features, in_features, rows):
    layer = DynamicInt8Linear.from_linear(random_linear(out_features, in_features))
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(1))
    x[0] *= 100  # with one step for the whole call, the other rows would round to a few levels
    reference = x @ layer.dequantized().T + layer.bias
    got = layer(x)
    per_row = (got - reference).norm(dim=1) / (reference - layer.bias).norm(dim=1)
    assert per_row.max() < 0.02


def test_the_rotation_spreads_loud_channels():
    linear = random_linear(512, 2048, seed=2)
    x = torch.randn(16, 2048, generator=torch.Generator().manual_seed(3))
    x[:, torch.randperm(2048, generator=torch.Generator().manual_seed(4))[:8]] *= 50
    reference = linear(x)
    levels = fbgemm_weight_levels()
    unrotated = DynamicInt8Linear(*quantize_weight(linear.weight, levels), linear.bias, hadamard(1))
    with_rotation = DynamicInt8Linear.from_linear(linear)
    assert relative_error(with_rotation(x), reference) < 0.035
    assert relative_error(with_rotation(x), reference) < relative_error(unrotated(x), reference) / 2


def test_the_dequantized_weights_are_the_levels_rotated_back():
    linear = random_linear(128, 256, seed=5)
    layer = DynamicInt8Linear.from_linear(linear)
    rotation = hadamard(quantize.rotation_block(256))
    levels, scales = quantize_weight(linear.weight, fbgemm_weight_levels(), rotation)
    torch.testing.assert_close(layer.dequantized(), rotated(levels.float() * scales[:, None], rotation))
    assert relative_error(layer.dequantized(), linear.weight) < 0.025  # 7 bits at worst: steps of 1/63
    assert torch.equal(rotation @ rotation, torch.eye(rotation.shape[0]))  # its own inverse


def test_rows_at_the_top_of_the_range_against_the_largest_weights_do_not_saturate():
    """Without VNNI, x86 adds pairs of u8 x s8 products in int16: 255 * 127 * 2 overflows it."""
    linear = nn.Linear(256, 32, bias=False).requires_grad_(False)
    linear.weight.fill_(0.5)
    layer = DynamicInt8Linear(*quantize_weight(linear.weight, fbgemm_weight_levels()), None, hadamard(1))
    x = torch.ones(3, 256)
    x[1] = -1
    x[2, ::3] = -1
    assert relative_error(layer(x), linear(x)) < 1e-2


def test_any_float_rows_come_back_in_their_dtype_and_casting_the_model_leaves_the_layer_in_float32():
    layer = DynamicInt8Linear.from_linear(random_linear(64, 128, seed=6))
    x = torch.randn(3, 2, 128, generator=torch.Generator().manual_seed(7))  # any leading shape
    float32 = layer(x)
    nn.Sequential(layer).to(torch.bfloat16)
    assert layer.scales.dtype == layer.bias.dtype == torch.float32
    got = layer(x.to(torch.bfloat16))
    assert got.dtype == torch.bfloat16 and got.shape == (3, 2, 64)
    assert relative_error(got.float(), float32) < 0.02  # bf16 rows in, one bf16 rounding out
    with torch.inference_mode():
        torch.testing.assert_close(layer(x), float32)


def test_8_bit_layers_on_the_cpu_go_to_fbgemm_and_elsewhere_or_without_it_to_int8linear(monkeypatch):
    assert quantized_linear("model.layers.0.mlp.up_proj", "int8", CPU) is DynamicInt8Linear
    assert quantized_linear("lm_head", "int4", CPU) is DynamicInt8Linear  # 4-bit models keep an 8-bit head
    assert quantized_linear("model.layers.0.mlp.up_proj", "int4", CPU) is Int4Linear
    assert quantized_linear("model.layers.0.mlp.up_proj", "int8", torch.device("cuda")) is Int8Linear
    monkeypatch.setattr(quantize, "fbgemm_weight_levels", lambda: None)  # a PyTorch without these functions
    assert quantized_linear("model.layers.0.mlp.up_proj", "int8", CPU) is Int8Linear


def test_a_model_loaded_on_the_cpu_in_8_bits_has_fbgemm_layers_in_the_language_model_and_tower(
    tiny_model_dir, tiny_tower_dir, monkeypatch
):
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
    network = loaded.model
    layers = [m for m in network.modules() if isinstance(m, (Int8Linear, DynamicInt8Linear))]
    assert layers and all(isinstance(m, DynamicInt8Linear) for m in layers)
    assert {isinstance(m, DynamicInt8Linear) for m in network.vision_tower.modules()} == {True, False}
    assert kernel_paths(network.language_model) == f"int8 weights (±{fbgemm_weight_levels()}) × int8 rows: FBGEMM x9"

    monkeypatch.setattr(quantize, "fbgemm_weight_levels", lambda: None)
    fallback = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
    assert not any(isinstance(m, DynamicInt8Linear) for m in fallback.model.modules())


def test_the_packed_weights_count_a_byte_each():
    layer = DynamicInt8Linear.from_linear(random_linear(96, 256, seed=8))
    # the weights, then a scale, a bias and a column sum per output (float32, float32, int32)
    assert weight_bytes(layer) == 96 * 256 + 3 * 4 * 96


def test_fbgemms_deprecation_is_not_shown_even_where_warnings_are_errors():
    script = (
        "import torch\n"
        "from xvlm_core.engines.pytorch.quantize import DynamicInt8Linear\n"
        "layer = DynamicInt8Linear.from_linear(torch.nn.Linear(64, 32))\n"
        "layer(torch.randn(2, 64))\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
