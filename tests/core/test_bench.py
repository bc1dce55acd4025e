"""`xvlm bench`'s measurements beyond speed: how far quantized weights move the model from the exact one."""

from __future__ import annotations

import json
import os

import pytest
import torch

from xvlm_core.bench.local import plain_process_baseline
from xvlm_core.bench.quality import compare_to_exact
from xvlm_core.cli import main
from xvlm_core.engines.pytorch.device import processor
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.quantize import fbgemm_weight_levels
from xvlm_core.errors import XvlmError
from xvlm_core.model.prompt import Message


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_bench_reports_how_far_quantized_weights_move_the_model(capsys, tiny_model_dir, tiny_tower_dir, quantize):
    args = ["bench", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    args += ["--engine", "pytorch"]  # the per-layer errors are of PyTorch's quantized layers
    assert main([*args, "--turns", "1", "--new-tokens", "2", "--quantize", quantize, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quantize"] == quantize
    # The first turn's prompt: the image's 144 positions and the question, a few hundred in all.
    assert result["quality_positions"] == result["prompt_tokens"] > 200
    assert 0.5 < result["quality_top1_agreement"] <= 1
    # The tiny model's next-token distributions are sharp (entropy ~0.04 nats): small changes to its
    # products move them far, 4 bits (KL ~4.3) much more than 8 (~0.13 with float rows; ~0.45 with FBGEMM's
    # 8-bit rows and, on a processor without VNNI, 7-bit weights).
    assert 0 < result["quality_mean_kl"] < {"int8": 1, "int4": 10}[quantize]
    # int8: all 7 linear layers of each of the 2 decoder layers and lm_head; int4: the q and o projections,
    # and lm_head in 8 bits.
    assert result["quality_layers"] == {"int8": 2 * 7 + 1, "int4": 2 * 2 + 1}[quantize]
    bound = {"int8": 0.025, "int4": 0.1}[quantize]
    assert 0 < result["quality_layer_error_mean"] <= result["quality_layer_error_max"] < bound
    assert result["quality_layer_error_worst"].startswith(("model.layers.", "lm_head"))


def test_exact_weights_compared_with_themselves_agree_everywhere(tiny_model_dir, tiny_tower_dir, images_dir):
    exact = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    result = compare_to_exact(exact, exact, messages)
    assert result["quality_top1_agreement"] == 1.0
    assert abs(result["quality_mean_kl"]) < 1e-6
    assert result["quality_layers"] == 0 and result["quality_positions"] > 144


def test_bench_of_exact_weights_has_no_quality_fields(capsys, tiny_model_dir, tiny_tower_dir):
    args = ["bench", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    assert main([*args, "--turns", "1", "--new-tokens", "2", "--json"]) == 0
    assert not any(key.startswith("quality_") for key in json.loads(capsys.readouterr().out))


def test_bench_names_the_processor_the_kernels_and_a_baseline_from_another_process(capsys, tiny_model_dir,
                                                                                    tiny_tower_dir):
    args = ["bench", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    assert main([*args, "--turns", "2", "--new-tokens", "3", "--quantize", "int4", "--engine", "pytorch", "--baseline",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["processor"] and isinstance(result["processor_flags"], str)
    # The tiny model: 2 q and 2 o projections in 4 bits, lm_head in 8, the other 10 layers exact.
    kernels = result["kernels"].split("; ")
    assert any(k.startswith("int4: _weight_int4pack_mm_for_cpu, group 32") and k.endswith(" x4") for k in kernels)
    int8 = "int8 weights" if fbgemm_weight_levels() is not None else "int8: _weight_int8pack_mm"  # x86: FBGEMM
    assert any(k.startswith(int8) and k.endswith(" x1") for k in kernels)
    exact = "float32: oneDNN, laid out for 1 row" if torch.backends.mkldnn.is_available() else "float32: F.linear"
    assert f"{exact} x10" in kernels
    assert result["baseline_pid"] != os.getpid()
    assert result["baseline_decode_tok_s"] > 0 and result["baseline_turn2_ttft_s"] > 0
    assert 0 < result["baseline_image_encode_s"] < result["baseline_ttft_s"]  # the image is part of turn 1's wait
    assert result["ttft_image_read_ahead_s"] > 0  # turn 1 again, its image read before the question
    assert result["baseline_weights_read_per_token_gb"] > result["weights_read_per_token_gb"]


def test_processor_reads_the_model_name_and_the_instruction_sets_that_matter(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 "
                       "avx512_vnni\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu\n")
    found = processor(cpuinfo)
    assert found == {"processor": "AMD EPYC 9R14", "processor_flags": "avx2 avx512f avx512_bf16 avx512_vnni"}
    elsewhere = processor(tmp_path / "missing")  # macOS, Windows: what the platform module says
    assert elsewhere["processor"] and elsewhere["processor_flags"] == ""


def test_a_baseline_that_cannot_run_is_a_clear_error(tmp_path):
    with pytest.raises(XvlmError, match="plain transformers baseline could not run: .*nothing") as raised:
        plain_process_baseline(str(tmp_path / "nothing"), None, "cpu", "float32", 1, 2, 1)
    assert "Traceback" not in str(raised.value) and "Error:" not in str(raised.value)  # the child's own sentence
