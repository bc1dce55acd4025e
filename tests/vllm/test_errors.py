"""A checkpoint that is not Xmodel-VLM's, or a prompt with more images than fit, gets a sentence that says so."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from vllm_support import ENGINE_ENV, MAX_TOKENS, PROJECT_ROOT, image, openai_messages


def start(model: Path, tower: Path) -> str:
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("load_checkpoint.py")), str(model), str(tower)],
                          capture_output=True, text=True, timeout=240, check=False, cwd=PROJECT_ROOT,
                          env={**os.environ, **ENGINE_ENV, "PYTHONPATH": str(PROJECT_ROOT)})
    return done.stdout


def edited_checkpoint(tiny_vlm: tuple[Path, Path], folder: Path, edit) -> Path:
    model = folder / "model"
    shutil.copytree(tiny_vlm[0], model)
    weights = load_file(model / "model.safetensors")
    edit(weights)
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    return model


@pytest.mark.slow
def test_a_missing_weight_is_named(tiny_vlm, tmp_path):
    model = edited_checkpoint(tiny_vlm, tmp_path, lambda weights: weights.pop("model.norm.weight"))
    said = start(model, tiny_vlm[1])
    assert "The checkpoint lacks 1 weights Xmodel-VLM needs (first: language_model.model.norm.weight)" in said


@pytest.mark.slow
def test_an_extra_weight_is_named(tiny_vlm, tmp_path):
    def add(weights):
        weights["model.surprise.weight"] = weights["model.norm.weight"].clone()

    said = start(edited_checkpoint(tiny_vlm, tmp_path, add), tiny_vlm[1])
    assert "The checkpoint holds the weight 'model.surprise.weight', which Xmodel-VLM does not have" in said


def test_the_untouched_checkpoint_loads(tiny_vlm):
    assert start(*tiny_vlm).strip().endswith("loaded")


def test_more_images_than_fit_are_refused_with_the_limit(llm):
    from vllm import SamplingParams
    from vllm.exceptions import VLLMValidationError

    limit = 4096 // 2 // 144  # half the context for images, as the app allows
    messages = [{"role": "user", "content": "Too many?", "images": [image("gradient_square.png")] * (limit + 1)}]
    with pytest.raises(VLLMValidationError, match=f"At most {limit} image"):
        llm.chat(openai_messages(None, messages), SamplingParams(temperature=0, max_tokens=MAX_TOKENS), use_tqdm=False)
