"""Float32 linear layers laid out for oneDNN: the same products as `F.linear`, on the layers meant for it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.onednn import OneDnnLinear, available, lay_out_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")


def random_linear(out_features: int, in_features: int, bias: bool, dtype: torch.dtype = torch.float32) -> nn.Linear:
    torch.manual_seed(out_features + in_features)
    return nn.Linear(in_features, out_features, bias=bias, dtype=dtype).requires_grad_(False)


@pytest.mark.parametrize("rows", [1, 7, 331])
@pytest.mark.parametrize("bias", [False, True])
def test_products_equal_f_linear_within_float32_rounding(rows, bias):
    linear = random_linear(176, 64, bias)
    x = torch.randn(2, rows, 64)
    expected = F.linear(x, linear.weight, linear.bias)  # [2, rows, 176]
    with torch.inference_mode():
        got = OneDnnLinear(linear)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_only_float32_layers_on_the_cpu_are_laid_out():
    network = nn.Sequential(random_linear(8, 16, False), random_linear(16, 8, True),
                            random_linear(16, 16, False, torch.bfloat16))
    with torch.device("meta"):
        network.append(nn.Linear(16, 16))  # weightless: another engine runs it
    assert lay_out_linears(network) == 2
    assert [type(layer) for layer in network] == [OneDnnLinear, OneDnnLinear, nn.Linear, nn.Linear]
    assert network[0].kernel_path() == "float32: oneDNN, laid out for 1 row"
    assert not available(torch.device("cpu"), torch.bfloat16)


def test_a_float32_model_on_the_cpu_loads_with_the_language_models_layers_laid_out(tiny_model_dir, tiny_tower_dir):
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    language, tower = loaded.model.language_model, loaded.model.vision_tower
    assert not any(isinstance(layer, nn.Linear) for layer in language.modules())
    assert sum(isinstance(layer, OneDnnLinear) for layer in language.modules()) == 7 * 2 + 1  # 2 layers, lm_head
    # The tower's 577 rows a call gain nothing from it.
    assert not any(isinstance(layer, OneDnnLinear) for layer in [*tower.modules(), *loaded.model.projector.modules()])
    # Code that asks a module for its first parameter still finds the weights' dtype.
    assert next(language.parameters()).dtype == torch.float32


def test_a_bfloat16_model_keeps_f_linear(tiny_model_dir, tiny_tower_dir):
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="bfloat16")
    assert not any(isinstance(layer, OneDnnLinear) for layer in loaded.model.modules())
