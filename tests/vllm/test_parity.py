"""Greedy answers through vLLM with the plugin are xvlm_core's own, id for id."""

from __future__ import annotations

import pytest
from vllm_support import CONVERSATIONS, MAX_TOKENS, image, openai_messages

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


def test_image_embeddings_equal_xvlm_core(llm, tiny_vlm):
    """Tower, layer, CLS, fold and activation: the 144 embeddings of an image, compared number for number."""
    import torch

    from xvlm_core.engines.pytorch.loading import load_model
    from xvlm_core.model.images import load_image

    model, tower = tiny_vlm
    loaded = load_model(str(model), vision_tower=str(tower), device="cpu", dtype="float32")
    assert loaded.preprocess is not None
    names = ("shapes_wide.png", "gradient_square.png")
    pixels = torch.cat([loaded.preprocess(load_image(image(name))) for name in names])  # [2, 3, 336, 336]
    expected = loaded.model.encode_images(pixels)  # [2, 144, hidden]
    [embedded] = llm.apply_model(lambda network: network.embed_multimodal(pixel_values=pixels).detach().clone())
    assert embedded.shape == expected.shape
    torch.testing.assert_close(embedded, expected, rtol=1e-4, atol=1e-5)
