"""The one settings object: its fields, their checks, its JSON file under the user config folder, the live copy.

The dialog that edits it is app/ui/settings_dialog.py."""

from __future__ import annotations

import json
import logging
import math
import os
import reprlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import platformdirs
from PySide6.QtCore import QT_TRANSLATE_NOOP
from xvlm_core.errors import XvlmError
from xvlm_core.load_options import LoadOptions
from xvlm_core.local_files import MAX_CONFIG_BYTES, read_regular_file
from xvlm_core.sampling import SamplingSettings

from app import APP_NAME
from app.i18n import LANGUAGES, Wording, translate
from app.theme import THEMES

log = logging.getLogger(__name__)

DTYPES = [("auto", QT_TRANSLATE_NOOP("SettingsDialog", "Automatic")),
          ("float32", QT_TRANSLATE_NOOP("SettingsDialog", "float32 (most memory)")),
          ("bfloat16", "bfloat16"), ("float16", "float16")]
# How the language model's weights are held: as in the checkpoint, 8-bit or 4-bit (xvlm_core's `quantize`).
PRECISIONS = [("none", QT_TRANSLATE_NOOP("SettingsDialog", "Exact (bf16/fp16/fp32 weights)")),
              ("int8", QT_TRANSLATE_NOOP("SettingsDialog", "Faster: 8-bit weights (answers may differ slightly)")),
              ("int4", QT_TRANSLATE_NOOP("SettingsDialog", "Fastest: 4-bit weights (answers may differ more)"))]
# What runs the language model (xvlm_core's `engine`): llama.cpp decodes several times faster on a CPU.
ENGINES = [("auto", QT_TRANSLATE_NOOP("SettingsDialog", "Automatic (llama.cpp on the CPU where installed)")),
           ("pytorch", QT_TRANSLATE_NOOP("SettingsDialog", "PyTorch (every device)")),
           ("llama.cpp", QT_TRANSLATE_NOOP("SettingsDialog", "llama.cpp (CPU only, faster answers)"))]

MAX_ANSWER_TOKENS = 4096  # Xmodel-VLM's context: no answer can be longer than what the model reads at once
# What the dialog's spin boxes take, so a loaded value always fits them. A server's model may read more than
# Xmodel-VLM, so the longest answer is bounded only far beyond any model's context.
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_P_RANGE = (0.05, 1.0)
ANSWER_TOKENS_RANGE = (1, 1 << 20)
_RANGES = {"temperature": TEMPERATURE_RANGE, "top_p": TOP_P_RANGE, "max_new_tokens": ANSWER_TOKENS_RANGE}
_CHOICES = {"dtype": {value for value, _ in DTYPES}, "quantize": {value for value, _ in PRECISIONS},
            "engine": {value for value, _ in ENGINES},
            "theme": set(THEMES), "language": {value for value, _ in LANGUAGES}}


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything a person can change. Empty strings mean "the default" (the hub's model, the model's prompt)."""

    model: str = ""  # a folder or a hub repo id; "" = the default model from the hub
    vision_tower: str = ""
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"  # "int8": 8-bit weights, faster and half the memory; "int4": 4-bit, a third
    engine: str = "auto"  # what runs the language model: "auto", "pytorch" or "llama.cpp"
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    system_prompt: str = ""
    hub_endpoint: str = ""
    download_started: bool = False  # a download was under way when the app last closed: resume it
    window_geometry: str = ""  # QWidget.saveGeometry(), base64
    theme: str = "system"  # "system", "light" or "dark" (View > Theme)
    language: str = "system"  # "system", "en" or "zh_CN" (Settings > Language), applied at once
    use_server: bool = False  # answer with a model on an OpenAI-compatible server instead of a local one
    server_url: str = ""
    server_model: str = ""  # "" = the server's first model
    server_api_key: str = ""  # only when there is no system keyring (app/model/remote_model.py)

    @property
    def uses_server(self) -> bool:
        """Whether answers come from a model server rather than a model loaded here."""
        return self.use_server and bool(self.server_url)

    @property
    def load_options(self) -> LoadOptions:
        """The model these settings load here, and how."""
        return LoadOptions(self.model, self.vision_tower, self.device, self.dtype, self.quantize, self.engine)

    def model_changed(self, other: Settings) -> bool:
        """Whether going from `self` to `other` needs the model loaded again."""
        keys = ("use_server", "server_url", "server_model", "server_api_key") if self.use_server else ("use_server",)
        # the server's fields matter only while it answers (turning it on is `use_server`)
        return self.load_options != other.load_options or any(getattr(self, key) != getattr(other, key)
                                                              for key in keys)

    def sampling(self) -> SamplingSettings:
        """How the model picks its words, as set here (the rest at the core's defaults)."""
        return SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    @classmethod
    def from_dict(cls, raw: dict) -> tuple[Settings, list[Wording]]:
        """The settings in `raw`, each field checked on its own: one of the wrong type or out of range falls back
        to its default, and the list returned says which, as sentences for people (worded again in a new
        language). Unknown keys are ignored."""
        defaults = cls()
        values: dict[str, object] = {}
        problems: list[Wording] = []
        for field in fields(cls):
            if field.name not in raw:
                continue
            value, default = raw[field.name], getattr(defaults, field.name)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is type(default) and _usable(field.name, value):
                values[field.name] = value
            else:
                problems.append(_unusable(field.name, _shown(value), _shown(default)))
        return replace(defaults, **values), problems


def _unusable(name: str, value: str, default: str) -> Wording:
    return lambda: translate("Settings", "The setting “{name}” was {value}, which cannot be used; it is back to its "
                                         "default, {default}.").format(name=name, value=value, default=default)


def _usable(name: str, value: object) -> bool:
    """Whether a value of the right type is one the app can use, and the dialog show."""
    if name in _CHOICES:
        return value in _CHOICES[name]
    if isinstance(value, str):
        return "\0" not in value and _encodable(value)  # a NUL ends a path; a lone surrogate cannot be written
    if name in _RANGES:
        low, high = _RANGES[name]
        return math.isfinite(value) and low <= value <= high
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: object) -> str:
    return reprlib.repr(value)  # bounded: a hand-edited value can be long


class SettingsFile:
    """Reads and writes `Settings` as JSON; a missing or damaged file gives the defaults."""

    def __init__(self, path: Path | None = None):
        self.path = path or config_dir() / "settings.json"

    def load(self) -> Settings:
        """The settings, with the default for whatever could not be used (`load_checked` also says what)."""
        return self.load_checked()[0]

    def load_checked(self) -> tuple[Settings, list[Wording]]:
        """The settings and, for each part that could not be used and is at its default, a sentence saying so."""
        if not self.path.exists() and not self.path.is_symlink():
            return Settings(), []
        try:
            raw = json.loads(read_regular_file(self.path, MAX_CONFIG_BYTES, what="a settings file").decode("utf-8"))
        except XvlmError as exc:
            log.warning("using the default settings: %s", exc)
            reason = str(exc)
            return Settings(), [lambda: translate("Settings", "The settings could not be read, so all of them are at "
                                                              "their defaults: {reason}").format(reason=reason)]
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested beyond any real settings file
            log.warning("settings file %s damaged (%s); using the defaults", self.path, type(exc).__name__)
            raw = None
        if not isinstance(raw, dict):
            path = self.path
            return Settings(), [lambda: translate("Settings", "The settings file {path} is damaged, so all settings "
                                                              "are at their defaults.").format(path=path)]
        settings, problems = Settings.from_dict(raw)
        for problem in problems:
            log.warning("%s: %s", self.path, problem())
        return settings, problems

    def save(self, settings: Settings) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".json.partial")
            partial.unlink(missing_ok=True)
            # an API key is kept here only without a keyring: then only its owner may read the file
            mode = 0o600 if settings.server_api_key else 0o666
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as out:
                out.write(json.dumps(asdict(settings), indent=2))
            os.replace(partial, self.path)  # never leave a half-written file behind
        except OSError as exc:
            log.error("cannot save the settings to %s: %s", self.path, exc)


class AppSettings:
    """The one live settings object the window, the controller and the start-up share.

    Read `current`; change it only through `update` or `replace`, which also save the file, so no part of the app
    keeps a copy that can drift.
    """

    def __init__(self, file: SettingsFile, initial: Settings | None = None):
        self.file = file
        # What the file held that could not be used (now at its default): the window says so once.
        self.problems: list[Wording] = []
        if initial is None:
            initial, self.problems = file.load_checked()
        self.current = initial

    def update(self, **changes) -> None:
        self.replace(replace(self.current, **changes))

    def replace(self, new: Settings) -> None:
        self.current = new
        self.file.save(new)
