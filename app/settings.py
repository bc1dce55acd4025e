"""The one settings object (a JSON file under the user config folder) and the dialog that edits it."""

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
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from xvlm_core.errors import XvlmError
from xvlm_core.load_options import LoadOptions
from xvlm_core.local_files import MAX_CONFIG_BYTES, read_regular_file
from xvlm_core.sampling import SamplingSettings

from app import APP_NAME
from app.i18n import LANGUAGES, language_label, translate
from app.server_settings import ServerSettingsBox
from app.theme import THEMES

log = logging.getLogger(__name__)

DTYPES = [("auto", QT_TRANSLATE_NOOP("SettingsDialog", "Automatic")),
          ("float32", QT_TRANSLATE_NOOP("SettingsDialog", "float32 (most memory)")),
          ("bfloat16", "bfloat16"), ("float16", "float16")]
# How the language model's weights are held: as in the checkpoint, 8-bit or 4-bit (xvlm_core's `quantize`).
PRECISIONS = [("none", QT_TRANSLATE_NOOP("SettingsDialog", "Exact (bf16/fp16/fp32 weights)")),
              ("int8", QT_TRANSLATE_NOOP("SettingsDialog", "Faster: 8-bit weights (answers may differ slightly)")),
              ("int4", QT_TRANSLATE_NOOP("SettingsDialog", "Fastest: 4-bit weights (answers may differ more)"))]


MAX_ANSWER_TOKENS = 4096  # Xmodel-VLM's context: no answer can be longer than what the model reads at once
# What the dialog's spin boxes take, so a loaded value always fits them. A server's model may read more than
# Xmodel-VLM, so the longest answer is bounded only far beyond any model's context.
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_P_RANGE = (0.05, 1.0)
ANSWER_TOKENS_RANGE = (1, 1 << 20)
_RANGES = {"temperature": TEMPERATURE_RANGE, "top_p": TOP_P_RANGE, "max_new_tokens": ANSWER_TOKENS_RANGE}
_CHOICES = {"dtype": {value for value, _ in DTYPES}, "quantize": {value for value, _ in PRECISIONS},
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
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    system_prompt: str = ""
    hub_endpoint: str = ""
    download_started: bool = False  # a download was under way when the app last closed: resume it
    window_geometry: str = ""  # QWidget.saveGeometry(), base64
    theme: str = "system"  # "system", "light" or "dark" (View > Theme)
    language: str = "system"  # "system", "en" or "zh_CN" (Settings > Language), applied at the next start
    use_server: bool = False  # answer with a model on an OpenAI-compatible server instead of a local one
    server_url: str = ""
    server_model: str = ""  # "" = the server's first model
    server_api_key: str = ""  # only when there is no system keyring (app/remote_model.py)

    @property
    def uses_server(self) -> bool:
        """Whether answers come from a model server rather than a model loaded here."""
        return self.use_server and bool(self.server_url)

    @property
    def load_options(self) -> LoadOptions:
        """The model these settings load here, and how."""
        return LoadOptions(self.model, self.vision_tower, self.device, self.dtype, self.quantize)

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
    def from_dict(cls, raw: dict) -> tuple[Settings, list[str]]:
        """The settings in `raw`, each field checked on its own: one of the wrong type or out of range falls back
        to its default, and the list returned says which, in sentences for people. Unknown keys are ignored."""
        defaults = cls()
        values, problems = {}, []
        for field in fields(cls):
            if field.name not in raw:
                continue
            value, default = raw[field.name], getattr(defaults, field.name)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is type(default) and _usable(field.name, value):
                values[field.name] = value
            else:
                problems.append(translate(
                    "Settings", "The setting “{name}” was {value}, which cannot be used; it is back to its default, "
                                "{default}.").format(name=field.name, value=_shown(value), default=_shown(default)))
        return replace(defaults, **values), problems


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

    def load_checked(self) -> tuple[Settings, list[str]]:
        """The settings and, for each part that could not be used and is at its default, a sentence saying so."""
        if not self.path.exists() and not self.path.is_symlink():
            return Settings(), []
        try:
            raw = json.loads(read_regular_file(self.path, MAX_CONFIG_BYTES, what="a settings file").decode("utf-8"))
        except XvlmError as exc:
            log.warning("using the default settings: %s", exc)
            return Settings(), [translate("Settings", "The settings could not be read, so all of them are at their "
                                                      "defaults: {reason}").format(reason=exc)]
        except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested beyond any real settings file
            log.warning("settings file %s damaged (%s); using the defaults", self.path, type(exc).__name__)
            raw = None
        if not isinstance(raw, dict):
            return Settings(), [translate("Settings", "The settings file {path} is damaged, so all settings are at "
                                                      "their defaults.").format(path=self.path)]
        settings, problems = Settings.from_dict(raw)
        for problem in problems:
            log.warning("%s: %s", self.path, problem)
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
        self.problems: list[str] = []
        if initial is None:
            initial, self.problems = file.load_checked()
        self.current = initial

    def update(self, **changes) -> None:
        self.replace(replace(self.current, **changes))

    def replace(self, new: Settings) -> None:
        self.current = new
        self.file.save(new)


class SettingsDialog(QDialog):
    """Edits a copy of the settings; `result_settings()` gives the edited copy after exec()."""

    def __init__(self, settings: Settings, devices: list[tuple[str, str]], parent: QWidget | None = None,
                 context_length: int = MAX_ANSWER_TOKENS):
        super().__init__(parent)
        self.setWindowTitle(translate("SettingsDialog", "Settings"))
        self.setMinimumWidth(520)
        self._settings = settings

        self.model_edit = QLineEdit(settings.model)
        self.model_edit.setPlaceholderText(translate("SettingsDialog", "Default: Xmodel-VLM from the model hub"))
        self.model_edit.setAccessibleName(translate("SettingsDialog", "Model folder or hub repository"))
        browse = QPushButton(translate("SettingsDialog", "Browse…"))
        browse.setAccessibleName(translate("SettingsDialog", "Choose a model folder"))
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)

        self.tower_edit = QLineEdit(settings.vision_tower)
        self.tower_edit.setPlaceholderText(translate("SettingsDialog", "Default: the one the model names"))
        self.tower_edit.setAccessibleName(translate("SettingsDialog", "Vision tower folder or hub repository"))

        self.device_combo = QComboBox()
        self.device_combo.setAccessibleName(translate("SettingsDialog", "Device"))
        known = devices or [("auto", "Automatic"), ("cpu", "CPU")]
        for value, label in known:  # the model stack names devices in English; "Automatic" is the app's word
            self.device_combo.addItem(translate("SettingsDialog", "Automatic") if value == "auto" else label, value)

        if self.device_combo.findData(settings.device) < 0:
            self.device_combo.addItem(translate("SettingsDialog", "{device} (not found on this machine)")
                                      .format(device=settings.device), settings.device)
        self.device_combo.setCurrentIndex(self.device_combo.findData(settings.device))

        self.precision_combo = QComboBox()
        self.precision_combo.setAccessibleName(translate("SettingsDialog", "Precision"))
        for value, label in PRECISIONS:
            self.precision_combo.addItem(translate("SettingsDialog", label), value)
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(settings.quantize)))
        self.precision_combo.setToolTip(translate(
            "SettingsDialog", "8-bit weights decode faster on a CPU and take about half the memory, 4-bit weights "
                              "faster still in about a third; the answers are close to the exact model's but not "
                              "the same."))

        self.dtype_combo = QComboBox()
        self.dtype_combo.setAccessibleName(translate("SettingsDialog", "Number format"))
        for value, label in DTYPES:
            self.dtype_combo.addItem(translate("SettingsDialog", label), value)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(settings.dtype)))

        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(*TEMPERATURE_RANGE)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setValue(settings.temperature)
        self.temperature_spin.setSpecialValueText(translate("SettingsDialog", "0 (always the likeliest word)"))
        self.temperature_spin.setAccessibleName(translate("SettingsDialog", "Temperature"))

        self.top_p_spin = QDoubleSpinBox()
        self.top_p_spin.setRange(*TOP_P_RANGE)
        self.top_p_spin.setSingleStep(0.05)
        self.top_p_spin.setValue(settings.top_p)
        self.top_p_spin.setAccessibleName(translate("SettingsDialog", "Top-p"))

        self.max_tokens_spin = QSpinBox()
        context_length = max(ANSWER_TOKENS_RANGE[0], min(context_length, ANSWER_TOKENS_RANGE[1]))  # a server's claim
        self.max_tokens_spin.setRange(ANSWER_TOKENS_RANGE[0], context_length)
        self.max_tokens_spin.setToolTip(translate(
            "SettingsDialog", "At most {count} tokens: the most the model reads and writes at once"
        ).format(count=context_length))
        self.max_tokens_spin.setValue(settings.max_new_tokens)
        self.max_tokens_spin.setAccessibleName(translate("SettingsDialog", "Longest answer in tokens"))

        self.system_edit = QPlainTextEdit(settings.system_prompt)
        self.system_edit.setPlaceholderText(translate("SettingsDialog", "Empty: the prompt the model was trained with"))
        self.system_edit.setAccessibleName(translate("SettingsDialog", "System prompt"))
        self.system_edit.setTabChangesFocus(True)
        self.system_edit.setFixedHeight(90)

        self.endpoint_edit = QLineEdit(settings.hub_endpoint)
        self.endpoint_edit.setPlaceholderText(translate("SettingsDialog",
                                                        "Default: https://huggingface.co (or HF_ENDPOINT)"))
        self.endpoint_edit.setAccessibleName(translate("SettingsDialog", "Model hub address or mirror"))

        self.language_combo = QComboBox()
        self.language_combo.setAccessibleName(translate("SettingsDialog", "Language"))
        for value, _label in LANGUAGES:
            self.language_combo.addItem(language_label(value), value)
        self.language_combo.setCurrentIndex(max(0, self.language_combo.findData(settings.language)))
        self.language_combo.setToolTip(translate("SettingsDialog", "The language changes when the app starts again."))

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        # a row of two widgets has no buddy of its own: Alt+M goes to the field
        model_label = QLabel(translate("SettingsDialog", "&Model:"))
        model_label.setBuddy(self.model_edit)
        form.addRow(model_label, model_row)
        form.addRow(translate("SettingsDialog", "&Vision tower:"), self.tower_edit)
        form.addRow(translate("SettingsDialog", "&Device:"), self.device_combo)
        form.addRow(translate("SettingsDialog", "P&recision:"), self.precision_combo)
        form.addRow(translate("SettingsDialog", "&Number format:"), self.dtype_combo)
        form.addRow(translate("SettingsDialog", "&Temperature:"), self.temperature_spin)
        form.addRow(translate("SettingsDialog", "Top-&p:"), self.top_p_spin)
        form.addRow(translate("SettingsDialog", "&Longest answer:"), self.max_tokens_spin)
        form.addRow(translate("SettingsDialog", "&System prompt:"), self.system_edit)
        form.addRow(translate("SettingsDialog", "Model &hub:"), self.endpoint_edit)
        form.addRow(translate("SettingsDialog", "L&anguage:"), self.language_combo)
        note = QLabel(translate("SettingsDialog", "Changing the model, device, precision or number format reloads "
                                                  "the model in the background; a new language applies when the app "
                                                  "starts again."))
        note.setWordWrap(True)
        note.setEnabled(False)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.server_box = ServerSettingsBox(settings)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(self.server_box)
        layout.addWidget(buttons)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, translate("SettingsDialog", "Choose the model folder"),
                                                  self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)

    def result_settings(self) -> Settings:
        return self.server_box.result_settings(replace(
            self._settings,
            model=self.model_edit.text().strip(),
            vision_tower=self.tower_edit.text().strip(),
            device=self.device_combo.currentData(),
            dtype=self.dtype_combo.currentData(),
            quantize=self.precision_combo.currentData(),
            temperature=round(self.temperature_spin.value(), 2),
            top_p=round(self.top_p_spin.value(), 2),
            max_new_tokens=self.max_tokens_spin.value(),
            system_prompt=self.system_edit.toPlainText().strip(),
            hub_endpoint=self.endpoint_edit.text().strip(),
            language=self.language_combo.currentData(),
        ))

