"""vLLM's OpenAI server with the plugin answers as `xvlm serve` does, through the official `openai` client."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import START_WAIT_S, wait_for
from vllm_support import (
    APP_PYTHON,
    CONVERSATIONS,
    MAX_TOKENS,
    PROJECT_ROOT,
    alive,
    openai_messages,
    running,
)

SERVER_CONVERSATIONS = ["text_only", "two_images", "earlier_image", "chinese"]


@pytest.fixture(scope="module")
def xvlm_url(tiny_vlm, tmp_path_factory) -> Iterator[str]:
    """`xvlm serve` from the app's environment, as the app's users run it."""
    folder = tmp_path_factory.mktemp("xvlm-serve")
    model, tower = tiny_vlm
    env = {**os.environ, "TMPDIR": str(folder), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("XVLM_API_KEY", None)
    command = [str(APP_PYTHON), "-m", "xvlm_core", "serve", "--model", str(model), "--vision-tower", str(tower),
               "--device", "cpu", "--dtype", "float32", "--port", "0"]
    log = folder / "serve.log"
    with running(command, log, env) as process:
        found: list[str] = []

        def started() -> bool:
            alive(process, log)
            found[:] = re.findall(r"on (http://127\.0\.0\.1:\d+/v1)", log.read_text(encoding="utf-8"))
            return bool(found)

        wait_for(started, "xvlm serve to start", START_WAIT_S)
        yield found[0]


def ask(url: str, name: str, stream: bool) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    system, messages = CONVERSATIONS[name]
    request = dict(model="xmodel-vlm", messages=openai_messages(system, messages), temperature=0,
                   max_tokens=MAX_TOKENS)
    if not stream:
        return client.chat.completions.create(**request).choices[0].message.content.strip()
    chunks = client.chat.completions.create(**request, stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices).strip()


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_vllm_serve_answers_as_xvlm_serve(vllm_url, xvlm_url, stream):
    for name in SERVER_CONVERSATIONS:
        answer = ask(vllm_url, name, stream)
        assert answer, name  # gibberish from random weights, but words: an empty answer would prove nothing
        assert answer == ask(xvlm_url, name, stream), name


@pytest.mark.slow
def test_eight_concurrent_streams_each_get_their_one_at_a_time_answer(vllm_url):
    names = [SERVER_CONVERSATIONS[i % len(SERVER_CONVERSATIONS)] for i in range(8)]
    alone = {name: ask(vllm_url, name, stream=True) for name in SERVER_CONVERSATIONS}
    assert all(alone.values())
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda name: ask(vllm_url, name, stream=True), names))
    assert together == [alone[name] for name in names]
