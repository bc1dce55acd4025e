"""`xvlm serve` on the tiny checkpoint, used through the official `openai` client as a user's script would."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import openai
import pytest
from serving import ServedModel, wait_for, xvlm_serve

from xvlm_core.cli import main

API_KEY = "test-key-1234"
QUESTION = "What is in this image?"


@dataclass
class Server:
    url: str
    served: ServedModel
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, api_key: str = API_KEY) -> openai.OpenAI:
        # No retries: a test must see the server's first answer, not a retried one.
        client = openai.OpenAI(base_url=self.url, api_key=api_key, max_retries=0, timeout=60)
        self.clients.append(client)  # closed with the server: an unclosed connection pool warns
        return client

    def log_lines(self) -> list[str]:
        return self.served.log_lines()


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, tiny_tower_dir) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    with xvlm_serve(folder, tiny_model_dir, tiny_tower_dir, "--api-key", API_KEY) as served:
        running = Server(served.url, served)
        yield running
        for client in running.clients:
            client.close()
    # The images clients sent lived in a private folder that shutting down removes.
    assert not list(folder.glob("xvlm-serve-*"))


def _data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _question(image: Path, text: str = QUESTION) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": _data_url(image)}}]}


def _ask_json(capsys, model: Path, tower: Path, image: Path, question: str, tokens: int) -> dict:
    code = main(["ask", "--model", str(model), "--vision-tower", str(tower), "--device", "cpu", "--dtype", "float32",
                 "--max-new-tokens", str(tokens), "--image", str(image), "--json", question])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_lists_the_loaded_model(server):
    models = server.client().models.list()
    assert [model.id for model in models.data] == ["xmodel-vlm-tiny"]
    card = models.data[0].model_dump()
    assert card["context_length"] == 4096
    assert card["batch_size"] == 1


def test_streamed_answer_about_an_image_equals_xvlm_ask(server, capsys, tiny_model_dir, tiny_tower_dir, images_dir):
    image = images_dir / "shapes_wide.png"
    expected = _ask_json(capsys, tiny_model_dir, tiny_tower_dir, image, QUESTION, 24)

    stream = server.client().chat.completions.create(
        model="xmodel-vlm-tiny", messages=[_question(image)], max_tokens=24, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == expected["text"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == len(expected["output_ids"]) == 24
    assert chunks[-1].usage.prompt_tokens == expected["stats"]["prompt_tokens"]


def test_answer_with_usage_not_streamed(server, images_dir):
    completion = server.client().chat.completions.create(
        model="xmodel-vlm-tiny", messages=[_question(images_dir / "gradient_square.png")], max_completion_tokens=8,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    usage = completion.usage
    assert usage.completion_tokens == 8
    assert usage.prompt_tokens > 144  # the image alone is 144 positions
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_resent_conversation_reuses_the_cache(server, images_dir):
    client = server.client()
    first_turn = [{"role": "system", "content": "You describe pictures."},
                  _question(images_dir / "gradient_square.png", "Describe the colours.")]
    first = client.chat.completions.create(model="xmodel-vlm-tiny", messages=first_turn, max_tokens=12)
    conversation = [*first_turn, {"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "And the shapes?"}]
    second = client.chat.completions.create(model="xmodel-vlm-tiny", messages=conversation, max_tokens=12)

    # The new request prefills only what is new: the first turn, image included, comes from the cache.
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert first.usage.prompt_tokens <= cached < second.usage.prompt_tokens
    assert second.usage.prompt_tokens - cached < 40


def test_two_concurrent_streams_both_complete(server, images_dir):
    client = server.client()
    questions = [[_question(images_dir / "gradient_square.png", "First?")],
                 [_question(images_dir / "shapes_wide.png", "Second?")]]
    texts: dict[int, str] = {}
    finishes: dict[int, str | None] = {}

    def stream(index: int) -> None:
        parts = []
        for chunk in client.chat.completions.create(model="xmodel-vlm-tiny", messages=questions[index],
                                                     max_tokens=40, stream=True):
            parts.append(chunk.choices[0].delta.content or "")
            finishes[index] = chunk.choices[0].finish_reason
        texts[index] = "".join(parts)

    threads = [threading.Thread(target=stream, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert finishes == {0: "length", 1: "length"}
    # Served one after the other, each answer is the one it gets alone.
    for index in (0, 1):
        alone = client.chat.completions.create(model="xmodel-vlm-tiny", messages=questions[index], max_tokens=40)
        assert texts[index] == alone.choices[0].message.content


def test_client_that_drops_mid_stream_cancels_its_answer(server):
    client = server.client()
    long_answer = [{"role": "user", "content": "Tell me a very long story about a dropped connection."}]
    with client.chat.completions.create(model="xmodel-vlm-tiny", messages=long_answer, max_tokens=3500,
                                        stream=True) as stream:
        next(iter(stream))
    # The next request is answered, and the dropped one stopped early instead of generating 3500 tokens.
    after = client.chat.completions.create(model="xmodel-vlm-tiny", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4)
    assert after.choices[0].finish_reason == "length"

    def dropped_line() -> list[str]:
        return [line for line in server.log_lines() if "finish=cancelled" in line]

    wait_for(dropped_line, "the log line of the dropped request")
    completion = int(re.search(r"completion=(\d+)", dropped_line()[0]).group(1))
    assert completion < 3500


def test_wrong_or_missing_api_key_is_401(server):
    with pytest.raises(openai.AuthenticationError) as error:
        server.client(api_key="wrong").models.list()
    assert error.value.status_code == 401
    assert error.value.code == "invalid_api_key"
    response = httpx2.get(f"{server.url}/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def _post(server: Server, body: bytes) -> httpx2.Response:
    return httpx2.post(f"{server.url}/chat/completions", content=body, timeout=60,
                       headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"})


def test_bad_json_is_400_in_openai_shape(server):
    response = _post(server, b'{"messages": [')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_unknown_fields_are_tolerated(server):
    completion = server.client().chat.completions.create(
        model="any-name", messages=[{"role": "user", "content": "Hello"}], max_tokens=3, frequency_penalty=0.5,
        extra_body={"something_new": {"a": 1}},
    )
    assert completion.choices[0].message.content


def test_a_file_that_is_not_an_image_is_400(server):
    not_an_image = "data:image/png;base64," + base64.b64encode(b"just some text").decode()
    with pytest.raises(openai.BadRequestError) as error:
        server.client().chat.completions.create(model="xmodel-vlm-tiny", messages=[
            {"role": "user", "content": [{"type": "text", "text": "What?"},
                                         {"type": "image_url", "image_url": {"url": not_an_image}}]}])
    assert error.value.code == "invalid_image"
    assert "not an image file" in error.value.message


def test_a_question_longer_than_the_context_is_400_with_the_counts(server):
    with pytest.raises(openai.BadRequestError) as error:
        server.client().chat.completions.create(
            model="xmodel-vlm-tiny", messages=[{"role": "user", "content": "hello " * 5000}], stream=True,
        )
    assert re.search(r"\d+ tokens, and it reads at most 4096", error.value.message)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n"),
        ({"messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]},
         "messages[0].content[0].image_url"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}]}]},
         "messages[0].content[0].image_url"),
    ],
)
def test_bad_requests_name_the_field(server, body, param):
    response = _post(server, json.dumps(body).encode())
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_unknown_route_and_method_are_json_errors(server):
    headers = {"authorization": f"Bearer {API_KEY}"}
    assert httpx2.get(f"{server.url}/completions", headers=headers).json()["error"]["message"]
    response = httpx2.get(f"{server.url}/chat/completions", headers=headers)
    assert response.status_code == 405
    assert "not allowed" in response.json()["error"]["message"]


def test_log_has_one_line_per_request_and_no_message_text(server):
    client = server.client()
    secret = "my-private-question-xyzzy"
    before = len(server.log_lines())
    client.chat.completions.create(model="xmodel-vlm-tiny", messages=[{"role": "user", "content": secret}],
                                   max_tokens=3)
    client.models.list()
    wait_for(lambda: len(server.log_lines()) >= before + 2, "two log lines")
    lines = server.log_lines()[before:]
    assert len(lines) == 2
    assert "POST /v1/chat/completions 200" in lines[0]
    assert "prompt=" in lines[0]
    assert "GET /v1/models 200" in lines[1]
    assert not any(secret in line for line in server.log_lines())


def test_log_lines_carry_a_time_and_outside_text_cannot_forge_them(server):
    port = int(server.url.rsplit(":", 1)[1].split("/")[0])
    before = len(server.log_lines())
    forged = "/v1/models%0D%0A2030-01-01T00:00:00+0000%20INFO%20127.0.0.1%20GET%20/v1/admin%20200%1B[2J"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"GET {forged} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 404")
    wait_for(lambda: any(" 404 " in line for line in server.log_lines()[before:]), "the request's log line")
    lines = server.log_lines()
    [line] = lines[before:]
    assert "\\x0d\\x0a2030-01-01T00:00:00+0000 INFO" in line
    assert not any("\x1b" in line for line in lines)
    # Every line starts with its own time: a record's further lines (a traceback's) start with spaces.
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} [A-Z]+ ", line) or line.startswith("    ")
               for line in lines)


def test_a_temperature_too_small_to_divide_by_answers_greedily(server):
    def ask(temperature: float) -> httpx2.Response:
        body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": temperature}
        return _post(server, json.dumps(body).encode())

    tiny = ask(1e-320)
    assert tiny.status_code == 200
    assert tiny.json()["choices"][0]["message"]["content"] == ask(0).json()["choices"][0]["message"]["content"]
