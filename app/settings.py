"""The one settings object (a JSON file under the user config folder) and the dialog that edits it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import platformdirs
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
from xvlm_core.sampling import SamplingSettings

from app import APP_NAME

log = logging.getLogger(__name__)

DTYPES = [("auto", "Automatic"), ("float32", "float32 (most memory)"),
          ("bfloat16", "bfloat16"), ("float16", "float16")]
# How the language model's weights are held: as in the checkpoint, or 8-bit (xvlm_core's `quantize`).
PRECISIONS = [("none", "Exact (bf16/fp16/fp32 weights)"),
              ("int8", "Faster: 8-bit weights (answers may differ slightly)")]


def config_dir() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything a person can change. Empty strings mean "the default" (the hub's model, the model's prompt)."""

    model: str = ""  # a folder or a hub repo id; "" = the default model from the hub
    vision_tower: str = ""
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "none"  # "int8": 8-bit weights, faster and half the memory
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    system_prompt: str = ""
    hub_endpoint: str = ""
    download_started: bool = False  # a download was under way when the app last closed: resume it
    window_geometry: str = ""  # QWidget.saveGeometry(), base64

    def model_changed(self, other: Settings) -> bool:
        """Whether going from `self` to `other` needs the model loaded again."""
        keys = ("model", "vision_tower", "device", "dtype", "quantize")
        return any(getattr(self, key) != getattr(other, key) for key in keys)

    def sampling(self) -> SamplingSettings:
        """How the model picks its words, as set here (the rest at the core's defaults)."""
        return SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    @classmethod
    def from_dict(cls, raw: dict) -> Settings:
        """Known keys of the right type; anything else (a hand edit, an older version) falls back to the default."""
        defaults = cls()
        values = {}
        for field in fields(cls):
            value, default = raw.get(field.name), getattr(defaults, field.name)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is type(default):
                values[field.name] = value
        return replace(defaults, **values)


class SettingsFile:
    """Reads and writes `Settings` as JSON; a missing or damaged file gives the defaults."""

    def __init__(self, path: Path | None = None):
        self.path = path or config_dir() / "settings.json"

    def load(self) -> Settings:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Settings()
        except (OSError, ValueError) as exc:
            log.warning("settings file %s unreadable (%s); using the defaults", self.path, exc)
            return Settings()
        return Settings.from_dict(raw if isinstance(raw, dict) else {})

    def save(self, settings: Settings) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_suffix(".json.partial")
            partial.write_text(json.dumps(asdict(settings), indent=2), encoding="utf-8")
            os.replace(partial, self.path)  # never leave a half-written file behind
        except OSError as exc:
            log.error("cannot save the settings to %s: %s", self.path, exc)


class SettingsDialog(QDialog):
    """Edits a copy of the settings; `result_settings()` gives the edited copy after exec()."""

    def __init__(self, settings: Settings, devices: list[tuple[str, str]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(520)
        self._settings = settings

        self.model_edit = QLineEdit(settings.model)
        self.model_edit.setPlaceholderText("Default: Xmodel-VLM from the model hub")
        self.model_edit.setAccessibleName("Model folder or hub repository")
        browse = QPushButton("Browse…")
        browse.setAccessibleName("Choose a model folder")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit, 1)
        model_row.addWidget(browse)

        self.tower_edit = QLineEdit(settings.vision_tower)
        self.tower_edit.setPlaceholderText("Default: the one the model names")
        self.tower_edit.setAccessibleName("Vision tower folder or hub repository")

        self.device_combo = QComboBox()
        self.device_combo.setAccessibleName("Device")
        known = devices or [("auto", "Automatic"), ("cpu", "CPU")]
        for value, label in known:
            self.device_combo.addItem(label, value)
        if self.device_combo.findData(settings.device) < 0:
            self.device_combo.addItem(f"{settings.device} (not found on this machine)", settings.device)
        self.device_combo.setCurrentIndex(self.device_combo.findData(settings.device))

        self.precision_combo = QComboBox()
        self.precision_combo.setAccessibleName("Precision")
        for value, label in PRECISIONS:
            self.precision_combo.addItem(label, value)
        self.precision_combo.setCurrentIndex(max(0, self.precision_combo.findData(settings.quantize)))
        self.precision_combo.setToolTip("8-bit weights decode about twice as fast on a CPU and take half the "
                                        "memory; the answers are close to the exact model's but not the same.")

        self.dtype_combo = QComboBox()
        self.dtype_combo.setAccessibleName("Number format")
        for value, label in DTYPES:
            self.dtype_combo.addItem(label, value)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(settings.dtype)))

        self.temperature_spin = QDoubleSpinBox()
        self.temperature_spin.setRange(0.0, 2.0)
        self.temperature_spin.setSingleStep(0.1)
        self.temperature_spin.setValue(settings.temperature)
        self.temperature_spin.setSpecialValueText("0 (always the likeliest word)")
        self.temperature_spin.setAccessibleName("Temperature")

        self.top_p_spin = QDoubleSpinBox()
        self.top_p_spin.setRange(0.05, 1.0)
        self.top_p_spin.setSingleStep(0.05)
        self.top_p_spin.setValue(settings.top_p)
        self.top_p_spin.setAccessibleName("Top-p")

        self.max_tokens_spin = QSpinBox()
        self.max_tokens_spin.setRange(1, 8192)
        self.max_tokens_spin.setValue(settings.max_new_tokens)
        self.max_tokens_spin.setAccessibleName("Longest answer in tokens")

        self.system_edit = QPlainTextEdit(settings.system_prompt)
        self.system_edit.setPlaceholderText("Empty: the prompt the model was trained with")
        self.system_edit.setAccessibleName("System prompt")
        self.system_edit.setTabChangesFocus(True)
        self.system_edit.setFixedHeight(90)

        self.endpoint_edit = QLineEdit(settings.hub_endpoint)
        self.endpoint_edit.setPlaceholderText("Default: https://huggingface.co (or HF_ENDPOINT)")
        self.endpoint_edit.setAccessibleName("Model hub address or mirror")

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("&Model:", model_row)
        form.addRow("&Vision tower:", self.tower_edit)
        form.addRow("&Device:", self.device_combo)
        form.addRow("&Precision:", self.precision_combo)
        form.addRow("&Number format:", self.dtype_combo)
        form.addRow("&Temperature:", self.temperature_spin)
        form.addRow("Top-&p:", self.top_p_spin)
        form.addRow("&Longest answer:", self.max_tokens_spin)
        form.addRow("&System prompt:", self.system_edit)
        form.addRow("Model &hub:", self.endpoint_edit)
        note = QLabel("Changing the model, device, precision or number format reloads the model in the background.")
        note.setWordWrap(True)
        note.setEnabled(False)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(buttons)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the model folder", self.model_edit.text())
        if folder:
            self.model_edit.setText(folder)

    def result_settings(self) -> Settings:
        return replace(
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
        )
