"""The llama.cpp engine: the same logits as PyTorch's, the same conversation rules, a safe file cache."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from xvlm_core.engines import choice
from xvlm_core.engines.choice import chosen_engine
from xvlm_core.engines.llama_cpp import gguf_export, runner
from xvlm_core.engines.llama_cpp import loading as llama_cpp_loading
from xvlm_core.engines.llama_cpp.loading import load_model as load_llama_cpp
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
from xvlm_core.errors import Cancelled, EngineUnavailable, Remedy, XvlmError
from xvlm_core.load_options import LoadOptions
from xvlm_core.model.images import load_image
from xvlm_core.model.prompt import Message
from xvlm_core.sampling import SamplingSettings

QUESTION = "What is in this image?"


@pytest.fixture(scope="module")
def exact(tiny_model_dir, tiny_tower_dir):
    return load_model(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32")


@pytest.fixture
def load(tiny_model_dir, tiny_tower_dir):
    def loader(quantize: str = "none"):
        return load_llama_cpp(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32", quantize=quantize)

    return loader


def teacher_forced(exact, loaded, images_dir) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits at every position of text, an image's 144 embeddings, then text: PyTorch's and
    llama.cpp's (fed one position at a time, so each position's logits come out), [positions, vocab] each."""
    pixels = exact.preprocess(load_image(images_dir / "gradient_square.png"))
    image = exact.model.encode_images(pixels)[0]  # [144, hidden]
    before = exact.tokenizer.encode_text("A chat about a picture. USER:")
    after = exact.tokenizer.encode_text(" Describe the colours you see in it. ASSISTANT: It is a square")
    embed = exact.model.language_model.get_input_embeddings()
    with torch.inference_mode():
        embeds = torch.cat([embed(torch.tensor(before)), image, embed(torch.tensor(after))]).unsqueeze(0)
        reference = exact.model.language_model(inputs_embeds=embeds).logits[0].float()
    language = loaded.open_language()
    rows = [language.prefill([[token]], lambda done: None) for token in before]
    rows += [language.prefill([image[index : index + 1]], lambda done: None) for index in range(image.shape[0])]
    rows += [language.step(token) for token in after]
    return reference, torch.cat(rows)


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean over positions of |got - reference| / |reference| (Euclidean norms of each logits row)."""
    return float(((got - reference).norm(dim=-1) / reference.norm(dim=-1)).mean())


def test_exact_logits_match_pytorch_on_text_and_image_positions(exact, load, images_dir):
    reference, got = teacher_forced(exact, load(), images_dir)
    assert got.shape == reference.shape
    # float32 weights and cache on both sides: the difference is float32 rounding in another order.
    assert float((got - reference).abs().max()) <= 1e-4 * float(reference.abs().max())
    assert torch.equal(got.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize(("quantize", "bound", "agreement"), [("int8", 0.1, 0.8), ("int4", 0.5, 0.4)])
def test_quantized_files_answer_within_a_bounded_error(exact, load, images_dir, quantize, bound, agreement):
    # Random tiny weights are far harder on quantization than trained ones: these bounds only catch a broken
    # file (wrong layout, wrong scales), whose error is near 1 and agreement near chance.
    loaded = load(quantize)
    assert loaded.quantize == quantize and loaded.engine == "llama.cpp"
    # The tiny model's rows (64, 176 wide) are too short for Q4_K's blocks of 256: llama.cpp falls back to
    # Q5_0 and Q8_0 there, as its quantizer does for any such tensor; the full-size model gets Q4_K.
    assert "Q" in gguf_export.weight_types(loaded.language_file)
    reference, got = teacher_forced(exact, loaded, images_dir)
    assert relative_error(got, reference) < bound
    assert float((got.argmax(-1) == reference.argmax(-1)).float().mean()) >= agreement
    answer = ChatSession(loaded).answer([Message("user", QUESTION)], SamplingSettings(max_new_tokens=8))
    assert list(answer) and answer.result.stats.output_tokens == 8


def test_greedy_chat_reuses_the_cache_and_answers_as_pytorch_and_a_fresh_session(exact, load, images_dir):
    loaded = load()
    square = str(images_dir / "gradient_square.png")
    settings = SamplingSettings(max_new_tokens=16)
    session = ChatSession(loaded)
    first = session.answer([Message("user", QUESTION, [square])], settings)
    first_text = "".join(first)
    on_pytorch = ChatSession(exact).answer([Message("user", QUESTION, [square])], settings)
    assert first_text == "".join(on_pytorch)
    follow_up = [Message("user", QUESTION, [square]), Message("assistant", first_text), Message("user", "Sure?")]
    second = session.answer(follow_up, settings)
    second_text = "".join(second)
    assert second.result.stats.reused_tokens > 144
    assert second.result.stats.prefilled_tokens < second.result.stats.prompt_tokens - 144
    fresh = ChatSession(loaded).answer(follow_up, settings)
    assert second_text == "".join(fresh) and fresh.result.stats.reused_tokens == 0


def test_a_picture_read_ahead_is_prefilled_in_llama_cpp_and_answered_as_a_fresh_session(load, images_dir):
    loaded = load()
    square = str(images_dir / "gradient_square.png")
    settings = SamplingSettings(max_new_tokens=16)
    session = ChatSession(loaded)
    assert session.look_at([square]) == 1
    ahead = session.answer([Message("user", QUESTION, [square])], settings)
    text = "".join(ahead)
    assert ahead.result.stats.prefilled_tokens == len(loaded.tokenizer.encode_text(f"\n{QUESTION} ASSISTANT:"))
    assert text == "".join(ChatSession(loaded).answer([Message("user", QUESTION, [square])], settings))


def test_cancel_mid_answer_stops_and_leaves_the_session_usable(load):
    loaded = load()
    cancel = threading.Event()
    session = ChatSession(loaded)
    messages = [Message("user", QUESTION)]
    answer = session.answer(messages, SamplingSettings(max_new_tokens=40), cancel=cancel)
    for _ in answer:
        cancel.set()
    assert answer.result.stats.stop_reason == "cancelled"
    assert answer.result.stats.output_tokens < 40
    settings = SamplingSettings(max_new_tokens=12)
    assert "".join(session.answer(messages, settings)) == "".join(ChatSession(loaded).answer(messages, settings))


def test_the_converted_file_is_reused_and_a_partial_one_never_is(load, monkeypatch):
    load()
    folder, write_gguf = gguf_export.cache_dir(), gguf_export.write_gguf
    (converted,) = folder.glob("*.gguf")
    written = converted.stat().st_ino
    os.utime(converted, (1, 1))

    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_export, "write_gguf", must_not_convert)
    assert load().language_file == converted
    assert converted.stat().st_ino == written  # the same file, not one written again
    assert converted.stat().st_mtime > time.time() - 60  # marked as used, for the cache's pruning

    # A conversion stopped halfway (a quit, a full disk) leaves neither a file under the final name nor its part.
    converted.unlink()

    def stopped_halfway(path, *args):
        path.write_bytes(b"GGUF" + bytes(100))
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_export, "write_gguf", stopped_halfway)
    with pytest.raises(KeyboardInterrupt):
        load()
    assert list(folder.iterdir()) == []
    monkeypatch.setattr(gguf_export, "write_gguf", write_gguf)
    assert load().language_file == converted and converted.stat().st_size > 1_000_000


def test_the_cache_keeps_the_most_recently_used_files_and_removes_what_a_killed_process_left(tmp_path, monkeypatch):
    now = time.time()

    def cached(name: str, hours_ago: float) -> Path:
        path = tmp_path / name
        path.write_bytes(b"GGUF")
        os.utime(path, (now - hours_ago * 3600, now - hours_ago * 3600))
        return path

    names = [f"{digit}" * 32 + ".gguf" for digit in "0123456"]
    loading = cached(names[0], 30)  # the file being loaded, last used long ago: kept whatever its age
    recent = [cached(names[1], 0.1), cached(names[2], 0.2)]  # the two most recently used besides it
    in_use = cached(names[3], 0.3)  # one more, used within the hour: maybe by another process loading it now
    old = [cached(names[4], 2), cached(names[5], 48)]
    partial_left = cached("." + "a" * 32 + ".x1y2.partial", 5)  # a conversion a killed process left
    partial_now = cached("." + "b" * 32 + ".x3y4.partial", 0)  # another process is writing this one
    others = [cached("notes.txt", 100), cached("ABC.gguf", 100)]  # not the cache's names: never touched
    (tmp_path / ("6" * 32 + ".gguf")).mkdir()

    removed = gguf_export.prune(tmp_path, keep=[loading])
    assert sorted(removed) == sorted([*old, partial_left])
    assert all(path.exists() for path in [loading, *recent, in_use, partial_now, *others])
    assert gguf_export.prune(tmp_path, keep=[loading]) == []

    # A file another program holds (Windows refuses to remove it) stays until the next time; the load goes on.
    stubborn = cached(names[4], 72)

    def refused(self, missing_ok=False):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", refused)
    assert gguf_export.prune(tmp_path, keep=[loading]) == []
    assert stubborn.exists()
    assert gguf_export.prune(tmp_path / "missing") == []


def test_a_load_prunes_the_cache(load):
    folder = gguf_export.cache_dir()
    folder.mkdir(parents=True)
    old = [folder / (f"{digit}" * 32 + ".gguf") for digit in "123"]
    for age, path in enumerate(old, start=2):
        path.write_bytes(b"GGUF")
        os.utime(path, (time.time() - age * 3600, time.time() - age * 3600))
    converted = load().language_file
    # The new file and the two most recently used before it are kept; the third is not.
    assert sorted(folder.iterdir()) == sorted([converted, *old[:2]])


def test_a_full_disk_is_a_clear_error(load, monkeypatch):
    def disk_full(path, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_export, "write_gguf", disk_full)
    with pytest.raises(XvlmError, match="disk is full") as raised:
        load()
    assert raised.value.code.value == "free_disk"
    assert list(gguf_export.cache_dir().iterdir()) == []


def test_the_engine_says_what_it_cannot_do(tiny_model_dir, tiny_tower_dir, monkeypatch):
    with pytest.raises(EngineUnavailable, match="CPU only") as raised:
        load_llama_cpp(str(tiny_model_dir), str(tiny_tower_dir), device="cuda")
    assert raised.value.code is Remedy.CHOOSE_DEVICE
    with pytest.raises(ValueError, match="not an engine"):
        LoadOptions(engine="onnx")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(EngineUnavailable, match="'llamacpp' extra"):
        load_llama_cpp(str(tiny_model_dir), str(tiny_tower_dir))


def test_automatic_is_llama_cpp_on_the_cpu_where_it_is_installed(monkeypatch):
    assert LoadOptions().with_defaults().engine == "auto"
    assert chosen_engine("auto", "cpu") == chosen_engine("auto", "auto") == "llama.cpp"  # no GPU here
    assert chosen_engine("auto", "cuda") == chosen_engine("auto", "mps") == "pytorch"
    assert chosen_engine("pytorch", "cpu") == "pytorch"
    monkeypatch.setattr(choice.importlib.util, "find_spec", lambda name: None)
    assert chosen_engine("auto", "cpu") == "pytorch"
    assert chosen_engine("llama.cpp", "cpu") == "llama.cpp"  # named: its own error says it is not installed


def test_automatic_gives_way_to_pytorch_where_llama_cpp_cannot_take_the_model(
    tiny_model_dir, tiny_tower_dir, monkeypatch
):
    def disk_full(path, *args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf_export, "write_gguf", disk_full)
    loaded = choice.load_on_engine(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32")
    assert loaded.engine == "pytorch" and loaded.language_file is None
    answer = "".join(ChatSession(loaded).answer([Message("user", QUESTION)], SamplingSettings(max_new_tokens=4)))
    assert answer
    with pytest.raises(EngineUnavailable, match="disk is full") as raised:  # named, its error is the answer
        choice.load_on_engine(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32", engine="llama.cpp")
    assert raised.value.code is Remedy.FREE_DISK


def test_cancelling_the_conversion_is_not_a_reason_to_fall_back(tiny_model_dir, tiny_tower_dir):
    def on_stage(stage: str) -> None:
        if "llama.cpp" in stage:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        choice.load_on_engine(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32", on_stage=on_stage)


def test_a_pytorch_bin_checkpoint_converts_to_the_same_answers(load, tiny_model_bin_dir, tiny_tower_dir):
    from_bin = load_llama_cpp(str(tiny_model_bin_dir), str(tiny_tower_dir), dtype="float32")
    settings = SamplingSettings(max_new_tokens=12)
    messages = [Message("user", QUESTION)]
    assert "".join(ChatSession(from_bin).answer(messages, settings)) == "".join(
        ChatSession(load()).answer(messages, settings)
    )


def test_bench_names_the_engine_and_compares_its_quantized_distributions(capsys, tiny_model_dir, tiny_tower_dir):
    import json

    from xvlm_core.cli import main

    args = ["bench", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), "--dtype", "float32"]
    assert main([*args, "--engine", "llama.cpp", "--quantize", "int8", "--turns", "2", "--new-tokens", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["engine"] == "llama.cpp" and result["kernels"].startswith("llama.cpp: ")
    assert 0 < result["weights_read_per_token_gb"] < 0.01 and result["decode_tok_s"] > 0
    assert result["turn2_prefilled_tokens"] < result["turn2_prompt_tokens"] - 144
    # Teacher-forced against the exact PyTorch model over the whole first prompt.
    assert result["quality_positions"] == result["prompt_tokens"] > 200
    assert 0.8 <= result["quality_top1_agreement"] <= 1 and result["quality_mean_kl"] > 0


def test_a_llama_cpp_compiled_for_another_processor_is_never_run_and_automatic_gives_way(
    tiny_model_dir, tiny_tower_dir, monkeypatch
):
    import llama_cpp

    folder = Path(llama_cpp.__file__).parent / "lib"
    assert runner.instructions_missing(folder) == []  # compiled here, for this processor
    baseline = {"pni", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"}  # an older desktop, without AVX-512
    missing = runner.instructions_missing(folder, baseline)
    assert all(flag.startswith(("avx512", "amx", "avx_vnni")) for flag in missing)
    assert runner.instructions_missing(folder, set()) != []  # no processor runs every instruction set
    monkeypatch.setattr(runner, "cpu_flags", lambda: set())
    monkeypatch.setattr(runner, "_llama_log_callback", None)  # as in a process that has not started llama.cpp yet
    with pytest.raises(EngineUnavailable, match="compiled for a processor with"):
        runner.llama_cpp_module()
    assert choice.load_on_engine(str(tiny_model_dir), str(tiny_tower_dir), dtype="float32").engine == "pytorch"


@pytest.mark.parametrize(("bf16_instructions", "expected"), [(True, torch.bfloat16), (False, torch.float16)])
def test_the_exact_file_is_16_bit_unless_a_precision_is_asked_for(monkeypatch, bf16_instructions, expected):
    """PyTorch's float32 on a processor without bf16 instructions would have llama.cpp read twice the bytes a token."""
    monkeypatch.setattr(llama_cpp_loading, "cpu_supports_bf16", lambda: bf16_instructions)
    assert llama_cpp_loading.language_dtype("auto", torch.float32) == expected
    assert llama_cpp_loading.language_dtype("float32", torch.float32) == torch.float32
    assert llama_cpp_loading.language_dtype("bfloat16", torch.bfloat16) == torch.bfloat16


def test_the_summary_names_the_language_models_number_format(tiny_model_dir, tiny_tower_dir, monkeypatch):
    monkeypatch.setattr(llama_cpp_loading, "cpu_supports_bf16", lambda: False)
    loaded = load_llama_cpp(str(tiny_model_dir), str(tiny_tower_dir))
    assert loaded.summary()["dtype"] == "float16" and "F16 x" in gguf_export.weight_types(loaded.language_file)
    answer = ChatSession(loaded).answer([Message("user", QUESTION)], SamplingSettings(max_new_tokens=4))
    list(answer)
    assert 1 <= len(answer.result.output_ids) <= 4
