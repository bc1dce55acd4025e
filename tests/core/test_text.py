"""Tokenizer rules of the original wrapper, and streaming text that never breaks a character."""

from __future__ import annotations

import pytest

from xvlm_core.engines.generation import TextStream
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.model.prompt import ImageSlot, Message, render_prompt, render_segments
from xvlm_core.model.tokenizer import StreamDecoder, Tokenizer, find_tokenizer_file


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir) -> Tokenizer:
    return Tokenizer(find_tokenizer_file(tiny_model_dir))


def golden_messages(case: dict) -> list[Message]:
    messages = []
    for index, (question, answer) in enumerate(case["turns"]):
        messages.append(Message("user", question, case["images"][:1] if index == 0 else []))
        if answer is not None:
            messages.append(Message("assistant", answer))
    return messages


def test_prompt_ids_match_original(tokenizer, golden):
    for case in golden["cases"].values():
        assert render_prompt(golden_messages(case)) == case["prompt"]
        assert tokenizer.encode_segments(render_segments(golden_messages(case))) == case["input_ids"]


def test_eos_text_is_the_eos_id_and_next_stretch_gets_its_own_prefix(tokenizer):
    ids = tokenizer.encode_text("ASSISTANT: yes</s>USER: no")
    assert ids.count(2) == 1
    after = ids[ids.index(2) + 1 :]
    assert after == tokenizer.encode_text("USER: no")
    assert tokenizer.sp.id_to_piece(after[0]).startswith("▁")


def test_image_slot_becomes_sentinel_and_bos_appears_once(tokenizer):
    ids = tokenizer.encode_segments(["A ", ImageSlot("a.png"), "\nB ", ImageSlot("b.png"), "\nC"])
    assert ids[0] == 1 and ids.count(1) == 1
    assert ids.count(IMAGE_TOKEN_INDEX) == 2


@pytest.mark.parametrize(
    "messages",
    [
        [Message("user", "What does <image> mean?")],
        [Message("user", "What does <image> mean?", ["a.png"])],
        [Message("user", "Hi"), Message("assistant", "Use <image>\n in the prompt."), Message("user", "Why?")],
    ],
)
def test_image_text_in_a_message_stays_text(tokenizer, messages):
    ids = tokenizer.encode_segments(render_segments(messages))
    attached = sum(len(message.images) for message in messages)
    assert ids.count(IMAGE_TOKEN_INDEX) == attached
    assert "<image>" in tokenizer.decode(ids)


def test_lone_surrogates_are_replaced_not_fatal(tokenizer):
    assert tokenizer.encode_text("broken \ud800 escape") == tokenizer.encode_text("broken \ufffd escape")
    assert "\ud800" not in render_prompt([Message("user", "broken \ud800")], "system \udcff")


def test_render_prompt_v1_template():
    messages = [Message("user", "Q1", ["a.png"]), Message("assistant", "  A1 "), Message("user", "Q2")]
    assert render_prompt(messages, "SYS") == "SYS USER: <image>\nQ1 ASSISTANT: A1</s>USER: Q2 ASSISTANT:"


def test_two_images_render_a_slot_each_before_the_text_in_order():
    messages = [Message("user", "Compare them.", ["a.png", "b.png"])]
    assert render_prompt(messages, "SYS") == "SYS USER: <image>\n<image>\nCompare them. ASSISTANT:"
    slots = [segment.image for segment in render_segments(messages, "SYS") if isinstance(segment, ImageSlot)]
    assert slots == ["a.png", "b.png"]


@pytest.mark.parametrize(
    "text", ["你好，世界！图片里有一只猫。", "Emoji 🐱🎉 and ünïcödé", "mixed 中文 and English 😀"]
)
def test_stream_never_shows_broken_characters(tokenizer, text):
    ids = tokenizer.encode_text(text)
    decoder = StreamDecoder(tokenizer)
    deltas = [decoder.push(i) for i in ids]
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == tokenizer.decode(ids)


def test_byte_fallback_pieces_are_held_until_complete(tokenizer):
    byte_ids = [tokenizer.sp.piece_to_id(f"<0x{b:02X}>") for b in "🐱".encode()]
    assert all(i != tokenizer.sp.unk_id() for i in byte_ids)
    decoder = StreamDecoder(tokenizer)
    assert [decoder.push(i) for i in byte_ids] == ["", "", "", "🐱"]


def test_text_stream_cuts_stop_string_split_over_tokens(tokenizer):
    stream = TextStream(tokenizer)
    pieces = tokenizer.encode_text("Hello there") + [tokenizer.sp.piece_to_id(p) for p in ("<", "/", "s", ">")]
    shown = "".join(stream.push(i) for i in pieces)
    assert stream.stopped
    assert shown == stream.text == "Hello there"


def test_text_stream_releases_a_lone_angle_bracket_at_the_end(tokenizer):
    stream = TextStream(tokenizer)
    ids = tokenizer.encode_text("a < b")
    shown = "".join(stream.push(i) for i in ids) + stream.finish()
    assert shown == stream.text == "a < b"
