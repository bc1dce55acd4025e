"""`xvlm serve`: the OpenAI chat-completions API over HTTP, one model answering one request at a time.

The event loop (Starlette on uvicorn) only parses, queues and streams; one worker thread (worker.py) owns the
model and answers jobs in arrival order through one chat session, so a client resending a growing conversation
reuses the KV cache of everything it sent before.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
import socket
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from xvlm_core.engines.pytorch.loading import LoadedModel
from xvlm_core.errors import XvlmError
from xvlm_core.log_lines import printable
from xvlm_core.messages import ImageRef
from xvlm_core.openai_compat.images import ImageStore
from xvlm_core.openai_compat.protocol import (
    SSE_DONE,
    ApiError,
    ChatRequest,
    Completion,
    ImageResolver,
    chunk_body,
    completion_body,
    completion_id,
    model_card,
    models_body,
    now,
    parse_chat_request,
    server_sent_event,
)
from xvlm_core.openai_compat.worker import Delta, Done, Event, Failed, ModelRunner, PendingAnswer, Worker, too_slow

log = logging.getLogger("xvlm.serve")

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # a few base64 photos and a long conversation
# What requests in flight may hold together: bodies while they arrive and are read, then the text each keeps
# until answered. Four requests of the largest size; beyond it a request gets 503 instead of memory.
MAX_BYTES_IN_FLIGHT = 4 * MAX_REQUEST_BYTES


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    allow_remote_images: bool = False
    max_waiting: int = 16  # requests queued behind the one being answered; more get 429
    request_timeout_s: float = 300.0  # from arrival (the upload included) to the last token; longer gets 408/503
    max_bytes_in_flight: int = MAX_BYTES_IN_FLIGHT


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- Memory for requests in flight -----------------------------------------------------------------------


class MemoryBudget:
    """Bytes that requests in flight hold together; only the event loop's thread touches it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def claim(self) -> Claim:
        return Claim(self)


class Claim:
    """One request's share of the budget, from its first byte to its last answer, released exactly once."""

    def __init__(self, budget: MemoryBudget):
        self._budget = budget
        self.size = 0

    def grow(self, size: int) -> None:
        """Claim `size` more bytes, or refuse the request with 503 when the budget has no room for them."""
        if self._budget.used + size > self._budget.limit:
            raise ApiError(
                503, "The server is receiving too many large requests at once. Try again shortly.",
                code="server_busy", kind="server_error",
            )
        self.resize(self.size + size)

    def resize(self, size: int) -> None:
        self._budget.used += size - self.size
        self.size = size

    def release(self) -> None:
        self.resize(0)


def kept_bytes(request: ChatRequest) -> int:
    """Roughly what a parsed request keeps in memory until answered: its texts (images are files by now)."""
    texts = [request.system, *(message.text for message in request.messages), *request.stop]
    return sum(sys.getsizeof(text) for text in texts)


# --- HTTP ------------------------------------------------------------------------------------------------


class Api:
    """The routes, bound to one worker, one image store and the server's options."""

    def __init__(self, worker: Worker, images: ImageStore, model: str, context_length: int, options: ServerOptions):
        self.worker = worker
        self.images = images
        self.model = model
        self.context_length = context_length
        self.options = options
        self.budget = MemoryBudget(options.max_bytes_in_flight)
        self.created = now()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Cleanup runs here, inside uvicorn's run: after a SIGTERM uvicorn ends the process by re-raising it.
        self.worker.start()
        try:
            yield
        finally:
            self.worker.stop()
            self.images.close()

    def app(self) -> ASGIApp:
        app = Starlette(
            lifespan=self.lifespan,
            routes=[
                Route("/v1/models", self.list_models, methods=["GET"]),
                Route("/v1/models/{model:path}", self.get_model, methods=["GET"]),
                Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            ],
            exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _server_error},
        )
        return RequestLog(app)

    def _authorize(self, request: Request) -> None:
        if self.options.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        expected = self.options.api_key.encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), expected):
            raise ApiError(401, "Missing or wrong API key: send it as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    async def list_models(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse(models_body(self.model, self.created, self.context_length))

    async def get_model(self, request: Request) -> Response:
        self._authorize(request)
        if request.path_params["model"] != self.model:
            raise ApiError(404, f"This server has one model, {self.model!r}.", "model", "model_not_found")
        return JSONResponse(model_card(self.model, self.created, self.context_length))

    async def chat_completions(self, request: Request) -> Response:
        deadline = time.monotonic() + self.options.request_timeout_s
        self._authorize(request)
        claim = self.budget.claim()
        try:
            response = await self._answer(request, claim, deadline)
        except BaseException:
            claim.release()
            raise
        if not isinstance(response, EventStream):
            claim.release()
        return response

    async def _parse(self, request: Request, claim: Claim, deadline: float) -> ChatRequest:
        """Read and check the body within the request's deadline and the memory budget.

        The body is dropped on return: from then on the request claims only the text it keeps.
        """
        body = await _read_body(request, claim, deadline, self.options.request_timeout_s)
        chat = await run_in_threadpool(parse_chat_request, body, self.image_resolver(deadline))
        claim.resize(kept_bytes(chat))
        return chat

    def image_resolver(self, deadline: float) -> ImageResolver:
        """The image store's resolver, refusing to start another image once the request's time is up."""
        def resolve(url: str, where: str) -> ImageRef:
            if time.monotonic() > deadline:
                raise too_slow(self.options.request_timeout_s)
            return self.images.resolve(url, where)

        return resolve

    async def _answer(self, request: Request, claim: Claim, deadline: float) -> Response:
        chat = await self._parse(request, claim, deadline)
        pending = PendingAnswer(chat, deadline, self.options.request_timeout_s)
        self.worker.submit(pending.job)
        answer_id, created = completion_id(), now()
        try:
            # Wait for the first event before answering: a request the model refuses (too long for the
            # context, say) still gets its error status, streamed or not.
            first = await _until_disconnect(request, pending.next_event())
        except BaseException:
            await pending.settle()
            _note_outcome(request, pending)
            raise
        if isinstance(first, Failed):
            _note_outcome(request, pending)
            raise first.error
        if chat.stream:
            return EventStream(pending, self._chunks(pending, first, answer_id, created), request, claim)
        try:
            event: Event = first
            while not isinstance(event, Done):
                if isinstance(event, Failed):
                    raise event.error
                event = await _until_disconnect(request, pending.next_event())
        finally:
            await pending.settle()
            _note_outcome(request, pending)
        return JSONResponse(completion_body(answer_id, self.model, created, event.completion))

    async def _chunks(
        self, pending: PendingAnswer, first: Event, answer_id: str, created: int
    ) -> AsyncGenerator[bytes, None]:
        chat = pending.job.request

        def chunk(delta: dict[str, str] | None, finish: str | None = None, usage: Completion | None = None) -> bytes:
            body = chunk_body(answer_id, self.model, created, delta, finish, usage, chat.include_usage)
            return server_sent_event(body)

        yield chunk({"role": "assistant", "content": ""})
        event = first
        while True:
            if isinstance(event, Delta):
                yield chunk({"content": event.text})
            elif isinstance(event, Done):
                yield chunk({}, event.completion.finish_reason)
                if chat.include_usage:
                    yield chunk(None, usage=event.completion)
                yield SSE_DONE
                return
            else:
                yield server_sent_event(event.error.body())
                return
            try:
                event = await pending.next_event()
            except ApiError as exc:
                event = Failed(exc)


class EventStream(StreamingResponse):
    """The `text/event-stream` answer. Starlette streams it and stops when the client leaves; however it ends, the
    generation is cancelled, the request's memory claim given back and its log line given the token counts.

    Starlette listens for the disconnect while it streams only under ASGI spec versions before 2.4, which uvicorn's
    h11 server (the one `http_server` runs) reports; later ones learn of it from the next send alone, which a
    silent model would delay (tests/core/test_server_api.py's closing-a-stream test would fail).
    """

    def __init__(self, pending: PendingAnswer, chunks: AsyncGenerator[bytes, None], request: Request, claim: Claim):
        super().__init__(chunks, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self.pending = pending
        self.chunks = chunks
        self.request = request
        self.claim = claim  # released once the stream ends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except* (OSError, ClientDisconnect):  # a send to a client that is gone: the generation is cancelled below
            pass
        finally:
            self.claim.release()
            with anyio.CancelScope(shield=True):
                await self.chunks.aclose()
            await self.pending.settle()
            _note_outcome(self.request, self.pending)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _until_disconnect(request: Request, waiting: Awaitable[Event]) -> Event:
    """`waiting`'s result (or its ApiError), or ApiError 499 once the client has closed the connection."""
    result: list[Event | ApiError] = []

    async def wait() -> None:
        try:
            result.append(await waiting)
        except ApiError as exc:  # raised outside the task group, which would wrap it in an ExceptionGroup
            result.append(exc)
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(wait)
        group.start_soon(_cancel_on_disconnect, request.receive, group.cancel_scope)
    if not result:
        raise ApiError(499, "The client closed the connection.", code="cancelled")
    if isinstance(result[0], ApiError):
        raise result[0]
    return result[0]


async def _read_body(request: Request, claim: Claim, deadline: float, timeout_s: float) -> bytearray:
    """The body, claimed from the budget as it arrives; 413 beyond MAX_REQUEST_BYTES, 408 past the deadline."""
    too_large = ApiError(413, f"The request is larger than {MAX_REQUEST_BYTES // 2**20} MB; send smaller images.",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise too_large
    body = bytearray()
    with anyio.move_on_after(max(deadline - time.monotonic(), 0.0)) as waiting:
        try:
            async for piece in request.stream():
                if len(body) + len(piece) > MAX_REQUEST_BYTES:
                    raise too_large
                claim.grow(len(piece))
                body += piece
        except ClientDisconnect:
            raise ApiError(499, "The client closed the connection while sending its request.",
                           code="cancelled") from None
    if waiting.cancelled_caught:
        raise ApiError(408, f"The request did not arrive within this server's limit of {timeout_s:g} s. "
                       "Send it again on a faster connection.", code="timeout")
    return body


def _note(request: Request, text: str) -> None:
    request.scope.setdefault("state", {})["xvlm_log"] = text


def _note_outcome(request: Request, pending: PendingAnswer) -> None:
    outcome = pending.outcome
    if isinstance(outcome, Done):
        c = outcome.completion
        _note(request, f"prompt={c.prompt_tokens} cached={c.cached_tokens} completion={c.completion_tokens} "
                       f"finish={outcome.stop_reason}")
    elif isinstance(outcome, Failed):
        _note(request, f"error={outcome.error.code or outcome.error.status}")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    if "xvlm_log" not in request.scope.get("state", {}):
        _note(request, f"error={exc.code or exc.status}")
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: f"No such endpoint: {request.url.path}.",
               405: f"{request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
    return JSONResponse(ApiError(exc.status_code, message).body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette raises `exc` again once this answer is sent: RequestLog logs it, once.
    error = ApiError(500, "The server failed to handle the request; its log has the details.", kind="server_error")
    return JSONResponse(error.body(), status_code=500)


class RequestLog:
    """One log line per request: who, what, status, time, and token counts; never message contents.

    Client and path come from outside (a path is percent-decoded, a client may be named by a proxy header),
    so they are escaped. A request the server failed on has its traceback on the same record.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]
        scope.setdefault("state", {})

        async def send_and_see(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        failure: Exception | None = None
        try:
            await self.app(scope, receive, send_and_see)
        except Exception as exc:  # the app's edge: its 500 answer is sent; uvicorn would log it all again
            failure = exc
        finally:
            client = scope.get("client") or ("-", 0)
            extra = scope["state"].get("xvlm_log", "")
            log.log(logging.ERROR if failure else logging.INFO, "%s %s %s %d %.2fs %s", printable(str(client[0])),
                    printable(scope["method"]), printable(scope["path"]), status[0] or 499,
                    time.monotonic() - started, extra, exc_info=failure)


# --- Running it ------------------------------------------------------------------------------------------


def model_id(loaded: LoadedModel) -> str:
    """What clients call the model: the hub repo id, or the checkpoint folder's name."""
    path = Path(loaded.name)
    return path.name if path.is_dir() else loaded.name


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound now so that a busy port is reported before anything else starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise XvlmError(f"Cannot listen on {host}: {exc.strerror or exc}. Check --host.") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise XvlmError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Another program may use the port; "
            "choose another with --port."
        ) from None
    return sock


def http_server(api: Api) -> uvicorn.Server:
    """uvicorn serving `api`; its `run(sockets=...)` starts the worker and returns once shut down."""
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    # Plain h11 and asyncio, no websockets: pure Python, and the modules the desktop bundle carries for it.
    config = uvicorn.Config(
        api.app(), http="h11", ws="none", loop="none", lifespan="on", log_config=None, access_log=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve(loaded: LoadedModel, options: ServerOptions) -> None:
    """Answer requests until interrupted (Ctrl+C or SIGTERM), then clean up."""
    sock = listen(options.host, options.port)
    with ImageStore(options.allow_remote_images) as images:
        worker = Worker(ModelRunner(loaded).answer, options.max_waiting)
        api = Api(worker, images, model_id(loaded), loaded.context_length, options)
        server = http_server(api)
        host, port = sock.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        log.info("Serving %s on http://%s:%d/v1 (one request at a time, in arrival order; Ctrl+C stops)",
                 api.model, shown_host, port)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
