"""`xvlm bench --server URL`: how fast an OpenAI-compatible server answers N people at once.

At each level, N clients each send one streamed chat request at the same moment: a photo-like image of its own (so
that no request is answered from a cache another one filled) and the bench's question of about 60 tokens, greedy,
a fixed number of tokens. One untimed request comes first (a server's first answer touches fresh memory). Reported
per level: aggregate output tokens/s (all tokens over the wall time from the first request sent to the last token
received, reading the images and prompts included), aggregate decode tokens/s (the tokens after each stream's first
over the time at least one stream was decoding), per-stream decode tokens/s (each stream's tokens after its first
over the time they took), time to first token (median and p90) and the errors, by what happened.
Works the same for `xvlm serve`, vLLM or any other server.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from xvlm_core.errors import XvlmError

MAX_LINE = 1 << 20  # one event-stream line; a server's chunk of one token is far smaller
MAX_ERROR_BODY = 4096
MAX_LISTED_MODELS = 4 << 20


class BenchError(XvlmError):
    """The server could not be measured at all (unreachable, no model); the message says what to check."""


@dataclass(frozen=True)
class Server:
    """Where to send requests: `url` is the API's base (http://HOST:PORT/v1)."""

    url: str
    api_key: str = ""
    timeout_s: float = 600.0  # the longest one request may take, from sending to its last token

    def connect(self) -> http.client.HTTPConnection:
        parts = urllib.parse.urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout_s)

    def path(self, endpoint: str) -> str:
        return urllib.parse.urlsplit(self.url).path.rstrip("/") + endpoint

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


@dataclass(frozen=True)
class Outcome:
    """One request: when it was sent, its first and last token arrived (seconds, one clock), how many tokens."""

    sent: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    error: str = ""


def photo(seed: int) -> bytes:
    """A 640x480 photo-like PNG (smooth gradients plus noise), different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    pixels = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], axis=-1)
    pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def request_body(model: str, question: str, image: bytes, max_tokens: int) -> bytes:
    image_url = "data:image/png;base64," + base64.b64encode(image).decode()
    return json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                                  {"type": "text", "text": question}]}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()


def served_model(server: Server) -> str:
    """The first model the server lists at /models."""
    connection = server.connect()
    try:
        connection.request("GET", server.path("/models"), headers=server.headers())
        response = connection.getresponse()
        body = response.read(MAX_LISTED_MODELS + 1)
        if response.status != 200:
            raise BenchError(f"The server at {server.url} answered /models with HTTP {response.status}: "
                             f"{body[:200].decode(errors='replace')}. Check the address and the API key.")
        models = [entry.get("id") for entry in json.loads(body).get("data", []) if isinstance(entry, dict)]
    except (OSError, http.client.HTTPException, ValueError, AttributeError) as exc:
        raise BenchError(f"Cannot list the models of the server at {server.url} ({exc}). Check that it runs and "
                         "that the address ends in /v1.") from exc
    finally:
        connection.close()
    if not models or not isinstance(models[0], str):
        raise BenchError(f"The server at {server.url} lists no model. Name one with --server-model.")
    return models[0]


def event_lines(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The `data:` payloads of an event stream, each line bounded."""
    while True:
        line = response.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ValueError(f"an event-stream line longer than {MAX_LINE} bytes")
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return
            yield payload


def stream_one(server: Server, body: bytes, clock: Callable[[], float] = time.monotonic) -> Outcome:
    """Send one streamed request and time its tokens: the usage's count when the server gives one, else the pieces."""
    sent = clock()
    first = last = None
    pieces = 0
    usage_tokens: int | None = None
    connection = server.connect()
    try:
        connection.request("POST", server.path("/chat/completions"), body=body, headers=server.headers())
        response = connection.getresponse()
        if response.status != 200:
            said = response.read(MAX_ERROR_BODY).decode(errors="replace").strip()
            return Outcome(sent, error=f"HTTP {response.status}: {said[:200]}")
        for payload in event_lines(response):
            chunk = json.loads(payload)
            if isinstance(chunk.get("usage"), dict):
                usage_tokens = int(chunk["usage"].get("completion_tokens", 0))
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    now = clock()
                    first = now if first is None else first
                    last = now
                    pieces += 1
            if clock() - sent > server.timeout_s:
                return Outcome(sent, first, last, pieces, error=f"took longer than {server.timeout_s:g} s")
    except (OSError, http.client.HTTPException, ValueError, AttributeError, TypeError) as exc:
        return Outcome(sent, first, last, pieces, error=f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    if first is None:
        return Outcome(sent, error="the answer was empty")
    return Outcome(sent, first, last, usage_tokens if usage_tokens else pieces)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def busy_time(spans: list[tuple[float, float]]) -> float:
    """How long at least one of the spans was under way (their union's length)."""
    total, reached = 0.0, float("-inf")
    for begin, end in sorted(spans):
        if end > reached:
            total += end - max(begin, reached)
            reached = end
    return total


def summarize(clients: int, outcomes: list[Outcome]) -> dict[str, object]:
    """One level's figures; rates from the requests that finished, errors counted by what happened."""
    done = [o for o in outcomes if not o.error]
    errors: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.error:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1
    level: dict[str, object] = {"clients": clients, "requests": len(outcomes), "errors": len(outcomes) - len(done),
                                "error_kinds": errors}
    if not done:
        return level
    start, end = min(o.sent for o in outcomes), max(o.last for o in done)
    tokens = sum(o.tokens for o in done)
    ttfts = [o.first - o.sent for o in done]
    streams = [(o.tokens - 1) / (o.last - o.first) for o in done if o.tokens > 1 and o.last > o.first]
    decoding = busy_time([(o.first, o.last) for o in done])
    level.update({
        "output_tokens": tokens,
        "wall_s": end - start,
        "aggregate_tok_s": tokens / (end - start),
        "aggregate_decode_tok_s": sum(o.tokens - 1 for o in done) / decoding if decoding > 0 else None,
        "per_stream_decode_tok_s_median": statistics.median(streams) if streams else None,
        "per_stream_decode_tok_s_min": min(streams) if streams else None,
        "ttft_s_median": statistics.median(ttfts),
        "ttft_s_p90": percentile(ttfts, 0.9),
    })
    return level


def run_level(server: Server, model: str, question: str, clients: int, max_tokens: int, seed: int) -> list[Outcome]:
    """`clients` requests at once, each with an image of its own (seeds seed, seed+1, ...)."""
    bodies = [request_body(model, question, photo(seed + i), max_tokens) for i in range(clients)]
    together = threading.Barrier(clients)

    def client(body: bytes) -> Outcome:
        together.wait(timeout=server.timeout_s)
        return stream_one(server, body)

    with ThreadPoolExecutor(max_workers=clients, thread_name_prefix="bench-client") as pool:
        return list(pool.map(client, bodies))


def run_server_benchmark(server: Server, levels: list[int], max_tokens: int = 32, model: str = "",
                         question: str = "") -> dict[str, object]:
    """Measure `server` at each number of concurrent clients in `levels`, one level after the other."""
    if not question:
        from xvlm_core.bench.local import QUESTION

        question = QUESTION
    model = model or served_model(server)
    warm_up = stream_one(server, request_body(model, question, photo(0), max_tokens))
    if warm_up.error:
        raise BenchError(f"The server at {server.url} did not answer a first request ({warm_up.error}).")
    result: dict[str, object] = {"server": server.url, "model": model, "max_tokens": max_tokens,
                                 "request": "one 640x480 image of its own and a question of about 60 tokens, greedy",
                                 "levels": []}
    seed = 1
    for clients in levels:
        result["levels"].append(summarize(clients, run_level(server, model, question, clients, max_tokens, seed)))
        seed += clients
    return result
