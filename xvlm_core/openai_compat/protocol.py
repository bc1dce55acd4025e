"""The OpenAI chat-completions wire format, both ends: the server parses requests and shapes answers and errors;
the client shapes requests and reads answers, chunks and model lists. No torch, no HTTP."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xvlm_core.messages import Image, ImageRef, Message
from xvlm_core.model.prompt import MAX_IMAGES_PER_MESSAGE, MAX_MESSAGE_CHARS, SYSTEM_V1
from xvlm_core.sampling import SamplingSettings

MAX_MESSAGES = 5_000
# A turn (user messages and the answer after them) is tokenized in one piece before the first token, between two
# checks of the request's time limit: bounding it bounds that step, as the message bound does for one message.
MAX_TURN_CHARS = MAX_MESSAGE_CHARS
MAX_IMAGES_PER_REQUEST = 500  # OpenAI's own bound; the context holds far fewer, the oldest are dropped
MAX_STOP_STRINGS = 4  # as OpenAI
MAX_STOP_CHARS = 256  # each; stop strings are short markers, and a held-back tail is at most this long
SHOWN_VALUE_CHARS = 40  # of a bad value quoted back in an error
DEFAULT_MAX_TOKENS = 512  # as `xvlm ask`


class ApiError(Exception):
    """An answer in OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class ChatRequest:
    """One chat-completions request, checked; `messages` end with the question to answer."""

    messages: list[Message]
    system: str = SYSTEM_V1
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


# Turns an image URL (`data:` or http(s)) into an image the session reads: (url, where in the request) -> ImageRef.
ImageResolver = Callable[[str, str], ImageRef]


def parse_chat_request(body: bytes | bytearray, resolve_image: ImageResolver) -> ChatRequest:
    """Check a request body; fields this server does not use are ignored, as OpenAI's API does for most."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ApiError(400, f"The request body is not valid JSON ({exc}).") from None
    except ValueError:  # an integer beyond Python's limit on digits it converts
        raise ApiError(400, "The request body holds a number with too many digits; send numbers as "
                       "ordinary JSON numbers.") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if raw.get("n", 1) != 1:
        raise ApiError(400, "This server gives one answer per request: n must be 1.", "n")
    request = ChatRequest(messages=[])
    request.max_tokens = _integer(raw, "max_completion_tokens", None)
    if request.max_tokens is None:
        request.max_tokens = _integer(raw, "max_tokens", DEFAULT_MAX_TOKENS)
    if request.max_tokens < 1:
        raise ApiError(400, f"max_tokens must be at least 1, not {request.max_tokens}.", "max_tokens")
    request.temperature = _number(raw, "temperature", 0.0)
    if not 0 <= request.temperature <= 2:
        raise ApiError(400, f"temperature must be between 0 and 2, not {request.temperature}.", "temperature")
    request.top_p = _number(raw, "top_p", 1.0)
    if not 0 < request.top_p <= 1:
        raise ApiError(400, f"top_p must be above 0 and at most 1, not {request.top_p}.", "top_p")
    request.seed = _integer(raw, "seed", None)
    request.stop = _stop(raw.get("stop"))
    request.stream = _boolean(raw, "stream", False)
    options = raw.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise ApiError(400, "stream_options must be an object.", "stream_options")
        request.include_usage = _boolean(options, "include_usage", False, "stream_options.include_usage")
    _messages(raw.get("messages"), request, resolve_image)
    return request


def _messages(raw: object, request: ChatRequest, resolve_image: ImageResolver) -> None:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "messages must be a non-empty list.", "messages")
    if len(raw) > MAX_MESSAGES:
        raise ApiError(400, f"messages holds more than {MAX_MESSAGES} messages.", "messages")
    system: list[str] = []
    system_chars, image_count, turn_start, turn_chars = 0, 0, 0, 0
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{param} must be an object with a role and content.", param)
        role = item.get("role")
        if role in ("system", "developer"):
            system.append(_content(item.get("content"), param))
            system_chars += len(system[-1])
            if system_chars > MAX_TURN_CHARS:
                raise ApiError(400, f"The system messages hold more than {MAX_TURN_CHARS} characters together.",
                               param)
            continue
        if role == "user":
            images: list[Image] = []
            text = _content(item.get("content"), param, images, resolve_image)
            message = Message("user", text, images)
            image_count += len(images)
            if image_count > MAX_IMAGES_PER_REQUEST:
                raise ApiError(400, f"The request carries more than {MAX_IMAGES_PER_REQUEST} images.", param)
        elif role == "assistant":
            if item.get("content") is None:
                raise ApiError(400, f"{param}: an assistant message needs text content (tool calls are not supported).",
                               f"{param}.content")
            message = Message("assistant", _content(item.get("content"), param))
        else:
            raise ApiError(400, f"{param}: role {_shown(role)} is not supported (use system, user or assistant).",
                           f"{param}.role")
        # A turn starts at each question that follows an answer, as the session splits the conversation.
        if role == "user" and request.messages and request.messages[-1].role != "user":
            turn_start, turn_chars = index, 0
        turn_chars += len(message.text)
        if turn_chars > MAX_TURN_CHARS:
            raise ApiError(400, f"messages[{turn_start}] to messages[{index}], one question with its answer, hold "
                           f"more than {MAX_TURN_CHARS} characters together; send shorter messages.", param)
        request.messages.append(message)
    if system:
        request.system = "\n".join(system)
    if not request.messages or request.messages[-1].role != "user":
        raise ApiError(400, "The last message must be from the user: that is the question to answer.", "messages")


def _content(
    raw: object, param: str, images: list[Image] | None = None, resolve_image: ImageResolver | None = None
) -> str:
    """The text of a message; for user messages, its image parts are resolved into `images`."""
    if isinstance(raw, str):
        return _bounded(raw, f"{param}.content")
    if not isinstance(raw, list):
        raise ApiError(400, f"{param}.content must be a string or a list of parts.", f"{param}.content")
    texts: list[str] = []
    for index, part in enumerate(raw):
        where = f"{param}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and images is not None and resolve_image is not None:
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise ApiError(400, f"{where}: image_url needs a url.", f"{where}.image_url")
            if len(images) >= MAX_IMAGES_PER_MESSAGE:
                raise ApiError(400, f"{param}: more than {MAX_IMAGES_PER_MESSAGE} images.", where)
            images.append(resolve_image(url, where))
        elif kind == "image_url":
            raise ApiError(400, f"{where}: only user messages can carry images.", where)
        else:
            raise ApiError(400, f"{where}: expected a text or image_url part.", where)
    return _bounded("\n".join(texts), f"{param}.content")


def _bounded(text: str, param: str) -> str:
    if len(text) > MAX_MESSAGE_CHARS:
        raise ApiError(400, f"{param} is longer than {MAX_MESSAGE_CHARS} characters.", param)
    return text


def _stop(raw: object) -> list[str]:
    if raw is None:
        return []
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(stop, str) and stop for stop in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of them.", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise ApiError(400, f"stop takes at most {MAX_STOP_STRINGS} strings.", "stop")
    if any(len(stop) > MAX_STOP_CHARS for stop in stops):
        raise ApiError(400, f"Each stop string may have at most {MAX_STOP_CHARS} characters.", "stop")
    return stops


def _shown(value: object) -> str:
    """A bad value as an error quotes it, cut short: a client may send megabytes in any field."""
    if isinstance(value, list | dict):
        return "a list" if isinstance(value, list) else "an object"
    text = repr(value[: SHOWN_VALUE_CHARS + 1] if isinstance(value, str) else value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[:SHOWN_VALUE_CHARS] + "..."


def _integer(raw: dict, name: str, default: int | None) -> int | None:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, not {_shown(value)}.", name)
    return value


def _number(raw: dict, name: str, default: float) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{name} must be a number, not {_shown(value)}.", name)
    return float(value)


def _boolean(raw: dict, name: str, default: bool, param: str | None = None) -> bool:
    value = raw.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{param or name} must be true or false, not {_shown(value)}.", param or name)
    return value


@dataclass(frozen=True)
class Completion:
    """A finished answer as the API reports it; token counts are positions, an image as its embeddings."""

    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt positions whose KV cache was reused from earlier requests


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage_body(completion: Completion) -> dict[str, Any]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": completion.cached_tokens},
    }


def completion_body(answer_id: str, model: str, created: int, completion: Completion) -> dict[str, Any]:
    """A non-streamed `chat.completion` object."""
    return {
        "id": answer_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage_body(completion),
    }


def chunk_body(
    answer_id: str,
    model: str,
    created: int,
    delta: dict[str, str] | None,
    finish_reason: str | None = None,
    usage: Completion | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    """One streamed `chat.completion.chunk`; `delta=None` makes the final usage-only chunk (no choices)."""
    body: dict[str, Any] = {"id": answer_id, "object": "chat.completion.chunk", "created": created, "model": model}
    body["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    ]
    if include_usage:
        # With stream_options.include_usage every chunk has the field; only the last one fills it.
        body["usage"] = usage_body(usage) if usage is not None else None
    return body


def server_sent_event(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def models_body(model: str, created: int, context_length: int) -> dict[str, Any]:
    """`GET /v1/models`: the one loaded model, with how it serves (one request at a time, in arrival order)."""
    return {"object": "list", "data": [model_card(model, created, context_length)]}


def model_card(model: str, created: int, context_length: int) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "xvlm",
        "context_length": context_length,
        "batch_size": 1,
        "scheduling": "one request at a time, in arrival order",
    }


def now() -> int:
    return int(time.time())


# --- The client's side: a request to send, and reading what comes back ---------------------------------------


def request_body(model: str, messages: Sequence[Message], settings: SamplingSettings, system: str,
                 image_url: Callable[[Image], str]) -> dict[str, Any]:
    """A streamed chat-completions request for `messages`; `image_url` turns an image into a (data:) URL."""
    body: dict[str, Any] = {
        "model": model,
        # The server's own default system prompt is this model's: send one only when it differs.
        "messages": ([] if system == SYSTEM_V1 else [{"role": "system", "content": system}])
        + [_request_message(message, image_url) for message in messages],
        "max_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.seed is not None:
        body["seed"] = settings.seed
    return body


def _request_message(message: Message, image_url: Callable[[Image], str]) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_url(image)}}
                                   for image in message.images]
    return {"role": message.role, "content": [*parts, {"type": "text", "text": message.text}]}


class UnexpectedShape(ValueError):
    """What a server sent is not in the OpenAI API's shape: `field` names the part ("" when it is not JSON)."""

    def __init__(self, field: str = "", value: object = None):
        super().__init__(field)
        self.field = field
        self.value = value


@dataclass(frozen=True)
class ModelCard:
    """A model a server offers, as `GET /v1/models` lists it."""

    id: str
    context_length: int = 0  # 0: the server does not say


def read_model_list(body: bytes) -> list[ModelCard]:
    """The models in a `GET /v1/models` body; entries without a name are skipped."""
    try:
        cards = json.loads(body)["data"]
        return [ModelCard(card["id"], _count(card.get("context_length"))) for card in cards
                if isinstance(card, dict) and isinstance(card.get("id"), str)]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise UnexpectedShape("data") from None


def error_message(body: bytes) -> str | None:
    """The message of an error body in OpenAI's shape, if it is one."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


@dataclass(frozen=True)
class Usage:
    """Token counts as a server reports them; anything but a whole number of at least 0 counts as 0."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


@dataclass(frozen=True)
class StreamedChunk:
    """One `chat.completion.chunk` of a streamed answer, as a client reads it."""

    texts: tuple[str, ...] = ()  # the non-empty content deltas, one per choice that has one
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None  # the server stopped the answer with this message ("" when it gave none)


def read_chunk(data: str) -> StreamedChunk:
    """Read one event's data; raises UnexpectedShape naming the field that is not what OpenAI sends."""
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        raise UnexpectedShape() from None
    if not isinstance(chunk, dict):
        return StreamedChunk()
    if isinstance(chunk.get("error"), dict):
        return StreamedChunk(error=str(chunk["error"].get("message") or ""))
    usage = chunk.get("usage")
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise UnexpectedShape("choices", choices)
    texts: list[str] = []
    finish_reason = None
    for choice in choices:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise UnexpectedShape("delta", delta)
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise UnexpectedShape("content", content)
        if content:
            texts.append(content)
        finish_reason = choice.get("finish_reason") or finish_reason
    return StreamedChunk(tuple(texts), finish_reason if isinstance(finish_reason, str) else None,
                         _usage(usage) if isinstance(usage, dict) else None)


def _usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    return Usage(_count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), cached)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
