"""The decode steps: the lean one, the fixed-shape one a CUDA graph replays, and the graph's fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import DynamicCache

from xvlm_core.engines.pytorch.decode_step import FixedShapeStep, LeanStep, make_step
from xvlm_core.engines.pytorch.kv_cache import PreallocatedCache
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings

CASES = ["single_square", "multi_turn_square", "text_only", "chinese_wide"]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tiny_tower_dir):
    return load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")


def conversation(case: dict, images_dir) -> list[Message]:
    messages = []
    for index, (question, answer) in enumerate(case["turns"]):
        images = [str(images_dir / case["images"][0])] if index == 0 and case["images"] else []
        messages.append(Message("user", question, images))
        if answer is not None:
            messages.append(Message("assistant", answer))
    return messages


def output_ids(session: ChatSession, case: dict, images_dir) -> list[int]:
    answer = session.answer(conversation(case, images_dir), SamplingSettings(max_new_tokens=case["max_new_tokens"]))
    list(answer)
    return answer.result.output_ids


@pytest.mark.parametrize("name", CASES)
def test_fixed_shape_step_run_eagerly_gives_the_original_ids(loaded, golden, images_dir, name):
    # The step a CUDA graph replays, run eagerly: attention over the whole buffer, masked past the position.
    case = golden["cases"][name]
    assert output_ids(ChatSession(loaded, decode_mode="fixed"), case, images_dir) == case["output_ids"]


def test_failed_graph_capture_falls_back_with_one_log_line(loaded, golden, images_dir, caplog):
    caplog.set_level(logging.WARNING, logger="xvlm_core.engines.pytorch.decode_step")
    session = ChatSession(loaded, decode_mode="graph")  # capturing needs CUDA: on this CPU it fails
    for name in ("text_only", "single_square"):
        case = golden["cases"][name]
        session.reset()
        assert output_ids(session, case, images_dir) == case["output_ids"]
    fallbacks = [record for record in caplog.records if "without a CUDA graph" in record.getMessage()]
    assert len(fallbacks) == 1 and fallbacks[0].levelno == logging.WARNING


@pytest.mark.parametrize("step_class", [LeanStep, FixedShapeStep])
def test_step_logits_match_transformers_forward(loaded, step_class):
    language_model = loaded.model.language_model
    prompt = torch.randint(3, 32000, (1, 40), generator=torch.Generator().manual_seed(0))
    token = 1234
    with torch.inference_mode():
        reference_cache = DynamicCache(config=language_model.config)
        language_model(input_ids=prompt, cache=reference_cache, use_cache=True)
        expected = language_model(input_ids=torch.tensor([[token]]), cache=reference_cache).logits[:, -1]
        cache = PreallocatedCache(language_model.config, zeroed=True)
        language_model(input_ids=prompt, cache=cache, use_cache=True)
        got = step_class(language_model)(token, cache)
    assert cache.length == 41
    # The tiny model's logits are in the hundreds: float32 summation order alone moves them by ~1e-4.
    torch.testing.assert_close(got, expected.float(), rtol=1e-5, atol=1e-3)


def test_cache_is_written_in_place_not_concatenated(loaded):
    language_model = loaded.model.language_model
    cache = PreallocatedCache(language_model.config)
    step = make_step(language_model, "lean")
    with torch.inference_mode():
        language_model(input_ids=torch.tensor([[1, 450, 4996]]), cache=cache, use_cache=True)
    buffers = [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers]
    for token in (319, 4996, 310):
        step(token, cache)
    assert cache.length == 6
    assert [(layer.keys.data_ptr(), layer.values.data_ptr()) for layer in cache.layers] == buffers
    cache.crop(-2)
    assert cache.get_seq_length() == 4


def test_unknown_decode_mode_is_refused(loaded):
    with pytest.raises(ValueError, match="decode mode"):
        make_step(loaded.model.language_model, "turbo")
