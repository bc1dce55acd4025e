"""The authors' outputs, reproduced id for id (float32, CPU), through the API and through `xvlm ask --json`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xvlm_core.cli import main
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings

CASES = ["single_square", "multi_turn_square", "text_only", "chinese_wide"]


def conversation(case: dict, images_dir: Path) -> list[Message]:
    messages = []
    for index, (question, answer) in enumerate(case["turns"]):
        images = [str(images_dir / case["images"][0])] if index == 0 and case["images"] else []
        messages.append(Message("user", question, images))
        if answer is not None:
            messages.append(Message("assistant", answer))
    return messages


@pytest.fixture(scope="module", params=["xmodel-vlm-tiny", "xmodel-vlm-tiny-bin"])
def loaded(request, fixtures_dir, tiny_tower_dir):
    return load_model(str(fixtures_dir / request.param), vision_tower=str(tiny_tower_dir), dtype="float32")


@pytest.mark.parametrize("name", CASES)
def test_golden_case_matches_original_ids(loaded, golden, images_dir, name):
    case = golden["cases"][name]
    answer = ChatSession(loaded).answer(
        conversation(case, images_dir), SamplingSettings(max_new_tokens=case["max_new_tokens"])
    )
    deltas = list(answer)
    result = answer.result
    assert result.prompt == case["prompt"]
    assert result.input_ids == case["input_ids"]
    assert result.output_ids == case["output_ids"]
    assert result.text == case["text"]
    assert "".join(deltas) == result.text


def test_first_logits_rank_like_original(loaded, golden, images_dir):
    import torch

    from xvlm_core.model.images import load_image

    case = golden["cases"]["single_square"]
    pixels = loaded.preprocess(load_image(images_dir / case["images"][0]))
    assert list(pixels.shape) == case["image_tensor_shape"]
    image = loaded.model.encode_images(pixels)[0]
    assert image.shape[0] == case["visual_tokens"]
    with torch.inference_mode():
        embeds = loaded.model.embed(case["input_ids"], [image])
        logits = loaded.model.language_model(inputs_embeds=embeds, logits_to_keep=1).logits[0, -1]
    assert logits.topk(5).indices.tolist() == case["first_top5_ids"]


@pytest.mark.parametrize("name", ["single_square", "multi_turn_square", "chinese_wide"])
def test_ask_json_matches_original(golden, tiny_model_dir, tiny_tower_dir, images_dir, tmp_path, capsys, name):
    case = golden["cases"][name]
    args = [
        "ask",
        "--model",
        str(tiny_model_dir),
        "--vision-tower",
        str(tiny_tower_dir),
        "--dtype",
        "float32",
        "--max-new-tokens",
        str(case["max_new_tokens"]),
        "--json",
    ]
    *earlier, (question, _) = case["turns"]
    if earlier:
        history = tmp_path / "conversation.json"
        turns = []
        for index, (q, a) in enumerate(earlier):
            turns.append(
                {"role": "user", "content": q, "images": [str(images_dir / case["images"][0])] if index == 0 else []}
            )
            turns.append({"role": "assistant", "content": a})
        history.write_text(json.dumps(turns, ensure_ascii=False), encoding="utf-8")
        args += ["--conversation", str(history)]
    else:
        args += ["--image", str(images_dir / case["images"][0])]
    assert main([*args, question]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["prompt"] == case["prompt"]
    assert result["input_ids"] == case["input_ids"]
    assert result["output_ids"] == case["output_ids"]
    assert result["text"] == case["text"]
    assert {"ttft_s", "prefill_s", "image_encode_s", "decode_tok_s", "output_tokens"} <= set(result["stats"])


def test_installed_command_answers_text_only(golden, tiny_model_bin_dir, tiny_tower_dir):
    case = golden["cases"]["text_only"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xvlm_core",
            "ask",
            "--model",
            str(tiny_model_bin_dir),
            "--vision-tower",
            str(tiny_tower_dir),
            "--dtype",
            "float32",
            "--json",
            "--max-new-tokens",
            "24",
            case["turns"][0][0],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output_ids"] == case["output_ids"]
