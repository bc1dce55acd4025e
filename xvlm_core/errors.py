"""Errors as data: what happened (English details) and what the person can do about it (a `Remedy` code).

The core says what happened; each front end says what to do in its own terms, chosen by the code: `xvlm`
names its options (xvlm_core/cli.py), the window names its settings and translates (app/error_text.py).
`str(error)` is the details, a complete English sentence for logs and for people who read English.
This module never imports torch: the app reads these errors on its UI thread.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum


class Remedy(Enum):
    """What a person can do about an error; each front end words it for its own people."""

    NONE = "none"  # nothing but what the details say
    SEE_LOG = "see_log"  # an error nothing has words for: the log has where it happened
    CHOOSE_MODEL = "choose_model"  # the model's folder or name cannot be used: choose another
    DOWNLOAD_MODEL = "download_model"  # the model is named by its hub id and not downloaded yet (`repo_id`)
    CHOOSE_VISION_TOWER = "choose_vision_tower"  # the vision tower cannot be found or used (`repo_id` if named so)
    CHOOSE_DEVICE = "choose_device"
    CHOOSE_PRECISION = "choose_precision"  # the number format (dtype)
    FREE_MEMORY = "free_memory"  # close programs, choose smaller weights or the CPU, shorten the chat
    SHORTEN_CONVERSATION = "shorten_conversation"
    CHOOSE_IMAGE = "choose_image"
    CHECK_NETWORK = "check_network"  # the model hub cannot be reached
    CHECK_MIRROR = "check_mirror"  # the hub's address (a mirror) does not answer like a model hub
    SIGN_IN = "sign_in"  # the hub wants an access token, or rejected the one given
    FREE_DISK = "free_disk"
    CHOOSE_FOLDER = "choose_folder"  # a folder that cannot be written to
    TRY_AGAIN = "try_again"  # the hub failed or sent something damaged: another try may work
    CHECK_SERVER = "check_server"  # the model server does not answer: is it running, is its address right


@dataclass(frozen=True)
class Problem:
    """An error as plain data, to pass between threads and front ends."""

    code: Remedy
    details: str  # what happened, in English, without advice for one front end
    repo_id: str = ""  # the hub repo the problem is about (what `xvlm download` would fetch), if any

    def __str__(self) -> str:
        return self.details


class XvlmError(Exception):
    """Base class: `str(error)` is a complete English sentence; `code` says what a person can do about it."""

    default_code = Remedy.NONE  # a subclass's usual remedy; a raise site gives `code` where it knows better

    def __init__(self, details: str = "", *, code: Remedy | None = None, repo_id: str = ""):
        super().__init__(details)
        self.details = details
        self.code = code or self.default_code
        self.repo_id = repo_id

    @property
    def problem(self) -> Problem:
        return Problem(self.code, self.details, self.repo_id)


class ConfigError(XvlmError):
    """The checkpoint's config.json is missing, unreadable or not an Xmodel-VLM config."""

    default_code = Remedy.CHOOSE_MODEL


class CheckpointError(XvlmError):
    """Weights or tokenizer files are missing, truncated, corrupt or do not fit the config."""

    default_code = Remedy.CHOOSE_MODEL


class ImageError(XvlmError):
    """A file could not be used as an image."""

    default_code = Remedy.CHOOSE_IMAGE


class ConversationError(XvlmError):
    """A conversation file (JSON list of messages) is unreadable or not in the expected shape."""


class DeviceError(XvlmError):
    """The requested device or dtype is not available on this machine."""

    default_code = Remedy.CHOOSE_DEVICE


class EngineUnavailable(XvlmError):
    """An engine other than PyTorch cannot run this model here: it cannot convert or load it, or has no room."""


class Cancelled(XvlmError):
    """The operation was cancelled by the user."""


class OutOfMemory(XvlmError):
    """Python or torch could not allocate the memory the model needed."""

    default_code = Remedy.FREE_MEMORY


MPS_OUT_OF_MEMORY = "MPS backend out of memory"


def known_error(exc: BaseException) -> XvlmError | None:
    """`exc` as a core error, if the core knows what it means: itself, or running out of memory; else None.

    The one place where the core recognises running out of memory, by the exception's type: Python's
    MemoryError, or torch's OutOfMemoryError (CUDA, ROCm). Apple's GPU has no type of its own: torch raises a
    RuntimeError that starts with MPS_OUT_OF_MEMORY. torch is looked up, never imported: an exception of
    torch's means it is loaded, and the app must not import it.
    """
    if isinstance(exc, XvlmError):
        return exc
    torch = sys.modules.get("torch")
    torch_oom = getattr(torch, "OutOfMemoryError", None)
    mps_oom = type(exc) is RuntimeError and str(exc).startswith(MPS_OUT_OF_MEMORY)
    if isinstance(exc, MemoryError) or (isinstance(torch_oom, type) and isinstance(exc, torch_oom)) or mps_oom:
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
        return OutOfMemory(f"The model ran out of memory ({reason.rstrip('.')}).")
    return None


def problem_of(exc: BaseException) -> Problem:
    """What to tell a person about any exception: a known one's problem, else SEE_LOG with its type's name."""
    known = known_error(exc)
    if known is not None:
        return known.problem
    return Problem(Remedy.SEE_LOG, type(exc).__name__)  # its message may hold anything: it goes to the log
