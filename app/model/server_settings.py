"""Settings → "Use a model server": the address, the API key and the model, picked from the server's list; and the
same fields in a dialog of their own, for the first-run page's "Use a model server…"."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.i18n import translate
from app.model.remote_model import ServerError, keyring_available, list_models
from app.model.remote_model import api_key as stored_api_key

if TYPE_CHECKING:
    from app.settings import Settings


class ServerSettingsBox(QGroupBox):
    """A checkable group: checked, the chat answers with the model on the server instead of a local one."""

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(translate("ServerSettingsBox", "Use a model server"), parent)
        self.setCheckable(True)
        self.setChecked(settings.use_server)
        self.setAccessibleName(translate("ServerSettingsBox", "Use a model server"))

        self.address_edit = QLineEdit(settings.server_url)
        self.address_edit.setPlaceholderText(translate("ServerSettingsBox",
                                                       "e.g. http://gpu-box:8000/v1 (xvlm serve, vLLM, LM Studio…)"))
        self.address_edit.setAccessibleName(translate("ServerSettingsBox", "Server address"))
        self.key_edit = QLineEdit(stored_api_key(settings))
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText(translate("ServerSettingsBox", "Only if the server asks for one"))
        self.key_edit.setAccessibleName(translate("ServerSettingsBox", "API key"))
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setAccessibleName(translate("ServerSettingsBox", "Model on the server"))
        self.model_combo.lineEdit().setPlaceholderText(translate("ServerSettingsBox", "The server's first model"))
        self.model_combo.setEditText(settings.server_model)
        self.fetch_button = QPushButton(translate("ServerSettingsBox", "Fetch models"))
        self.fetch_button.setAccessibleName(translate("ServerSettingsBox", "Fetch the server's models"))
        self.fetch_button.clicked.connect(self.fetch_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.fetch_button)
        self.status_label = QLabel("" if keyring_available() else
                                   translate("ServerSettingsBox", "No system keyring was found: the API key is kept "
                                                                  "in the settings file."))
        self.status_label.setWordWrap(True)

        form = QFormLayout(self)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow(translate("ServerSettingsBox", "&Address:"), self.address_edit)
        form.addRow(translate("ServerSettingsBox", "API &key:"), self.key_edit)
        model_label = QLabel(translate("ServerSettingsBox", "M&odel:"))  # a row of two widgets: Alt+O to the list
        model_label.setBuddy(self.model_combo)
        form.addRow(model_label, model_row)

        form.addRow(self.status_label)

    def fetch_models(self) -> None:
        """Fill the model list from the server's /v1/models, asked off the UI thread (a short, bounded wait)."""
        self.fetch_button.setEnabled(False)
        self.status_label.setText(translate("ServerSettingsBox", "Asking the server for its models…"))
        task = asyncio.ensure_future(self._fetch_models(self.address_edit.text(), self.key_edit.text().strip()))
        self.destroyed.connect(task.cancel)  # the dialog closed first: nothing left to fill

    async def _fetch_models(self, address: str, key: str) -> None:
        try:
            cards = await asyncio.get_running_loop().run_in_executor(None, list_models, address, key)
        except ServerError as exc:
            self.fetch_button.setEnabled(True)
            self.status_label.setText(str(exc))
            return
        # (cancelled, the widgets may be gone: no `finally` touches them)
        self.fetch_button.setEnabled(True)
        names = [card.id for card in cards]
        current = self.model_combo.currentText()
        self.model_combo.clear()
        self.model_combo.addItems(names)
        self.model_combo.setCurrentText(current if current in names else names[0] if names else "")
        offers = (translate("ServerSettingsBox", "The server offers 1 model.") if len(names) == 1 else
                  translate("ServerSettingsBox", "The server offers {count} models.").format(count=len(names)))
        self.status_label.setText(offers)

    def result_settings(self, settings: Settings) -> Settings:
        return replace(settings, use_server=self.isChecked(), server_url=self.address_edit.text().strip(),
                       server_model=self.model_combo.currentText().strip(),
                       server_api_key=self.key_edit.text().strip())


class ServerDialog(QDialog):
    """"Use a model server": the server's fields alone, on, for a computer without the model; OK once there is an
    address. `result_settings(settings)` gives the settings that use it."""

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle(translate("ServerSettingsBox", "Use a model server"))
        self.setMinimumWidth(460)
        intro = QLabel(translate("ServerSettingsBox", "The chat answers with a model on another computer (xvlm serve, "
                                                      "vLLM, LM Studio…); nothing is downloaded here. You can change "
                                                      "this later in Settings."))
        intro.setWordWrap(True)
        self.box = ServerSettingsBox(replace(settings, use_server=True), self)
        self.box.setCheckable(False)  # on: that is what this dialog is for
        self.box.setTitle("")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText(translate("ServerSettingsBox",
                                                                                  "&Use This Server"))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.box.address_edit.textChanged.connect(self._update_ok)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.box)
        layout.addWidget(self.buttons)
        self._update_ok()
        self.box.address_edit.setFocus()

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(bool(self.box.address_edit.text().strip()))

    def result_settings(self, settings: Settings) -> Settings:
        return replace(self.box.result_settings(settings), use_server=True)
