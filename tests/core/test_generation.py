"""Generation as a plain generator: settings, the decode loop's stop reasons, and the answer's result."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import XvlmError
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tiny_tower_dir):
    return load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")


def test_sampling_settings_import_without_torch():
    probe = "import sys, xvlm_core.sampling; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_new_tokens", 0, "at least 1"),
        ("temperature", -0.1, "greedy"),
        ("top_p", 0.0, "top_p"),
        ("top_k", -1, "top_k"),
        ("repetition_penalty", 0.0, "between"),
        ("repetition_penalty", 1e-300, "between"),  # a positive but tiny one turned the logits into inf
        ("repetition_penalty", 1e300, "between"),
    ],
)
def test_bad_sampling_setting_names_the_field_and_value(field, value, words):
    with pytest.raises(XvlmError, match=f"{field}.*{words}|{words}.*{value}"):
        SamplingSettings(**{field: value})


def test_result_is_there_only_after_the_last_delta(loaded):
    answer = ChatSession(loaded).answer([Message("user", "Hello, who are you?")], SamplingSettings(max_new_tokens=6))
    deltas = iter(answer)
    first = next(deltas)
    with pytest.raises(XvlmError, match="not finished"):
        _ = answer.result
    rest = list(deltas)
    result = answer.result
    assert result.text == "".join([first, *rest])
    assert result.stats.output_tokens == len(result.output_ids) == 6
    assert result.stats.stop_reason == "length"
    assert result.prompt.endswith("Hello, who are you? ASSISTANT:")
    assert result.input_ids[0] == loaded.tokenizer.bos_id


def test_cancel_set_before_the_answer_starts_gives_an_empty_cancelled_result(loaded):
    cancel = threading.Event()
    cancel.set()
    answer = ChatSession(loaded).answer([Message("user", "Hello")], SamplingSettings(max_new_tokens=50), cancel=cancel)
    assert list(answer) == []
    assert answer.result.stats.stop_reason == "cancelled"
    assert answer.result.output_ids == [] and answer.result.text == ""


def test_a_huge_token_budget_is_trimmed_to_the_context_before_anything_is_allocated(loaded, monkeypatch):
    # A client may ask for billions of tokens: the answer fits the context and nothing of that size is made.
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: 64))
    answer = ChatSession(loaded).answer([Message("user", "Hello")], SamplingSettings(max_new_tokens=2**62))
    list(answer)
    stats = answer.result.stats
    assert 0 < stats.output_tokens <= 64 - stats.prompt_tokens


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64, 1.5, True])
def test_a_seed_outside_what_the_generator_takes_is_a_clear_error(seed):
    with pytest.raises(XvlmError, match="seed must be a whole number"):
        SamplingSettings(seed=seed)
