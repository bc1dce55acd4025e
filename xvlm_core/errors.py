"""Errors whose message is written for the person using the app or the command."""


class XvlmError(Exception):
    """Base class: `str(error)` is a complete sentence a person can act on."""


class ConfigError(XvlmError):
    """The checkpoint's config.json is missing, unreadable or not an Xmodel-VLM config."""


class CheckpointError(XvlmError):
    """Weights or tokenizer files are missing, truncated, corrupt or do not fit the config."""


class ImageError(XvlmError):
    """A file could not be used as an image."""


class ConversationError(XvlmError):
    """A conversation file (JSON list of messages) is unreadable or not in the expected shape."""


class DeviceError(XvlmError):
    """The requested device or dtype is not available on this machine."""


class Cancelled(XvlmError):
    """The operation was cancelled by the user."""
