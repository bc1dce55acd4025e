"""What the vLLM plugin's tests share: the tiny model's shape, the conversations, and how each side is started."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP_PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"
IMAGES = PROJECT_ROOT.parent / "shared" / "fixtures" / "images"
TOKENIZER = PROJECT_ROOT.parent / "shared" / "fixtures" / "xmodel-vlm-tiny" / "xmodel_32000.model"
MAX_TOKENS = 12
# vLLM's CPU attention takes heads at least 32 wide: language 128 / 4 heads (2 KV heads), tower 64 / 2 heads.
LANGUAGE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2}
TOWER = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2}
# The engine in this process, small: its KV cache in 256 MB rather than most of the machine's memory.
ENGINE_OPTIONS = {"tokenizer_mode": "xvlm", "dtype": "float32", "enforce_eager": True, "seed": 0,
                  "max_model_len": 4096, "kv_cache_memory_bytes": 256 * 2**20}
# One process (faster to start, simpler to stop), and no usage report leaves the machine.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


def image(name: str) -> str:
    return str(IMAGES / name)


# The conversations both engines answer: (name, system prompt or None, messages with image paths).
CONVERSATIONS = {
    "text_only": (None, [{"role": "user", "content": "Tell me a story about the sea."}]),
    "one_image": (None, [{"role": "user", "content": "What is in the picture?", "images": [image("shapes_wide.png")]}]),
    "two_images": (None, [{"role": "user", "content": "Compare the two pictures.",
                           "images": [image("gradient_square.png"), image("shapes_wide.png")]}]),
    "earlier_image": (None, [
        {"role": "user", "content": "What shapes are there?", "images": [image("shapes_wide.png")]},
        {"role": "assistant", "content": "A circle and a square."},
        {"role": "user", "content": "Which one is larger?"},
    ]),
    "chinese": ("你是一个乐于助人的助手。", [{"role": "user", "content": "请描述一下大海。"}]),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def vllm_server_command(model: Path, tower: Path, port: int) -> list[str]:
    """`vllm serve` as a team runs it, through the module (a build's console script may be missing)."""
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--tokenizer-mode", "xvlm", "--hf-overrides", json.dumps({"mm_vision_tower": str(tower)}),
            "--dtype", "float32", "--enforce-eager", "--max-model-len", "4096",
            "--kv-cache-memory-bytes", str(256 * 2**20), "--served-model-name", "xmodel-vlm",
            "--host", "127.0.0.1", "--port", str(port)]


def openai_messages(system: str | None, messages: list[dict]) -> list[dict]:
    """A conversation as an OpenAI client sends it: images as data URLs before the text, as the app sends them."""
    sent = [{"role": "system", "content": system}] if system else []
    for message in messages:
        parts = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                     + base64.b64encode(Path(path).read_bytes()).decode()}}
                 for path in message.get("images", [])]
        content = [*parts, {"type": "text", "text": message["content"]}] if parts else message["content"]
        sent.append({"role": message["role"], "content": content})
    return sent


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """Run `command` with its output in `log` until the block ends; then stop it, killing it if it will not stop."""
    with log.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   env=env, cwd=PROJECT_ROOT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def alive(process: subprocess.Popen, log: Path) -> None:
    if process.poll() is not None:
        pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text(encoding='utf-8')[-4000:]}")


def xvlm_answers(model: Path, tower: Path, conversations: list[tuple[str | None, list[dict]]], folder: Path
                 ) -> list[dict]:
    """Each conversation's input ids, output ids and text from `xvlm_core` in .venv, greedy, MAX_TOKENS long."""
    if not APP_PYTHON.exists():
        pytest.fail(f"{APP_PYTHON} is missing: run `sh tools/setup-venv test` first; these tests compare with it.")
    path = folder / "conversations.json"
    path.write_text(json.dumps([
        {"messages": messages, **({"system": system} if system else {})} for system, messages in conversations
    ]), encoding="utf-8")
    done = subprocess.run([str(APP_PYTHON), str(Path(__file__).with_name("xvlm_reference.py")), str(model), str(tower),
                           str(path), str(MAX_TOKENS)], capture_output=True, text=True, timeout=240, check=False,
                          cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
