"""The Settings dialog: edits a copy of the settings (app/settings.py) and gives it back."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import QCoreApplication, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.i18n import LANGUAGES, language_label, translate
from app.model.server_settings import ServerSettingsBox
from app.settings import (
    ANSWER_TOKENS_RANGE,
    DTYPES,
    ENGINES,
    MAX_ANSWER_TOKENS,
    PRECISIONS,
    TEMPERATURE_RANGE,
    TOP_P_RANGE,
    Settings,
)


class SettingsDialog(QDialog):
    """Edits a copy of the settings; `result_settings()` gives the edited copy after exec()."""

    def __init__(self, settings: Settings, devices: list[tuple[str, str]], parent: QWidget | None = None,
                 context_length: int = MAX_ANSWER_TOKENS, running_model: str = ""):
        """`running_model`: the model loaded now when it is not the one the settings name (the command line's)."""
        super().__init__(parent)
        self.setWindowTitle(translate("SettingsDialog", "Settings"))
        self.setMinimumWidth(520)
        self._settings = settings
        self._running_model = running_model
        self._fitted = False  # sized to the screen when first shown
        self._build_model_fields(settings)
        self._build_device_fields(settings, devices)
        self._build_answer_fields(settings, context_length)
        self._build_hub_and_language_fields(settings)
        self._build_layout(settings)
        self._say_running_model()

    def _build_model_fields(self, settings: Settings) -> None:
        """The model (a field and Browse…, with what runs instead for now below it) and its vision tower."""
        self.model_edit = QLineEdit(settings.model)
        self.model_edit.setPlaceholderText(translate("SettingsDialog", "Default: Xmodel-VLM from the model hub"))
        self.model_edit.setAccessibleName(translate("SettingsDialog", "Model folder or hub repository"))
        browse = QPushButton(translate("SettingsDialog", "Browse…"))
        browse.setAccessibleName(translate("SettingsDialog", "Choose a model folder"))
        browse.clicked.connect(self._browse_model)
        self._model_row = QHBoxLayout()
        self._model_row.addWidget(self.model_edit, 1)
        self._model_row.addWidget(browse)
        # The field keeps the saved setting; what runs instead for now is said below it, not written into it.
        self.running_label = QLabel()
        self.running_label.setWordWrap(True)
        self.running_label.setEnabled(False)  # the muted colour of a note
        self.running_label.setToolTip(self._running_model)
        self.running_label.setVisible(bool(self._running_model))

        self.tower_edit = QLineEdit(settings.vision_tower)
        self.tower_edit.setPlaceholderText(translate("SettingsDialog", "Default: the one the model names"))
        self.tower_edit.setAccessibleName(translate("SettingsDialog", "Vision tower folder or hub repository"))

    def _build_device_fields(self, settings: Settings, devices: list[tuple[str, str]]) -> None:
        """Where the model runs and how its weights are held: device, precision, number format."""
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

        self.engine_combo = QComboBox()
        self.engine_combo.setAccessibleName(translate("SettingsDialog", "Engine"))
        for value, label in ENGINES:
            self.engine_combo.addItem(translate("SettingsDialog", label), value)
        self.engine_combo.setCurrentIndex(max(0, self.engine_combo.findData(settings.engine)))
        self.engine_combo.setToolTip(translate(
            "SettingsDialog", "What runs the language model. llama.cpp answers several times faster on a CPU; "
                              "PyTorch also runs on a GPU. Both run the weights the precision above names."))

        self.dtype_combo = QComboBox()
        self.dtype_combo.setAccessibleName(translate("SettingsDialog", "Number format"))
        for value, label in DTYPES:
            self.dtype_combo.addItem(translate("SettingsDialog", label), value)
        self.dtype_combo.setCurrentIndex(max(0, self.dtype_combo.findData(settings.dtype)))

    def _build_answer_fields(self, settings: Settings, context_length: int) -> None:
        """How answers are written: temperature, top-p, the longest answer, the system prompt."""
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

    def _build_hub_and_language_fields(self, settings: Settings) -> None:
        self.endpoint_edit = QLineEdit(settings.hub_endpoint)
        self.endpoint_edit.setPlaceholderText(translate("SettingsDialog",
                                                        "Default: https://huggingface.co (or HF_ENDPOINT)"))
        self.endpoint_edit.setAccessibleName(translate("SettingsDialog", "Model hub address or mirror"))

        self.language_combo = QComboBox()
        self.language_combo.setAccessibleName(translate("SettingsDialog", "Language"))
        for value, _label in LANGUAGES:
            self.language_combo.addItem(language_label(value), value)
        self.language_combo.setCurrentIndex(max(0, self.language_combo.findData(settings.language)))
        self.language_combo.setToolTip(translate("SettingsDialog", "The language changes at once, when you press OK."))

    def _build_layout(self, settings: Settings) -> None:
        """The fields in a form with their labels, a note on what applies when, the server's box, OK and Cancel."""
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        # a row of two widgets has no buddy of its own: Alt+M goes to the field
        model_label = QLabel(translate("SettingsDialog", "&Model:"))
        model_label.setBuddy(self.model_edit)
        form.addRow(model_label, self._model_row)
        form.addRow("", self.running_label)
        form.addRow(translate("SettingsDialog", "&Vision tower:"), self.tower_edit)
        form.addRow(translate("SettingsDialog", "&Device:"), self.device_combo)
        form.addRow(translate("SettingsDialog", "P&recision:"), self.precision_combo)
        form.addRow(translate("SettingsDialog", "&Number format:"), self.dtype_combo)
        form.addRow(translate("SettingsDialog", "&Engine:"), self.engine_combo)
        form.addRow(translate("SettingsDialog", "&Temperature:"), self.temperature_spin)
        form.addRow(translate("SettingsDialog", "Top-&p:"), self.top_p_spin)
        form.addRow(translate("SettingsDialog", "&Longest answer:"), self.max_tokens_spin)
        form.addRow(translate("SettingsDialog", "&System prompt:"), self.system_edit)
        form.addRow(translate("SettingsDialog", "Model &hub:"), self.endpoint_edit)
        form.addRow(translate("SettingsDialog", "L&anguage:"), self.language_combo)
        note = QLabel(translate("SettingsDialog", "Changing the model, device, precision, number format or engine "
                                                  "reloads the model in the background; a new language applies at "
                                                  "once."))
        note.setWordWrap(True)
        note.setEnabled(False)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.server_box = ServerSettingsBox(settings)
        # The fields scroll and OK and Cancel stay below them: on a short screen the buttons are always in sight.
        fields = QWidget()
        fields_layout = QVBoxLayout(fields)
        fields_layout.setContentsMargins(0, 0, 0, 0)
        fields_layout.addLayout(form)
        fields_layout.addWidget(note)
        fields_layout.addWidget(self.server_box)
        self.fields_area = QScrollArea()
        self.fields_area.setWidget(fields)
        self.fields_area.setWidgetResizable(True)
        self.fields_area.setFrameShape(QFrame.Shape.NoFrame)
        self.fields_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.fields_area.setMinimumHeight(120)
        layout = QVBoxLayout(self)
        layout.addWidget(self.fields_area, 1)
        layout.addWidget(buttons)

    def showEvent(self, event) -> None:
        super().showEvent(event)
        self._say_running_model()
        if not self._fitted:
            self._fitted = True
            self._fit_to_screen()

    def _fit_to_screen(self) -> None:
        """Tall enough for every field without scrolling, where the screen has the room: the wrapped notes'
        heights are known only once the dialog has its width, so it grows by what still scrolls."""
        screen = self.screen()
        if screen is None:
            return
        available = screen.availableGeometry().adjusted(0, 40, 0, 0)  # room for the title bar
        for _ in range(3):  # a taller dialog can wrap no worse: this settles at once, or at the screen's height
            self.layout().activate()
            QCoreApplication.sendPostedEvents(self.fields_area)  # the scroll bar's range follows the resize
            overflow = self.fields_area.verticalScrollBar().maximum()
            height = min(self.height() + overflow, available.height())
            if overflow == 0 or height <= self.height():
                break
            self.resize(self.width(), height)
        place = self.frameGeometry()  # what move() places: the frame, title bar included
        place.moveCenter((self.parentWidget() or self).frameGeometry().center())
        place.moveTop(max(available.top(), min(place.top(), available.bottom() + 1 - place.height())))
        self.move(place.topLeft())

    def _say_running_model(self) -> None:
        """"Running now: …" with the folder cut in the middle to the field's width (a path has no place to wrap)."""
        width = max(200, self.model_edit.width())
        folder = self.running_label.fontMetrics().elidedText(self._running_model, Qt.TextElideMode.ElideMiddle, width)
        self.running_label.setText(translate(
            "SettingsDialog", "Running now: {model}, as the app was started with it. The model above is loaded when "
                              "you change it, and at the next start.").format(model=folder))

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
            engine=self.engine_combo.currentData(),
            temperature=round(self.temperature_spin.value(), 2),
            top_p=round(self.top_p_spin.value(), 2),
            max_new_tokens=self.max_tokens_spin.value(),
            system_prompt=self.system_edit.toPlainText().strip(),
            hub_endpoint=self.endpoint_edit.text().strip(),
            language=self.language_combo.currentData(),
        ))

