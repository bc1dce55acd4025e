"""Greedy answers through vLLM with the plugin are xvlm_core's own, id for id."""

from __future__ import annotations

import pytest
from conftest import CONVERSATIONS, MAX_TOKENS, openai_messages

IMAGE_SENTINEL = -200  # xvlm_core's id for an image slot


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_greedy_ids_equal_xvlm_core(name: str, llm, reference):
    from vllm import SamplingParams

    system, messages = CONVERSATIONS[name]
    output = llm.chat(openai_messages(system, messages), SamplingParams(temperature=0, max_tokens=MAX_TOKENS),
                      use_tqdm=False)[0]
    expected = reference[name]
    placeholder = llm.get_tokenizer().image_token_id
    widened = []
    for token in expected["input_ids"]:
        widened += [placeholder] * 144 if token == IMAGE_SENTINEL else [token]
    assert output.prompt_token_ids == widened
    assert list(output.outputs[0].token_ids) == expected["output_ids"]
    assert output.outputs[0].text.strip() == expected["text"]
