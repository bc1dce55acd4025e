"""8-bit weights: the int8 kernel against its dequantized reference, the error per layer, and whole answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xvlm_core.errors import XvlmError
from xvlm_core.model import load_model
from xvlm_core.prompt import Message
from xvlm_core.quantize import Int8Linear, quantizable_linears, quantize_weight, weight_bytes
from xvlm_core.sampling import SamplingSettings
from xvlm_core.session import ChatSession


def random_linear(out_features: int, in_features: int, dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=False, dtype=dtype).requires_grad_(False)
    linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.02)
    return linear


@pytest.mark.parametrize(("out_features", "in_features"), [(32, 64), (33, 176), (256, 2048), (64, 5632)])
@pytest.mark.parametrize("rows", [1, 7, 40])  # 40: a prompt's rows take the dequantized float path
def test_kernel_equals_the_dequantized_weights_in_float32(out_features, in_features, rows):
    layer = Int8Linear.from_linear(random_linear(out_features, in_features, torch.float32))
    x = torch.randn(1, rows, in_features, generator=torch.Generator().manual_seed(1))
    reference = x @ layer.dequantized().T  # what the int8 weights and scales stand for
    # The same products and sums; only their order differs from the reference's.
    torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("out_features", "in_features"), [(32, 64), (33, 176), (2048, 5632)])
def test_kernel_in_bfloat16_is_the_reference_rounded_once(out_features, in_features):
    layer = Int8Linear.from_linear(random_linear(out_features, in_features, torch.bfloat16))
    x = torch.randn(1, in_features, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    reference = x.float() @ layer.dequantized().T
    got = layer(x).float()
    # One bf16 rounding of the result (8 bits of mantissa), plus float32 summation order.
    torch.testing.assert_close(got, reference, rtol=2**-8, atol=1e-3 * reference.abs().max().item())


def test_quantized_weights_use_the_whole_int8_range_per_output_channel():
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.02, 0.01, -0.04]])
    q, scales = quantize_weight(weight)
    assert q.dtype == torch.int8
    assert q.abs().amax(dim=1).tolist() == [127, 127]
    torch.testing.assert_close(scales, torch.tensor([1.0 / 127, 0.04 / 127]))


@pytest.mark.parametrize(("out_features", "in_features"), [(2048, 2048), (5632, 2048), (2048, 5632), (256, 2048)])
def test_relative_error_per_layer_is_below_one_percent(out_features, in_features):
    exact = random_linear(out_features, in_features, torch.bfloat16, seed=3)
    quantized = Int8Linear.from_linear(exact)
    x = torch.randn(8, in_features, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    reference = x.float() @ exact.weight.float().T
    error = (quantized(x).float() - reference).norm() / reference.norm()
    assert error < 0.01


@pytest.fixture(scope="module")
def exact_and_int8(tiny_model_dir, tiny_tower_dir):
    exact = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    int8 = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
    return exact, int8


def test_every_linear_of_the_language_model_and_tower_is_int8_and_the_projector_stays_exact(exact_and_int8):
    exact, int8 = exact_and_int8
    language, tower = int8.model.language_model, int8.model.vision_tower
    layers = language.config.num_hidden_layers
    assert sum(isinstance(module, Int8Linear) for module in language.modules()) == 7 * layers + 1  # + lm_head
    assert not any(isinstance(module, nn.Linear) for module in [*language.modules(), *tower.modules()])
    assert sum(isinstance(module, Int8Linear) for module in tower.modules()) == 6 * tower.kept_layers
    assert not any(isinstance(module, Int8Linear) for module in int8.model.projector.modules())
    assert int8.summary()["quantize"] == "int8" and exact.summary()["quantize"] == "none"
    linear_bytes = sum(weight_bytes(m) for m in exact.model.language_model.modules() if isinstance(m, nn.Linear))
    int8_bytes = sum(weight_bytes(m) for m in language.modules() if isinstance(m, Int8Linear))
    assert int8_bytes < 0.3 * linear_bytes  # float32 -> int8, plus one scale per row


def test_image_features_with_8_bit_weights_stay_close_to_the_exact_ones(exact_and_int8, images_dir):
    from xvlm_core.images import load_image

    exact, int8 = exact_and_int8
    pixels = exact.preprocess(load_image(images_dir / "gradient_square.png"))
    reference, features = exact.model.encode_images(pixels), int8.model.encode_images(pixels)
    assert torch.isfinite(features).all()
    assert (features - reference).norm() / reference.norm() < 0.02


def test_each_quantized_layer_of_the_tiny_model_is_within_one_percent(exact_and_int8):
    exact, int8 = exact_and_int8
    exact_layers = dict(exact.model.language_model.named_modules())
    for name, module in int8.model.language_model.named_modules():
        if isinstance(module, Int8Linear):
            x = torch.randn(4, module.in_features, generator=torch.Generator().manual_seed(5))
            with torch.inference_mode():
                reference = exact_layers[name](x)
                error = (module(x) - reference).norm() / reference.norm()
            assert error < 0.01, name


@pytest.mark.parametrize("decode_mode", ["lean", "fixed"])
def test_int8_answers_on_the_tiny_model_are_sensible(exact_and_int8, images_dir, decode_mode):
    _exact, int8 = exact_and_int8
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    answer = ChatSession(int8, decode_mode=decode_mode).answer(messages, SamplingSettings(max_new_tokens=24))
    deltas = list(answer)
    result = answer.result
    assert result.output_ids and all(0 <= token < 32000 for token in result.output_ids)
    assert result.text.strip() and "".join(deltas) == result.text
    with torch.inference_mode():
        logits = int8.model.language_model(input_ids=torch.tensor([result.input_ids[:5]])).logits
    assert torch.isfinite(logits).all()


def test_layers_the_kernel_cannot_take_stay_exact():
    model = nn.Sequential(random_linear(32, 64, torch.float32), random_linear(32, 72, torch.float32))
    assert list(quantizable_linears(model)) == ["0"]


def test_unknown_weight_precision_is_a_clear_error(tiny_model_dir):
    with pytest.raises(XvlmError, match="'int4' is not a weight precision"):
        load_model(str(tiny_model_dir), quantize="int4")


def test_int8_loads_from_bin_and_from_shards_alike(tmp_path, tiny_model_bin_dir, tiny_model_dir, tiny_tower_dir):
    from safetensors.torch import load_file

    from xvlm_core.testing import write_weights

    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.suffix != ".safetensors":
            (sharded / item.name).write_bytes(item.read_bytes())
    write_weights(sharded, load_file(tiny_model_dir / "model.safetensors"), shards=3)
    answers = []
    for folder in (tiny_model_dir, tiny_model_bin_dir, sharded):
        loaded = load_model(str(folder), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int8")
        answer = ChatSession(loaded).answer([Message("user", "Hello")], SamplingSettings(max_new_tokens=8))
        list(answer)
        answers.append(answer.result.output_ids)
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize(("change", "words"), [("drop", "'model.layers.1.mlp.up_proj.weight' is missing"),
                                               ("reshape", "'model.layers.1.mlp.up_proj.weight' has shape")])
def test_int8_names_a_missing_or_misshapen_linear_weight(tmp_path, tiny_model_dir, tiny_tower_dir, change, words):
    from safetensors.torch import load_file

    from xvlm_core.errors import CheckpointError
    from xvlm_core.testing import write_weights

    folder = tmp_path / "model"
    folder.mkdir()
    for item in tiny_model_dir.iterdir():
        if item.suffix != ".safetensors":
            (folder / item.name).write_bytes(item.read_bytes())
    state = load_file(tiny_model_dir / "model.safetensors")
    key = "model.layers.1.mlp.up_proj.weight"
    if change == "drop":
        del state[key]
    else:
        state[key] = state[key][:, :32].contiguous()
    write_weights(folder, state)
    with pytest.raises(CheckpointError, match=words):
        load_model(str(folder), vision_tower=str(tiny_tower_dir), quantize="int8")
