"""Multi-turn sessions: the KV cache is reused for what is unchanged, and outputs stay identical."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import Cancelled, XvlmError
from xvlm_core.messages import ImageRef
from xvlm_core.model.config import IMAGE_TOKEN_INDEX
from xvlm_core.model.prompt import Message, render_prompt, render_segments
from xvlm_core.sampling import SamplingSettings


@pytest.fixture(scope="module")
def loaded(tiny_model_dir, tiny_tower_dir):
    return load_model(str(tiny_model_dir), vision_tower=str(tiny_tower_dir), dtype="float32")


def run(session: ChatSession, messages: list[Message], **settings) -> tuple:
    answer = session.answer(messages, SamplingSettings(**{"max_new_tokens": 24, **settings}))
    deltas = list(answer)
    return answer.result, deltas


def test_second_turn_prefills_only_new_tokens_and_matches_original(loaded, golden, images_dir):
    square = str(images_dir / "gradient_square.png")
    session = ChatSession(loaded)
    first, _ = run(session, [Message("user", "What is in this image?", [square])])
    assert first.stats.images_encoded == 1
    case = golden["cases"]["multi_turn_square"]
    follow_up = [
        Message("user", "What is in this image?", [square]),
        Message("assistant", first.text),
        Message("user", "Are you sure?"),
    ]
    second, _ = run(session, follow_up)
    assert second.output_ids == case["output_ids"]
    assert second.stats.images_encoded == 0  # the image's embeddings come from the session
    # The system prompt, image and first question were not recomputed; the answer is re-read as text,
    # which here tokenizes differently from the generated ids, exactly as in the original.
    assert second.stats.reused_tokens >= first.stats.prompt_tokens
    assert second.stats.prefilled_tokens == second.stats.prompt_tokens - second.stats.reused_tokens < 40


def test_cached_turns_equal_recomputing_from_scratch(loaded, images_dir):
    wide = str(images_dir / "shapes_wide.png")
    questions = ["Describe the shapes.", "Which one is largest?", "And the colours?", "Count them."]
    session = ChatSession(loaded)
    messages: list[Message] = []
    for turn, question in enumerate(questions):
        messages.append(Message("user", question, [wide] if turn == 0 else []))
        cached, _ = run(session, messages)
        fresh, _ = run(ChatSession(loaded), messages)
        assert cached.output_ids == fresh.output_ids
        assert cached.prompt == fresh.prompt
        if turn:
            assert cached.stats.reused_tokens > 0
        messages.append(Message("assistant", cached.text))


def test_regenerate_and_edit_cut_the_cache_back(loaded, images_dir):
    square = str(images_dir / "gradient_square.png")
    session = ChatSession(loaded)
    question = [Message("user", "What is in this image?", [square])]
    first, _ = run(session, question)
    regenerated, _ = run(session, question)
    assert regenerated.output_ids == first.output_ids
    assert regenerated.stats.prefilled_tokens == 1  # everything but the last prompt position was cached

    edited = [Message("user", "What colour is this?", [square])]
    edited_answer, _ = run(session, edited)
    fresh, _ = run(ChatSession(loaded), edited)
    assert edited_answer.output_ids == fresh.output_ids
    assert 0 < edited_answer.stats.reused_tokens < first.stats.prompt_tokens


def test_changing_the_image_invalidates_its_positions(loaded, images_dir):
    session = ChatSession(loaded)
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    run(session, [Message("user", "What is in this image?", [square])])
    other, _ = run(session, [Message("user", "What is in this image?", [wide])])
    fresh, _ = run(ChatSession(loaded), [Message("user", "What is in this image?", [wide])])
    assert other.output_ids == fresh.output_ids
    assert other.stats.images_encoded == 1


def test_cancel_stops_within_one_token(loaded):
    cancel = threading.Event()
    session = ChatSession(loaded)
    answer = session.answer(
        [Message("user", "Hello, who are you?")], SamplingSettings(max_new_tokens=200), cancel=cancel
    )
    received = []
    for delta in answer:
        received.append(delta)
        if len(received) == 3:
            cancel.set()
    result = answer.result
    assert result.stats.stop_reason == "cancelled"
    assert len(result.output_ids) <= 4
    assert result.text.startswith("".join(received[:3]).strip())
    # The session stays usable and consistent after a cancel.
    again, _ = run(session, [Message("user", "Hello, who are you?")])
    fresh, _ = run(ChatSession(loaded), [Message("user", "Hello, who are you?")])
    assert again.output_ids == fresh.output_ids


def test_abandoned_iteration_leaves_session_consistent(loaded):
    session = ChatSession(loaded)
    answer = session.answer([Message("user", "Hello, who are you?")], SamplingSettings(max_new_tokens=50))
    iterator = iter(answer)
    next(iterator)
    next(iterator)
    iterator.close()
    again, _ = run(session, [Message("user", "Hello, who are you?")])
    fresh, _ = run(ChatSession(loaded), [Message("user", "Hello, who are you?")])
    assert again.output_ids == fresh.output_ids


def test_sampling_is_reproducible_with_a_seed(loaded):
    messages = [Message("user", "Tell me a story.")]
    # The tiny model's logits are in the hundreds, so only a high temperature makes sampling wander.
    one, _ = run(ChatSession(loaded), messages, temperature=200.0, top_p=0.9, top_k=50, seed=7)
    two, _ = run(ChatSession(loaded), messages, temperature=200.0, top_p=0.9, top_k=50, seed=7)
    other, _ = run(ChatSession(loaded), messages, temperature=200.0, top_p=0.9, top_k=50, seed=8)
    greedy, _ = run(ChatSession(loaded), messages)
    assert one.output_ids == two.output_ids
    assert one.output_ids != other.output_ids
    assert one.output_ids != greedy.output_ids
    top1, _ = run(ChatSession(loaded), messages, temperature=1.0, top_k=1, seed=1)
    assert top1.output_ids == greedy.output_ids


def test_repetition_penalty_changes_greedy_output(loaded, images_dir):
    messages = [Message("user", "What is in this image?", [str(images_dir / "gradient_square.png")])]
    plain, _ = run(ChatSession(loaded), messages, max_new_tokens=48)
    penalised, _ = run(ChatSession(loaded), messages, max_new_tokens=48, repetition_penalty=50.0)
    assert penalised.output_ids != plain.output_ids


def test_long_conversation_drops_oldest_turns_but_keeps_image(loaded, images_dir, monkeypatch):
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: 400))
    square = str(images_dir / "gradient_square.png")
    session = ChatSession(loaded)
    messages = [Message("user", "What is in this image?", [square])]
    for turn in range(8):
        answer, _ = run(session, messages, max_new_tokens=16)
        assert answer.stats.prompt_tokens + len(answer.output_ids) <= 400
        messages += [Message("assistant", answer.text), Message("user", f"Tell me more, part {turn}.")]
    assert answer.stats.dropped_messages > 0
    assert "<image>" in answer.prompt
    assert answer.prompt.endswith("Tell me more, part 6. ASSISTANT:")


def test_message_longer_than_context_is_a_clear_error(loaded, monkeypatch):
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: 100))
    answer = ChatSession(loaded).answer([Message("user", "word " * 200)])
    with pytest.raises(XvlmError, match="too long"):
        list(answer)


def test_conversation_must_end_with_user(loaded):
    with pytest.raises(XvlmError):
        ChatSession(loaded).answer([Message("user", "hi"), Message("assistant", "hello")])


def test_broken_image_in_conversation_is_an_image_error(loaded, tmp_path: Path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    answer = ChatSession(loaded).answer([Message("user", "What?", [str(broken)])])
    with pytest.raises(XvlmError, match="broken.png"):
        list(answer)


# The text "<image>" is text: only attached images become image slots.


@pytest.mark.parametrize("attached", [False, True])
def test_image_text_typed_by_the_user_is_text(loaded, images_dir, attached):
    square = [str(images_dir / "gradient_square.png")] if attached else []
    session = ChatSession(loaded)
    messages = [Message("user", "What does <image> mean here? <image>\n<image>", square)]
    first, _ = run(session, messages)
    assert first.stats.stop_reason in ("eos", "stop_string", "length")
    assert first.input_ids.count(IMAGE_TOKEN_INDEX) == len(square)
    messages += [Message("assistant", first.text), Message("user", "And now?")]
    second, _ = run(session, messages)
    assert second.stats.stop_reason in ("eos", "stop_string", "length") and second.output_ids
    fresh, _ = run(ChatSession(loaded), messages)
    assert second.output_ids == fresh.output_ids


def test_image_text_in_an_earlier_answer_is_text(loaded, images_dir):
    square = str(images_dir / "gradient_square.png")
    messages = [
        Message("user", "How do I attach a picture?", [square]),
        Message("assistant", "Write <image> where it goes, like this: <image>\n"),
        Message("user", "Thanks. What is in mine?"),
    ]
    session = ChatSession(loaded)
    answer, _ = run(session, messages)
    assert answer.input_ids.count(IMAGE_TOKEN_INDEX) == 1
    assert answer.output_ids and answer.stats.stop_reason != "cancelled"
    messages += [Message("assistant", answer.text), Message("user", "Are you sure?")]
    again, _ = run(session, messages)
    assert again.output_ids


# Fitting a long conversation into the context: linear, and the same result as rendering what is kept.


def count_encoded_characters(loaded, monkeypatch) -> list[int]:
    """Characters passed to SentencePiece, one entry per call."""
    calls: list[int] = []
    tokenizer = loaded.tokenizer
    plain = type(tokenizer)._encode_plain

    def counting(text: str) -> list[int]:
        calls.append(len(text))
        return plain(tokenizer, text)

    monkeypatch.setattr(tokenizer, "_encode_plain", counting)
    return calls


def test_conversation_of_megabytes_is_fitted_by_tokenizing_only_what_is_kept(loaded, images_dir, monkeypatch):
    square = str(images_dir / "gradient_square.png")
    turn_text = "The picture shows a gradient from one corner to the other. " * 30  # about 1.8 KB
    messages = [Message("user", "What is in this image?", [square])]
    for turn in range(2500):
        messages += [Message("assistant", turn_text), Message("user", f"Tell me more, part {turn}.")]
    size = sum(len(message.text) for message in messages)
    assert size > 4_000_000
    calls = count_encoded_characters(loaded, monkeypatch)
    answer, _ = run(ChatSession(loaded), messages, max_new_tokens=4)
    assert answer.output_ids
    assert answer.stats.dropped_messages > 4000
    assert answer.input_ids.count(IMAGE_TOKEN_INDEX) == 1  # the first turn's image was carried forward
    assert answer.stats.prompt_tokens + 4 <= loaded.context_length
    # Each kept turn once, one more that did not fit, and the first kept one again with the system prompt;
    # dropping one turn at a time and re-tokenizing the rest would encode the conversation thousands of times.
    kept = len(answer.prompt)
    assert sum(calls) <= 2 * kept + 2 * len(turn_text)
    assert len(calls) <= 2 * answer.prompt.count("</s>") + 20


CONVERSATIONS = {
    "plain": lambda img: [
        Message("user", "What is in this image?", [img]), Message("assistant", "A gradient. " * 20),
        Message("user", "Colours?"), Message("assistant", "Blue and red. " * 20), Message("user", "Sure?"),
    ],
    "starts with an answer, two questions in a row": lambda img: [
        Message("assistant", "Hello! " * 10), Message("user", "Look.", [img]), Message("user", "Well? " * 10),
        Message("assistant", "It is </s> a <image> picture. " * 10), Message("user", "More?", [img]),
    ],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("context", [200, 330, 420, 520, 4096])
def test_fitted_prompt_equals_rendering_the_kept_turns(loaded, images_dir, monkeypatch, name, context):
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: context))
    messages = CONVERSATIONS[name](str(images_dir / "gradient_square.png"))
    try:
        answer, _ = run(ChatSession(loaded), messages, max_new_tokens=2)
    except XvlmError as exc:
        assert "too long" in str(exc)
        return
    dropped = answer.stats.dropped_messages
    kept = messages[dropped:]
    if dropped:
        # The newest carried images that fit: when even they do not, the oldest give way.
        carried = tuple(image for message in messages[:dropped] for image in message.images)
        own = sum(len(message.images) for message in kept)
        carried = carried[len(carried) - (answer.input_ids.count(IMAGE_TOKEN_INDEX) - own) :]
        kept = [replace(kept[0], images=carried + kept[0].images), *kept[1:]]
    assert answer.prompt == render_prompt(kept)
    assert answer.input_ids == loaded.tokenizer.encode_segments(render_segments(kept))
    assert answer.stats.prompt_tokens + min(2, context // 4) <= context


# Stop works in every stage of an answer, and the session stays usable.


def assert_stopped_then_usable(loaded, session: ChatSession, answer, messages: list[Message]) -> None:
    assert answer.result.stats.stop_reason == "cancelled"
    assert answer.result.output_ids == [] and answer.result.text == ""
    again, _ = run(session, messages)
    fresh, _ = run(ChatSession(loaded), messages)
    assert again.output_ids == fresh.output_ids


def image_question(images_dir) -> list[Message]:
    return [Message("user", "What is in this image? " * 40, [str(images_dir / "shapes_wide.png")])]


def test_cancel_before_the_answer_starts(loaded, images_dir, monkeypatch):
    calls = count_encoded_characters(loaded, monkeypatch)
    cancel = threading.Event()
    cancel.set()
    session = ChatSession(loaded)
    answer = session.answer(image_question(images_dir), SamplingSettings(max_new_tokens=24), cancel=cancel)
    assert list(answer) == []
    assert calls == []
    monkeypatch.undo()
    assert_stopped_then_usable(loaded, session, answer, image_question(images_dir))


def test_cancel_while_fitting_the_context(loaded, images_dir, monkeypatch):
    messages = []
    for turn in range(30):
        messages += [Message("user", f"Question {turn}?"), Message("assistant", f"Answer {turn}.")]
    messages.append(Message("user", "Last one?"))
    cancel = threading.Event()
    calls = count_encoded_characters(loaded, monkeypatch)
    plain = loaded.tokenizer._encode_plain

    def cancel_on_first(text: str) -> list[int]:
        cancel.set()
        return plain(text)

    monkeypatch.setattr(loaded.tokenizer, "_encode_plain", cancel_on_first)
    session = ChatSession(loaded)
    answer = session.answer(messages, SamplingSettings(max_new_tokens=24), cancel=cancel)
    assert list(answer) == []
    assert len(calls) <= 3  # the turn being tokenized when Stop came, not the other 30
    monkeypatch.undo()
    assert_stopped_then_usable(loaded, session, answer, messages)


def test_cancel_while_reading_the_image(loaded, images_dir, monkeypatch):
    import xvlm_core.engines.pytorch.session as session_module

    cancel = threading.Event()
    real = session_module.read_image_bytes

    def read_then_cancel(path):
        cancel.set()
        return real(path)

    monkeypatch.setattr(session_module, "read_image_bytes", read_then_cancel)
    session = ChatSession(loaded)
    answer = session.answer(image_question(images_dir), SamplingSettings(max_new_tokens=24), cancel=cancel)
    assert list(answer) == []
    assert answer.result.stats.images_encoded == 0
    monkeypatch.undo()
    assert_stopped_then_usable(loaded, session, answer, image_question(images_dir))


def test_cancel_while_encoding_the_image(loaded, images_dir, monkeypatch):
    cancel = threading.Event()
    encoded = []
    real = loaded.model.encode_images

    def preprocess_then_cancel(image):
        cancel.set()
        return real_preprocess(image)

    real_preprocess = loaded.preprocess
    monkeypatch.setattr(loaded, "preprocess", preprocess_then_cancel)
    monkeypatch.setattr(loaded.model, "encode_images", lambda pixels: encoded.append(pixels) or real(pixels))
    session = ChatSession(loaded)
    answer = session.answer(image_question(images_dir), SamplingSettings(max_new_tokens=24), cancel=cancel)
    assert list(answer) == []
    assert encoded == [] and answer.result.stats.images_encoded == 0
    monkeypatch.undo()
    assert_stopped_then_usable(loaded, session, answer, image_question(images_dir))


def test_cancel_during_prefill_stops_after_one_chunk(loaded, images_dir, monkeypatch):
    import xvlm_core.engines.pytorch.session as session_module

    monkeypatch.setattr(session_module, "PREFILL_CHUNK", 32)
    cancel = threading.Event()
    forwards = []

    def count_and_cancel(module, args, kwargs):
        forwards.append(kwargs["inputs_embeds"].shape[1])
        cancel.set()

    hook = loaded.model.language_model.register_forward_pre_hook(count_and_cancel, with_kwargs=True)
    try:
        session = ChatSession(loaded)
        answer = session.answer(image_question(images_dir), SamplingSettings(max_new_tokens=24), cancel=cancel)
        assert list(answer) == []
    finally:
        hook.remove()
    assert forwards == [32]  # of more than ten chunks
    assert session.cached and len(session.cached) == session.cache.get_seq_length() == 32
    assert_stopped_then_usable(loaded, session, answer, image_question(images_dir))


def test_chunked_prefill_gives_the_same_answer(loaded, images_dir, monkeypatch):
    import xvlm_core.engines.pytorch.session as session_module

    whole, _ = run(ChatSession(loaded), image_question(images_dir))
    monkeypatch.setattr(session_module, "PREFILL_CHUNK", 50)
    chunked, _ = run(ChatSession(loaded), image_question(images_dir))
    assert chunked.output_ids == whole.output_ids


@pytest.mark.parametrize(
    ("count", "passes"),
    [
        (1, [(0, 1)]),
        (256, [(0, 256)]),
        (331, [(0, 331)]),  # one image and a question: one float copy of each quantized layer, not two
        (383, [(0, 383)]),
        (384, [(0, 256), (256, 384)]),
        (700, [(0, 256), (256, 512), (512, 700)]),
        (1000, [(0, 256), (256, 512), (512, 768), (768, 1000)]),
    ],
)
def test_a_short_last_stretch_of_the_prefill_joins_the_pass_before(count, passes):
    from xvlm_core.engines.pytorch.session import PREFILL_CHUNK, prefill_chunks

    assert PREFILL_CHUNK == 256
    assert list(prefill_chunks(count)) == passes


def test_two_images_are_read_in_order_and_reused_by_content(loaded, images_dir, tmp_path: Path):
    square, wide = (ImageRef.from_file(images_dir / name) for name in ("gradient_square.png", "shapes_wide.png"))
    session = ChatSession(loaded)
    first, _ = run(session, [Message("user", "Compare them.", (square, wide))])
    assert first.input_ids.count(IMAGE_TOKEN_INDEX) == 2 and first.stats.images_encoded == 2
    assert first.prompt.endswith("USER: <image>\n<image>\nCompare them. ASSISTANT:")
    # The same content under another name (the history's copy) is the same image: keyed by SHA-256, not path.
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(wide.path).read_bytes())
    messages = [Message("user", "Compare them.", (square, ImageRef(wide.sha256, str(copy))))]
    again, _ = run(session, [*messages, Message("assistant", first.text), Message("user", "And now?")])
    assert again.stats.images_encoded == 0 and again.stats.reused_tokens > 2 * loaded.model.image_tokens


def test_more_images_than_the_context_allows_is_a_clear_error(loaded, images_dir, monkeypatch):
    square = ImageRef.from_file(images_dir / "gradient_square.png")
    context = 4 * loaded.model.image_tokens  # room for two images per message
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: context))
    with pytest.raises(XvlmError, match="3 images, and this model reads at most 2 per message"):
        ChatSession(loaded).answer([Message("user", "Which?", (square,) * 3)])


def test_images_carried_from_dropped_turns_give_way_when_they_no_longer_fit(loaded, images_dir, monkeypatch):
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: 2048))
    five = [str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")] * 2 + [
        str(images_dir / "gradient_square.png")]
    messages: list[Message] = []
    for turn in range(3):
        messages += [Message("user", f"Look at these, part {turn}.", five), Message("assistant", "I see them.")]
    messages.append(Message("user", "A short question."))
    session = ChatSession(loaded)
    answer, _ = run(session, messages, max_new_tokens=8)
    carried = answer.input_ids.count(IMAGE_TOKEN_INDEX)
    assert 0 < carried < 15  # the newest images that fit, not every image ever sent
    assert answer.stats.prompt_tokens + 8 <= 2048 and answer.output_ids
    messages += [Message("assistant", answer.text), Message("user", "And another.")]
    again, _ = run(session, messages, max_new_tokens=8)
    assert again.output_ids


def test_a_session_keeps_the_embeddings_of_recent_images_only(loaded, images_dir, monkeypatch):
    import xvlm_core.engines.pytorch.session as session_module

    monkeypatch.setattr(session_module, "KEPT_EMBEDDINGS", 1)
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    session = ChatSession(loaded)
    counts = []
    for image in (square, square, wide, square):
        answer, _ = run(session, [Message("user", "What is in this image?", [image])], max_new_tokens=2)
        counts.append(answer.stats.images_encoded)
    assert counts == [1, 0, 1, 1]  # the square was evicted by the wide picture, then encoded again
    assert len(session._embeddings) == 1


def test_images_looked_at_before_the_question_give_the_same_answer_without_encoding_them(loaded, golden, images_dir):
    square, wide = ImageRef.from_file(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    question = [Message("user", "What is in this image?", [square, wide])]
    expected, _ = run(ChatSession(loaded), question)
    session = ChatSession(loaded)
    assert session.look_at([square]) == 1
    assert session.look_at([square, wide]) == 1  # the square is kept from the first look
    assert session.look_at([square, wide]) == 0
    answer, _ = run(session, question)
    assert answer.output_ids == expected.output_ids
    assert answer.stats.images_encoded == 0
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        ChatSession(loaded).look_at([square], cancel)


def test_images_looked_at_are_prefilled_with_the_chat_before_them(loaded, images_dir):
    """Reading ahead runs the prompt up to the last image: the question then prefills only its own words."""
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    first = [Message("user", "What is in this image?", [square])]
    session = ChatSession(loaded)
    session.look_at([square])
    answer, _ = run(session, first)
    question_ids = loaded.tokenizer.encode_text("\nWhat is in this image? ASSISTANT:")
    assert answer.stats.prefilled_tokens == len(question_ids)
    assert answer.stats.reused_tokens == answer.stats.prompt_tokens - len(question_ids)

    chat = [*first, Message("assistant", answer.text), Message("user", "And this one?", [wide])]
    assert session.look_at([wide], before=chat[:-1]) == 1
    follow_up, _ = run(session, chat)
    expected, _ = run(ChatSession(loaded), chat)
    assert follow_up.output_ids == expected.output_ids
    assert follow_up.stats.prefilled_tokens == len(loaded.tokenizer.encode_text("\nAnd this one? ASSISTANT:"))


def test_a_look_after_another_chat_costs_a_prefill_but_never_a_wrong_answer(loaded, images_dir):
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    chat = [Message("user", "Describe it.", [square]), Message("assistant", "A square."), Message("user", "Why?")]
    expected, _ = run(ChatSession(loaded), chat)
    session = ChatSession(loaded)
    run(session, chat[:1])
    session.look_at([wide], before=[Message("user", "Something else entirely.")])  # the person switched chats
    answer, _ = run(session, chat)
    assert answer.output_ids == expected.output_ids
    assert answer.stats.reused_tokens < answer.stats.prompt_tokens // 2


def test_a_look_while_the_chat_is_not_known_encodes_and_leaves_the_cache(loaded, images_dir):
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    session = ChatSession(loaded)
    run(session, [Message("user", "Describe it.", [square])])
    cached = list(session.cached)
    assert session.look_at([wide], before=None) == 1
    assert session.cached == cached and session.language.length == len(cached)


def test_a_look_the_conversation_cannot_hold_reads_nothing_and_the_question_says_why(loaded, images_dir, monkeypatch):
    context = 2 * loaded.model.image_tokens  # room for one image per message
    monkeypatch.setattr(type(loaded), "context_length", property(lambda self: context))
    session = ChatSession(loaded)
    square, wide = str(images_dir / "gradient_square.png"), str(images_dir / "shapes_wide.png")
    assert session.look_at([square, wide]) == 0 and session.cached == []
    with pytest.raises(XvlmError, match="2 images, and this model reads at most 1 per message"):
        run(session, [Message("user", "Compare them.", [square, wide])])
