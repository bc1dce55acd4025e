"""Broken or hostile input reaches a person as one clear sentence naming the file, the field and the value:
through the Python API, through `xvlm ask` in this process, and through `xvlm ask` as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xvlm_core.cli import main
from xvlm_core.engines.generation import SamplingSettings
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.errors import XvlmError

# (config.json change, what the message must name besides the file)
CONFIG_CASES = {
    "zero heads": ({"num_attention_heads": 0}, "'num_attention_heads' is 0"),
    "negative heads": ({"num_attention_heads": -4}, "'num_attention_heads' is -4"),
    "zero kv heads": ({"num_key_value_heads": 0}, "'num_key_value_heads' is 0"),
    "string size": ({"hidden_size": "big"}, "'hidden_size' is 'big'"),
    "float size": ({"intermediate_size": 176.5}, "'intermediate_size' is 176.5"),
    "list epsilon": ({"rms_norm_eps": [1e-5]}, "'rms_norm_eps' is [1e-05]"),
    "zero epsilon": ({"rms_norm_eps": 0}, "'rms_norm_eps' is 0"),
    "nan rope": ({"rope_theta": float("nan")}, "'rope_theta' is nan"),
    "zero positions": ({"max_position_embeddings": 0}, "'max_position_embeddings' is 0"),
    "huge layers": ({"num_hidden_layers": 10**9}, "'num_hidden_layers' is 1000000000"),
    "zero vocab": ({"vocab_size": 0}, "'vocab_size' is 0"),
    "eos outside vocab": ({"eos_token_id": 99999}, "'eos_token_id' is 99999"),
    "indivisible hidden": ({"hidden_size": 65}, "hidden_size 65"),
    "zero mm hidden": ({"mm_hidden_size": 0}, "'mm_hidden_size' is 0"),
    "select layer zero": ({"mm_vision_select_layer": 0}, "'mm_vision_select_layer' is 0"),
    "select layer string": ({"mm_vision_select_layer": "-2"}, "'mm_vision_select_layer' is '-2'"),
    "select layer too deep": ({"mm_vision_select_layer": -30}, "'mm_vision_select_layer' is -30"),
    "select layer too high": ({"mm_vision_select_layer": 7}, "'mm_vision_select_layer' is 7"),
    "tower not a name": ({"mm_vision_tower": 5}, "'mm_vision_tower' is 5"),
    "projector not a name": ({"mm_projector_type": ["xdpnet"]}, "'mm_projector_type' is ['xdpnet']"),
}
# (preprocessor_config.json change, what the message must name besides the file)
PREPROCESSOR_CASES = {
    "huge size": ({"size": 100000}, "'size' is 100000"),
    "string size": ({"size": "336"}, "'size' is '336'"),
    "huge shortest edge": ({"size": {"shortest_edge": 100000}}, "'shortest_edge' is 100000"),
    "other crop": ({"crop_size": 100}, "'crop_size' is 100"),
    "zero std": ({"image_std": [0, 0, 0]}, "'image_std' is [0, 0, 0]"),
    "short mean": ({"image_mean": [0.5]}, "'image_mean' is [0.5]"),
    "string mean": ({"image_mean": "grey"}, "'image_mean' is 'grey'"),
    "odd resample": ({"resample": 9}, "'resample' is 9"),
}


# (the vision tower's config.json change, what the message must name besides the file)
TOWER_CASES = {
    "zero heads": ({"num_attention_heads": 0}, "'num_attention_heads' is 0"),
    "string width": ({"hidden_size": "wide"}, "'hidden_size' is 'wide'"),
    "patch larger than image": ({"patch_size": 500}, "'patch_size' is 500"),
    "uneven patches": ({"patch_size": 13}, "patch_size 13"),
    "list epsilon": ({"layer_norm_eps": [1e-5]}, "'layer_norm_eps' is [1e-05]"),
}


def link_copy(source: Path, target: Path) -> Path:
    """A checkpoint folder whose files link to `source`'s, ready to have one file replaced."""
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    return target


def with_changed_json(source: Path, target: Path, name: str, change: dict) -> Path:
    folder = link_copy(source, target)
    raw = json.loads((source / name).read_text())
    (folder / name).unlink()
    (folder / name).write_text(json.dumps({**raw, **change}))
    return folder


def assert_for_people(message: str, *names: str) -> None:
    for name in names:
        assert name in message
    assert "unexpected" not in message.lower()
    assert "Traceback" not in message


@pytest.fixture
def broken_model(tmp_path, tiny_model_dir):
    def make(change: dict) -> Path:
        return with_changed_json(tiny_model_dir, tmp_path / "model", "config.json", change)

    return make


@pytest.fixture
def broken_tower(tmp_path, tiny_tower_dir):
    def make(change: dict) -> Path:
        return with_changed_json(tiny_tower_dir, tmp_path / "tower", "preprocessor_config.json", change)

    return make


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_value_is_named_by_the_api_and_the_command(capsys, broken_model, tiny_tower_dir, case):
    change, named = CONFIG_CASES[case]
    folder = broken_model(change)
    with pytest.raises(XvlmError) as error:
        load_model(str(folder), vision_tower=str(tiny_tower_dir), dtype="float32")
    assert_for_people(str(error.value), str(folder / "config.json"), named)
    assert main(["ask", "--model", str(folder), "--vision-tower", str(tiny_tower_dir), "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert_for_people(err, str(folder / "config.json"), named)


@pytest.mark.parametrize("case", list(PREPROCESSOR_CASES))
def test_bad_preprocessor_value_is_named_by_the_api_and_the_command(capsys, broken_tower, tiny_model_dir, case):
    change, named = PREPROCESSOR_CASES[case]
    tower = broken_tower(change)
    with pytest.raises(XvlmError) as error:
        load_model(str(tiny_model_dir), vision_tower=str(tower), dtype="float32")
    assert_for_people(str(error.value), str(tower / "preprocessor_config.json"), named)
    assert main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tower), "hi"]) == 1
    assert_for_people(capsys.readouterr().err, str(tower / "preprocessor_config.json"), named)


@pytest.mark.parametrize("case", list(TOWER_CASES))
def test_bad_tower_config_value_is_named(capsys, tmp_path, tiny_model_dir, tiny_tower_dir, case):
    change, named = TOWER_CASES[case]
    tower = with_changed_json(tiny_tower_dir, tmp_path / "tower", "config.json", change)
    with pytest.raises(XvlmError) as error:
        load_model(str(tiny_model_dir), vision_tower=str(tower), dtype="float32")
    assert_for_people(str(error.value), str(tower / "config.json"), named)
    assert main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tower), "hi"]) == 1
    assert_for_people(capsys.readouterr().err, str(tower / "config.json"), named)


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_sampling_values_must_be_finite(field, value):
    with pytest.raises(XvlmError) as error:
        SamplingSettings(**{field: value})
    assert_for_people(str(error.value), field, repr(value))


def test_nan_temperature_on_the_command_line(capsys, tiny_model_dir):
    assert main(["ask", "--model", str(tiny_model_dir), "--temperature", "nan", "hi"]) == 1
    assert_for_people(capsys.readouterr().err, "temperature", "nan")


@pytest.mark.parametrize("name", [".", "pipe", "nul"])
def test_image_paths_that_are_not_image_files(capsys, tmp_path, tiny_model_dir, tiny_tower_dir, name):
    if name == "pipe":
        os.mkfifo(tmp_path / "pipe.png")
    image = {".": ".", "pipe": str(tmp_path / "pipe.png"), "nul": "a\0b.png"}[name]
    if name == "nul":
        # The command line cannot carry a NUL; a conversation file can.
        conversation = tmp_path / "chat.json"
        conversation.write_text(json.dumps([{"role": "user", "content": "hi", "images": [image]}]))
        args = ["--conversation", str(conversation)]
    else:
        args = ["--image", image]
    assert main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), *args, "hi"]) == 1
    err = capsys.readouterr().err
    assert_for_people(err, {".": ".: is a folder", "pipe": "pipe.png: not a regular file", "nul": "NUL"}[name])


def test_lone_surrogates_in_a_conversation_file_are_answered(capsys, tmp_path, tiny_model_dir, tiny_tower_dir):
    conversation = tmp_path / "chat.json"
    conversation.write_text('[{"role": "user", "content": "broken \\ud800 escape"}, '
                            '{"role": "assistant", "content": "ok \\udfff"}]')
    code = main(["ask", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--conversation",
                 str(conversation), "--json", "--max-new-tokens", "3", "and \udcff this?"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert "\ufffd" in result["prompt"] and result["output_ids"]


def test_pickle_that_runs_code_is_one_line_refused_for_safety(tmp_path, tiny_model_bin_dir, tiny_tower_dir):
    folder = link_copy(tiny_model_bin_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "pytorch_model.bin").unlink()
    torch.save({"model.norm.weight": torch.ones(64), "x": Payload()}, folder / "pytorch_model.bin")
    with pytest.raises(XvlmError) as error:
        load_model(str(folder), vision_tower=str(tiny_tower_dir))
    message = str(error.value)
    assert message == f"{folder / 'pytorch_model.bin'}: refused for safety: besides weights, the file holds code " \
                      "that would run when loaded."
    process = subprocess.run(
        [sys.executable, "-m", "xvlm_core", "ask", "--model", str(folder), "--vision-tower", str(tiny_tower_dir), "hi"],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1] == f"error: {message}"
    assert_for_people(process.stderr)
    assert not marker.exists()


def test_subprocess_messages_name_file_field_and_value(tmp_path, tiny_model_dir, tiny_tower_dir):
    """The same sentences reach a person running `xvlm ask` in a terminal, with no traceback."""
    model = with_changed_json(tiny_model_dir, tmp_path / "model", "config.json", {"num_attention_heads": 0})
    tower = with_changed_json(tiny_tower_dir, tmp_path / "tower", "preprocessor_config.json", {"image_std": [0, 0, 0]})
    cases = [
        (["--model", str(model), "--vision-tower", str(tiny_tower_dir)], [str(model / "config.json"),
                                                                          "'num_attention_heads' is 0"]),
        (["--model", str(tiny_model_dir), "--vision-tower", str(tower)], [str(tower / "preprocessor_config.json"),
                                                                          "'image_std' is [0, 0, 0]"]),
        (["--model", str(tiny_model_dir), "--temperature", "nan"], ["temperature", "nan"]),
        (["--model", str(tiny_model_dir), "--image", "/dev/zero"], ["/dev/zero: not a regular file"]),
    ]
    for args, names in cases:
        process = subprocess.run([sys.executable, "-m", "xvlm_core", "ask", *args, "hi"],
                                 capture_output=True, text=True, timeout=120)
        assert process.returncode == 1
        lines = process.stderr.strip().splitlines()  # progress lines, then the error
        assert lines[-1].startswith("error: ")
        assert_for_people(lines[-1], *names)
        assert_for_people(process.stderr)


def test_unknown_failure_reads_as_a_sentence(capsys, monkeypatch):
    import xvlm_core.cli as cli

    def broken(args):
        raise KeyError("lost")

    monkeypatch.setattr(cli, "cmd_ask", broken)
    assert cli.main(["ask", "hi"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert_for_people(err, "KeyError", "--debug")


@pytest.mark.parametrize("attached", [False, True])
def test_imported_conversation_with_image_text_still_answers(tmp_path, images_dir, tiny_model_dir, tiny_tower_dir,
                                                             attached):
    images = []
    if attached:
        (tmp_path / "square.png").symlink_to(images_dir / "gradient_square.png")
        images = ["square.png"]
    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps([
        {"role": "user", "content": "What is <image>?", "images": images},
        {"role": "assistant", "content": "It is written <image>\nlike that."},
        {"role": "user", "content": "<image><image>"},
        {"role": "assistant", "content": "Yes."},
    ]))
    process = subprocess.run(
        [sys.executable, "-m", "xvlm_core", "ask", "--model", str(tiny_model_dir), "--vision-tower",
         str(tiny_tower_dir), "--conversation", str(conversation), "--json", "--max-new-tokens", "6",
         "And one more <image> question?"],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)
    assert result["input_ids"].count(-200) == len(images)
    assert result["output_ids"] and result["stats"]["stop_reason"] != "cancelled"


def test_json_nested_too_deeply_is_refused_with_a_message(tmp_path):
    from xvlm_core.errors import ConfigError
    from xvlm_core.hub.installed import index_keys
    from xvlm_core.model.config import read_json_object

    nested = "[" * 200_000
    assert index_keys(nested.encode()) == set()
    config = tmp_path / "config.json"
    config.write_text(nested, encoding="utf-8")
    with pytest.raises(ConfigError, match="config.json: the config is nested too deeply"):
        read_json_object(config, ConfigError, "the config")


def bin_holding(folder: Path, state: object) -> Path:
    (folder / "pytorch_model.bin").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


@pytest.mark.parametrize("case", ["list", "state_dict list", "integer key"])
def test_bin_whose_state_dict_is_not_named_weights_is_one_sentence(capsys, tmp_path, tiny_model_bin_dir,
                                                                   tiny_tower_dir, case):
    folder = link_copy(tiny_model_bin_dir, tmp_path / "odd")
    state = torch.load(tiny_model_bin_dir / "pytorch_model.bin", weights_only=True)
    held, words = {
        "list": ([torch.ones(3)], "does not hold a dictionary of weights"),
        "state_dict list": ({"state_dict": [torch.ones(3)]}, "does not hold a dictionary of weights"),
        "integer key": ({**state, 5: torch.ones(2)}, "the weight name 5 is not text"),
    }[case]
    path = bin_holding(folder, held)
    with pytest.raises(XvlmError) as error:
        load_model(str(folder), vision_tower=str(tiny_tower_dir))
    assert_for_people(str(error.value), str(path), words)
    assert main(["ask", "--model", str(folder), "--vision-tower", str(tiny_tower_dir), "hi"]) == 1
    err = capsys.readouterr().err
    assert_for_people(err, str(path), words)
    assert "no message for" not in err


@pytest.mark.parametrize("quantize", ["none", "int8"])
@pytest.mark.parametrize(("weight", "dtype"), [("lm_head.weight", torch.int32),
                                               ("model.layers.0.mlp.up_proj.weight", torch.int8)])
def test_integer_weights_in_safetensors_are_one_sentence(capsys, tmp_path, tiny_model_dir, tiny_tower_dir, quantize,
                                                         weight, dtype):
    from safetensors.torch import load_file, save_file

    folder = link_copy(tiny_model_dir, tmp_path / "int")
    state = load_file(tiny_model_dir / "model.safetensors")
    state[weight] = state[weight].to(dtype)
    (folder / "model.safetensors").unlink()
    save_file(state, folder / "model.safetensors")
    words = (str(folder / "model.safetensors"), f"'{weight}'", str(dtype).removeprefix("torch."), "not floating-point")
    with pytest.raises(XvlmError) as error:
        load_model(str(folder), vision_tower=str(tiny_tower_dir), quantize=quantize)
    assert_for_people(str(error.value), *words)
    code = main(["ask", "--model", str(folder), "--vision-tower", str(tiny_tower_dir), "--quantize", quantize, "hi"])
    err = capsys.readouterr().err
    assert code == 1 and "no message for" not in err
    assert_for_people(err, *words)
