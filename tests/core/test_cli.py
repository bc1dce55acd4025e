"""The `xvlm` command as a person uses it: one-line errors, exit codes, chat, bench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xvlm_core.cli import main
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.messages import ImageRef, Message
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.sampling import SamplingSettings


def test_missing_model_is_one_line_error(capsys, tmp_path):
    assert main(["ask", "--model", str(tmp_path / "nope"), "hello"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {tmp_path / 'nope'}: no such folder."
    assert not any("Traceback" in line for line in err)


def test_model_not_downloaded_says_how_to_get_it(capsys):
    assert main(["ask", "--model", "XiaoduoAILab/Xmodel_VLM", "hello"]) == 1
    assert "xvlm download XiaoduoAILab/Xmodel_VLM" in capsys.readouterr().err


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["ask"])
    assert exit_info.value.code == 2


def test_bad_image_names_the_file(capsys, tmp_path, tiny_model_dir, tiny_tower_dir):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code = main(
        ["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--image", str(text), "hi"]
    )
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.endswith(f"error: {text}: not an image file (or not a PNG, JPEG, GIF, BMP, WebP or TIFF).")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"role": "user"}', "expected a JSON list"),
        ('[{"role": "robot", "content": "x"}]', "message 1"),
        ('[{"role": "assistant", "content": "x", "images": ["a.png"]}]', "only user messages"),
        ('[{"role": "user", "content": "x", "stats": {"ttft_s": 1}}]', "only answers carry stats"),
        ('[{"role": "assistant", "content": "x", "stats": [1]}]', '"stats" must be an object'),
    ],
)
def test_bad_conversation_file(capsys, tmp_path, tiny_model_dir, content, message):
    path = tmp_path / "conversation.json"
    path.write_text(content)
    assert main(["ask", "--model", str(tiny_model_dir), "--conversation", str(path), "hi"]) == 1
    assert message in capsys.readouterr().err


def test_ask_streams_text_to_stdout(capsys, golden, tiny_model_dir, tiny_tower_dir):
    case = golden["cases"]["text_only"]
    code = main(
        [
            "ask",
            "--model",
            str(tiny_model_dir),
            "--vision-tower",
            str(tiny_tower_dir),
            "--dtype",
            "float32",
            "--max-new-tokens",
            "24",
            case["turns"][0][0],
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == case["text"] + "\n"


def test_ask_with_two_images_gives_the_ids_of_the_session(capsys, tiny_model_dir, tiny_tower_dir, images_dir):
    square, wide = images_dir / "gradient_square.png", images_dir / "shapes_wide.png"
    model = ["--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    code = main(["ask", *model, "--max-new-tokens", "12", "--image", str(square), "--image", str(wide), "--json",
                 "Compare the two pictures."])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    loaded = load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")
    question = Message("user", "Compare the two pictures.", (ImageRef.from_file(square), ImageRef.from_file(wide)))
    answer = ChatSession(loaded).answer([question], SamplingSettings(max_new_tokens=12))
    text = "".join(answer)
    assert (printed["input_ids"], printed["output_ids"], printed["text"]) == (
        answer.result.input_ids, answer.result.output_ids, text)
    assert printed["input_ids"].count(IMAGE_TOKEN_INDEX) == 2 and "<image>\n<image>\nCompare" in printed["prompt"]


def test_chat_keeps_context_across_turns(golden, tiny_model_dir, tiny_tower_dir, images_dir):
    case = golden["cases"]["multi_turn_square"]
    script = f"/image {images_dir / 'gradient_square.png'}\nWhat is in this image?\nAre you sure?\n/quit\n"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "xvlm_core",
            "chat",
            "--model",
            str(tiny_model_dir),
            "--vision-tower",
            str(tiny_tower_dir),
            "--dtype",
            "float32",
            "--max-new-tokens",
            "24",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert case["turns"][0][1] in done.stdout
    assert case["text"] in done.stdout


def test_bench_json_has_the_figures(capsys, tiny_model_dir, tiny_tower_dir):
    code = main(
        [
            "bench",
            "--model",
            str(tiny_model_dir),
            "--vision-tower",
            str(tiny_tower_dir),
            "--turns",
            "3",
            "--new-tokens",
            "4",
            "--baseline",
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    for key in (
        "device",
        "dtype",
        "load_s",
        "image_encode_s",
        "prefill_s",
        "ttft_s",
        "decode_tok_s",
        "turn3_ttft_s",
        "peak_rss_mb",
        "baseline_decode_tok_s",
        "baseline_turn3_ttft_s",
    ):
        assert key in result
    assert result["turn3_prefilled_tokens"] < result["turn3_prompt_tokens"] / 2
    assert result["decode_tok_s"] > 0 and result["baseline_decode_tok_s"] > 0
    # Every decode step runs after at least turn 1's prompt, and before the last turn's prompt and its new tokens.
    assert result["prompt_tokens"] <= result["decode_mean_depth"] < result["turn3_prompt_tokens"] + 4


def test_bench_with_8_bit_weights_reports_them_against_an_exact_baseline(capsys, tiny_model_dir, tiny_tower_dir):
    args = ["bench", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    assert main([*args, "--turns", "2", "--new-tokens", "4", "--baseline", "--quantize", "int8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quantize"] == "int8"
    assert result["implied_bandwidth_gbs"] > 0 and result["baseline_implied_bandwidth_gbs"] > 0
    # The tiny model's linear layers go from 4 bytes a weight to 1; its embedding table is not read per token.
    assert result["weights_read_per_token_gb"] < 0.5 * result["baseline_weights_read_per_token_gb"]


def test_ask_with_8_bit_weights_answers(capsys, tiny_model_dir, tiny_tower_dir):
    args = ["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--quantize", "int8"]
    assert main([*args, "--max-new-tokens", "6", "--json", "Hello"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["output_ids"]) == 6 and result["text"]


def test_unknown_quantize_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["ask", "--quantize", "int3", "Hello"])
    assert exit_code.value.code == 2
    assert "int3" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("filename", "source"),
    [
        ("xvlm_core/leak.py", "from PySide6.QtCore import QObject\n"),
        ("app/leak.py", "import torch\n"),
    ],
)
def test_walls_between_model_stack_and_ui_are_enforced(filename, source):
    """xvlm_core never imports Qt and the app never imports torch: ruff's banned-api rule fails otherwise."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", filename, "-"],
        input=source,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "TID251" in done.stdout
