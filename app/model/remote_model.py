"""A model on an OpenAI-compatible server (`xvlm serve`, vLLM, LM Studio...) behind the worker's load/session calls.

The core's client (xvlm_core.openai_compat.client) talks to the server; this module keeps what is the app's:
its errors worded for the window and translated, the API key in the system keyring, and the stage shown while
connecting. `connect` stands in for loading a model and `RemoteSession` for the local session: the worker drives
them the same way, on its own thread, so the window cannot tell a local model from a remote one. No Qt, no torch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from xvlm_core.answers import Answer, AnswerResult
from xvlm_core.errors import Remedy, XvlmError
from xvlm_core.messages import Image, Message
from xvlm_core.model.prompt import SYSTEM_V1
from xvlm_core.openai_compat import client
from xvlm_core.openai_compat.client import Fault, RemoteModel, ServerSession, api_url
from xvlm_core.openai_compat.protocol import ModelCard
from xvlm_core.sampling import SamplingSettings

from app import APP_NAME
from app.i18n import translate

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)


class ServerError(XvlmError):
    """The model server could not be reached or refused a request; the message says what to do in the app."""


# --- the API key: the system keyring when there is one, else the settings file ----------------------------


def _keyring() -> Any:
    try:
        import keyring
    except ImportError:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def api_key(settings: Settings) -> str:
    """The key for the settings' server (the keyring's, else the one in the settings file)."""
    return server_key(settings.server_url, settings.server_api_key)


def server_key(address: str, file_key: str) -> str:
    """The keyring's key for the server at `address`, else `file_key`. A keyring may wait on the system (an unlock
    prompt): call it off the UI thread where it can be."""
    keyring = _keyring()
    if keyring is not None and address:
        try:
            return keyring.get_password(APP_NAME, api_url(address)) or file_key
        except Exception:  # any keyring backend failure: fall back to the file's copy
            log.exception("reading the API key from the keyring failed")
    return file_key


def keep_api_key(settings: Settings) -> Settings:
    """Move a key typed in Settings into the keyring if there is one; what is left is saved to the file."""
    keyring = _keyring()
    if keyring is None or not settings.server_url:
        if settings.server_api_key:
            log.warning("no system keyring: the model server's API key is kept in the settings file")
        return settings
    if not settings.server_api_key:  # the key box was emptied: forget the key, or `api_key` keeps finding it
        try:
            keyring.delete_password(APP_NAME, api_url(settings.server_url))
        except Exception:  # no key was stored (PasswordDeleteError) or the backend failed: nothing more to do
            log.info("no API key removed from the keyring", exc_info=True)
        return settings
    try:
        keyring.set_password(APP_NAME, api_url(settings.server_url), settings.server_api_key)
    except Exception:  # any keyring backend failure: keep it in the file rather than lose it
        log.exception("saving the API key to the keyring failed; it stays in the settings file")
        return settings
    return replace(settings, server_api_key="")


# --- talking to the server, through the core's client ----------------------------------------------------


def _window_text(fault: Fault) -> str:
    """The window's sentence for `fault`, translated; {placeholders} are the error's facts."""
    texts = {
        Fault.UNREACHABLE: translate("RemoteModel", "Cannot reach the model server at {url} ({error}). Check the "
                                                    "address in Settings and that the server is running."),
        Fault.KEY_REFUSED: translate("RemoteModel", "The model server at {url} refused the API key ({detail}). "
                                                    "Check the key in Settings → Model server."),
        Fault.NO_SUCH_PAGE: translate("RemoteModel", "The model server at {url} has no such page (HTTP 404). Check "
                                                     "the address in Settings: it is usually the server's address "
                                                     "followed by /v1."),
        Fault.BUSY: translate("RemoteModel", "The model server at {url} is busy ({detail}). Try again in a "
                                             "moment."),
        Fault.SERVER_FAILED: translate("RemoteModel", "The model server at {url} failed (HTTP {status}: {detail}). "
                                                      "Try again; if it keeps failing, the server's log says why."),
        Fault.REQUEST_REFUSED: translate("RemoteModel", "The model server at {url} refused the request (HTTP "
                                                        "{status}): {detail}"),
        Fault.TOO_LONG: translate("RemoteModel", "The model server at {url} sent more than {size} MiB without a "
                                                 "break, so the app stopped reading. Check that the address in "
                                                 "Settings is a model server; if it is, its log may say what went "
                                                 "wrong."),
        Fault.COMPRESSED: translate("RemoteModel", "The model server at {url} sent its answer compressed "
                                                   "({encoding}), which this app does not read. Check that the "
                                                   "address in Settings is the model server itself."),
        Fault.NOT_OPENAI: translate("RemoteModel", "{url} did not answer like an OpenAI-compatible server. Check the "
                                                   "address."),
        Fault.NOT_JSON: translate("RemoteModel", "The model server at {url} sent something that is not JSON."),
        Fault.UNREADABLE: translate("RemoteModel", "The model server at {url} sent an answer this app cannot read: "
                                                   "its \"{field}\" was {value}, not what the OpenAI chat API "
                                                   "sends. Check that the address in Settings is an "
                                                   "OpenAI-compatible model server."),
        Fault.ANSWER_STOPPED: translate("RemoteModel", "The model server at {url} stopped the answer: {reason}"),
        Fault.NO_MODEL: translate("RemoteModel", "The model server at {url} serves no model."),
        Fault.MODEL_NOT_SERVED: translate("RemoteModel", "The model server at {url} does not serve {name}; it serves "
                                                         "{names}. Choose one in Settings."),
        Fault.IMAGE_UNREADABLE: translate("RemoteModel", "{path}: cannot read the image to send it ({reason})."),
    }
    return texts[fault]


def worded(error: client.ServerError) -> ServerError:
    """The core client's error as the window says it."""
    facts = dict(error.facts)
    if error.fault is Fault.ANSWER_STOPPED and not facts["reason"]:
        facts["reason"] = translate("RemoteModel", "no reason given")
    code = Remedy.CHECK_SERVER if error.fault is Fault.UNREACHABLE else None  # the window offers to try again
    return ServerError(_window_text(error.fault).format(**facts), code=code)


@contextlib.contextmanager
def _worded_errors() -> Iterator[None]:
    try:
        yield
    except client.ServerError as exc:
        raise worded(exc) from None


def list_models(address: str, key: str) -> list[ModelCard]:
    """The models a server offers (`GET /v1/models`)."""
    with _worded_errors():
        return client.list_models(address, key)


def connect(address: str, key: str, model: str, on_stage: Callable[[str], None]) -> RemoteModel:
    """Check that the server answers and serves `model` ("" = its first model)."""
    on_stage(translate("RemoteModel", "Connecting to {url}…").format(url=api_url(address)))
    with _worded_errors():
        return client.connect(address, key, model)


class RemoteSession:
    """The core's ServerSession, its errors worded for the window."""

    def __init__(self, remote: RemoteModel):
        self._session = ServerSession(remote)

    def answer(self, messages: Sequence[Message], settings: SamplingSettings, system: str = SYSTEM_V1,
               cancel: threading.Event | None = None) -> Answer:
        return Answer(_worded_steps(self._session.answer(messages, settings, system, cancel)))

    def look_at(self, images: Sequence[Image], cancel: threading.Event | None = None,
                before: Sequence[Message] | None = (), system: str = SYSTEM_V1) -> int:
        return self._session.look_at(images, cancel, before, system)


def _worded_steps(answer: Answer) -> Generator[str, None, AnswerResult]:
    with _worded_errors():
        yield from answer
    return answer.result
