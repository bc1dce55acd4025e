"""8- and 4-bit weights: each kernel against its dequantized reference, the error per layer, and whole answers."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from torch import nn

from xvlm_core.engines.pytorch.fused import ProductPart, named_products
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.onednn import OneDnnLinear
from xvlm_core.engines.pytorch.quantize import (
    DynamicInt8Linear,
    Int4Linear,
    Int8Linear,
    QuantizedLinear,
    quantizable_linears,
    quantize_weight,
    quantize_weight_int4,
    unpack_int4,
    weight_bytes,
)
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import XvlmError
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings

# An exact layer: as loaded on a CPU in float32, its weights are laid out for oneDNN.
EXACT = (nn.Linear, OneDnnLinear)
# An 8-bit layer: on an x86 CPU its rows are quantized too, for FBGEMM.
INT8 = (Int8Linear, DynamicInt8Linear)


def quantized_layer(product: nn.Module) -> nn.Module:
    """The layer that multiplies for `product`: itself, or the fused layer it is a part of."""
    return product.product.layer if isinstance(product, ProductPart) else product


def random_linear(out_features: int, in_features: int, dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    generator = torch.Generator().manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=False, dtype=dtype).requires_grad_(False)
    linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.02)
    return linear


@pytest.mark.parametrize(("out_features", "in_features"), [(32, 64), (33, 176), (256, 2048), (64, 5632)])
@pytest.mark.parametrize("rows", [1, 7, 40, 129])  # 129: a prompt's rows take the dequantized float path
def test_kernel_equals_the_dequantized_weights_in_float32(out_features, in_features, rows):
    layer = Int8Linear.from_linear(random_linear(out_features, in_features, torch.float32))
    x = torch.randn(1, rows, in_features, generator=torch.Generator().manual_seed(1))
    got = layer(x)
    assert got.dtype == torch.float32
    if rows > layer.rows_in_kernel(torch.float32):
        # The float copy: the same products and sums as what the int8 weights and scales stand for.
        torch.testing.assert_close(got, x @ layer.dequantized().T, rtol=1e-5, atol=1e-5)
    else:
        # The kernel's fast path takes bfloat16 rows and scales, and rounds its result to bfloat16 once.
        as_bf16 = layer.weight.float() * layer.scales.to(torch.bfloat16).float()[:, None]
        reference = x.to(torch.bfloat16).float() @ as_bf16.T
        torch.testing.assert_close(got, reference, rtol=2**-8, atol=1e-3 * reference.abs().max().item())


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
    products = named_products(language)
    assert len(products) == 7 * layers + 1  # + lm_head
    assert all(isinstance(quantized_layer(product), INT8) for product in products.values())
    assert not any(isinstance(module, EXACT) for module in [*language.modules(), *tower.modules()])
    assert len(named_products(tower)) == 6 * tower.kept_layers
    assert all(isinstance(quantized_layer(product), INT8) for product in named_products(tower).values())
    assert not any(isinstance(module, INT8) for module in int8.model.projector.modules())
    assert int8.summary()["quantize"] == "int8" and exact.summary()["quantize"] == "none"
    linear_bytes = sum(weight_bytes(m) for m in exact.model.language_model.modules() if isinstance(m, EXACT))
    int8_bytes = sum(weight_bytes(m) for m in language.modules() if isinstance(m, INT8))
    assert int8_bytes < 0.3 * linear_bytes  # float32 -> int8, plus one scale per row


def test_image_features_with_8_bit_weights_stay_close_to_the_exact_ones(exact_and_int8, images_dir):
    from xvlm_core.model.images import load_image

    exact, int8 = exact_and_int8
    pixels = exact.preprocess(load_image(images_dir / "gradient_square.png"))
    reference, features = exact.model.encode_images(pixels), int8.model.encode_images(pixels)
    assert torch.isfinite(features).all()
    assert (features - reference).norm() / reference.norm() < 0.02


def test_each_quantized_layer_of_the_tiny_model_is_within_its_bound(exact_and_int8):
    """Within 1 % with float rows; with 8-bit rows, 2.5 % (7-bit weights where FBGEMM's products would saturate)."""
    exact, int8 = exact_and_int8
    exact_layers = dict(exact.model.language_model.named_modules())
    checked = 0
    for name, module in named_products(int8.model.language_model).items():
        x = torch.randn(4, module.in_features, generator=torch.Generator().manual_seed(5))
        with torch.inference_mode():
            reference = exact_layers[name](x)
            error = (module(x) - reference).norm() / reference.norm()
        assert error < (0.025 if isinstance(quantized_layer(module), DynamicInt8Linear) else 0.01), name
        checked += 1
    assert checked == 7 * int8.model.language_model.config.num_hidden_layers + 1


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
    assert list(quantizable_linears(model, "int8", torch.device("cpu"))) == ["0"]


def test_unknown_weight_precision_is_a_clear_error(tiny_model_dir):
    with pytest.raises(XvlmError, match="'int3' is not a weight precision"):
        load_model(str(tiny_model_dir), quantize="int3")


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


def gaussian_linear(out_features: int, in_features: int, dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    linear = random_linear(out_features, in_features, dtype, seed)
    linear.bias = nn.Parameter(torch.randn(out_features, generator=torch.Generator().manual_seed(seed)).to(dtype))
    return linear.requires_grad_(False)


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 64), (256, 2048), (2048, 5632), (5632, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 100])  # 100: a prompt's rows take the dequantized float path
def test_int4_product_is_within_a_tenth_of_the_exact_one(out_features, in_features, dtype, rows):
    exact = gaussian_linear(out_features, in_features, dtype, seed=6)
    quantized = Int4Linear.from_linear(exact)
    x = torch.randn(rows, in_features, generator=torch.Generator().manual_seed(7)).to(dtype)
    reference = x.float() @ exact.weight.float().T + exact.bias.float()
    error = (quantized(x).float() - reference).norm() / reference.norm()
    assert error < 0.1


@pytest.mark.parametrize(("out_features", "in_features"), [(64, 32), (128, 96), (192, 2048)])
@pytest.mark.parametrize("rows", [1, 7, 64, 65, 200])
def test_int4_kernel_and_float_path_equal_the_dequantized_weights_in_float32(out_features, in_features, rows):
    layer = Int4Linear.from_linear(random_linear(out_features, in_features, torch.float32, seed=8))
    x = torch.randn(2, rows, in_features, generator=torch.Generator().manual_seed(9))
    got = layer(x)
    assert got.dtype == torch.float32 and layer.to(torch.float32).scales_and_zeros.dtype == torch.bfloat16
    if 2 * rows > layer.rows_in_kernel(torch.float32):  # both of x's sequences go through at once
        reference = x @ layer.dequantized().T  # what the 4-bit levels, scales and zeros stand for
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-4)
    else:  # the kernel's fast path: bfloat16 rows, its result rounded to bfloat16 once
        reference = x.to(torch.bfloat16).float() @ layer.dequantized().T
        torch.testing.assert_close(got, reference, rtol=2**-8, atol=2e-3 * reference.abs().max().item())


def test_int4_levels_span_each_group_and_read_back_from_the_kernels_layout():
    weight = torch.randn(128, 64, generator=torch.Generator().manual_seed(10))
    packed, scales_and_zeros = quantize_weight_int4(weight)
    assert packed.shape == (128, 32) and packed.dtype == torch.uint8
    assert scales_and_zeros.shape == (2, 128, 2)  # [groups, out, (scale, zero)]
    levels = torch.empty(128, 64, dtype=torch.uint8)
    unpack_int4(packed, levels)
    grouped = levels.view(128, 2, 32)
    # Each group's smallest weight is level 0 and its largest level 15, and every weight is its level's
    # value to within half a step: the levels were read back in the order they were packed.
    assert (grouped.amin(-1) == 0).all() and (grouped.amax(-1) == 15).all()
    scale, zero = scales_and_zeros.unbind(-1)  # [groups, out] each
    step, low = scale.T[..., None], (zero - 8 * scale).T[..., None]
    assert ((grouped * step + low - weight.view(128, 2, 32)).abs() <= step / 2 + 1e-6).all()


def test_int4_takes_only_shapes_its_kernel_can():
    model = nn.Sequential(
        random_linear(64, 64, torch.float32),  # fits
        random_linear(32, 64, torch.float32),  # 32 output rows: less than one of the kernel's blocks
        random_linear(64, 48, torch.float32),  # 48 inputs: not whole groups of 32
        random_linear(128, 96, torch.float32),  # fits
    )
    assert list(quantizable_linears(model, "int4", torch.device("cpu"))) == ["0", "3"]


@pytest.fixture(scope="module")
def int4(tiny_model_dir, tiny_tower_dir):
    return load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32", quantize="int4")


def test_int4_converts_the_layers_that_fit_and_leaves_the_rest_exact(exact_and_int8, int4):
    exact, _ = exact_and_int8
    language = int4.model.language_model
    # The tiny model: q and o projections 64x64 fit; k and v (32 rows), gate and up (176 rows) and down
    # (176 inputs) do not, and stay exact. The output layer keeps 8 bits.
    converted = {name.split(".")[-1] for name, m in language.named_modules() if isinstance(m, Int4Linear)}
    kept = {name.split(".")[-1] for name, m in language.named_modules() if isinstance(m, EXACT)}
    assert converted == {"q_proj", "o_proj"}
    assert kept == {"k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"}
    assert isinstance(language.lm_head, INT8)
    # The tower holds 8-bit weights; the projector stays exact.
    tower = int4.model.vision_tower
    assert len(named_products(tower)) == 6 * tower.kept_layers
    assert not any(isinstance(m, QuantizedLinear) for m in int4.model.projector.modules())
    assert int4.summary()["quantize"] == "int4"
    exact_query = weight_bytes(exact.model.language_model.model.layers[0].self_attn.q_proj)
    # float32 -> half a byte, plus two bfloat16s (the kernel's activations) per 32 weights
    assert weight_bytes(language.model.layers[0].self_attn.q_proj) == 0.15625 * exact_query


@pytest.mark.parametrize("decode_mode", ["lean", "fixed"])
def test_int4_answers_on_the_tiny_model_are_sensible(int4, images_dir, decode_mode):
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    answer = ChatSession(int4, decode_mode=decode_mode).answer(messages, SamplingSettings(max_new_tokens=24))
    deltas = list(answer)
    result = answer.result
    assert len(result.output_ids) == 24 and all(0 <= token < 32000 for token in result.output_ids)
    assert result.text.strip() and "".join(deltas) == result.text


def test_int4_tiny_model_layers_are_within_a_tenth_of_exact(exact_and_int8, int4):
    exact, _ = exact_and_int8
    exact_layers = dict(exact.model.language_model.named_modules())
    checked = 0
    for name, module in int4.model.language_model.named_modules():
        if isinstance(module, Int4Linear):
            x = torch.randn(4, module.in_features, generator=torch.Generator().manual_seed(11))
            with torch.inference_mode():
                reference = exact_layers[name](x)
                error = (module(x) - reference).norm() / reference.norm()
            assert error < 0.1, name
            checked += 1
    assert checked == 2 * 2


def test_ask_with_4_bit_weights_answers(capsys, tiny_model_dir, tiny_tower_dir):
    from xvlm_core.cli import main

    args = ["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--quantize", "int4"]
    assert main([*args, "--max-new-tokens", "6", "--json", "Hello"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["output_ids"]) == 6 and result["text"]


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_prompt_rows_work_outside_inference_mode_after_a_call_inside_it(kind):
    layer = kind.from_linear(random_linear(128, 2048, torch.float32, seed=12))
    x = torch.randn(100, 2048, generator=torch.Generator().manual_seed(13))  # prompt rows: the reused float copy
    results: list[torch.Tensor | BaseException] = []

    def calls() -> None:  # on a new thread, whose reused buffers are made by this first call
        try:
            with torch.inference_mode():
                inside = layer(x).clone()
            results.extend([inside, layer(x)])
        except RuntimeError as exc:
            results.append(exc)

    thread = threading.Thread(target=calls)
    thread.start()
    thread.join(timeout=30)
    assert len(results) == 2, results
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("kind", [Int8Linear, Int4Linear])
def test_a_float32_models_rows_reach_the_packed_kernel_in_bfloat16_up_to_128(monkeypatch, kind):
    """With float32 rows the kernels take a path ten times slower (AVX2); a float32 model's float copy costs more than
    the kernel up to about 128 rows."""
    layer = kind.from_linear(random_linear(64, 64, torch.float32)).to(torch.float32)
    name = "_weight_int8pack_mm" if kind is Int8Linear else "_weight_int4pack_mm_for_cpu"
    kernel = getattr(torch, name)
    seen: list[tuple[int, torch.dtype]] = []

    def recording(rows, *args):
        seen.append((rows.shape[0], rows.dtype))
        return kernel(rows, *args)

    monkeypatch.setattr(torch, name, recording)
    for rows in (1, 128, 129):
        assert layer(torch.randn(rows, 64)).dtype == torch.float32
    assert seen == [(1, torch.bfloat16), (128, torch.bfloat16)]
