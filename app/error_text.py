"""A core error as the window says it: a translated headline chosen by its code, the core's English details,
and the Settings field that fixes it (the banner offers it as a button).

The core says what happened; what to do is the front end's to say (`xvlm` names its options, this module the
window's settings), so nothing here reads the core's wording.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QT_TRANSLATE_NOOP
from xvlm_core.errors import Problem, Remedy  # torch-free

from app.i18n import translate

HEADLINES = {
    Remedy.SEE_LOG: QT_TRANSLATE_NOOP("ErrorText", "Something went wrong. The details are in the log: Help → Open Log "
                                                   "Folder."),
    Remedy.CHOOSE_MODEL: QT_TRANSLATE_NOOP("ErrorText", "The model's files cannot be used. Choose a model folder in "
                                                        "Settings › Model."),
    Remedy.DOWNLOAD_MODEL: QT_TRANSLATE_NOOP("ErrorText", "The model is not downloaded yet. Choose a folder that "
                                                          "holds it in Settings › Model."),
    Remedy.CHOOSE_VISION_TOWER: QT_TRANSLATE_NOOP("ErrorText", "The vision tower cannot be found or used. Choose its "
                                                               "folder in Settings › Vision tower."),
    Remedy.CHOOSE_DEVICE: QT_TRANSLATE_NOOP("ErrorText", "This device cannot be used here. Choose another in "
                                                         "Settings › Device."),
    Remedy.CHOOSE_PRECISION: QT_TRANSLATE_NOOP("ErrorText", "This number format cannot be used here. Choose another "
                                                            "in Settings › Number format."),
    Remedy.FREE_MEMORY: QT_TRANSLATE_NOOP("ErrorText", "The model ran out of memory. Close other programs, or in "
                                                       "Settings choose 8-bit weights, a smaller number format or the "
                                                       "CPU, or start a new chat (shorter conversations need less "
                                                       "memory)."),
    Remedy.SHORTEN_CONVERSATION: QT_TRANSLATE_NOOP("ErrorText", "The conversation is too long for the model. Shorten "
                                                                "your message or start a new chat."),
    Remedy.CHOOSE_IMAGE: QT_TRANSLATE_NOOP("ErrorText", "This picture cannot be used. Choose another one."),
    Remedy.CHECK_NETWORK: QT_TRANSLATE_NOOP("ErrorText", "The model hub cannot be reached. Check that this computer "
                                                         "is online, or use a mirror."),
    Remedy.CHECK_MIRROR: QT_TRANSLATE_NOOP("ErrorText", "The model hub's address does not lead to a model hub. Check "
                                                        "the mirror's address."),
    Remedy.SIGN_IN: QT_TRANSLATE_NOOP("ErrorText", "The model hub wants an access token. Set HF_TOKEN to a token of "
                                                   "an account that may download this model."),
    Remedy.FREE_DISK: QT_TRANSLATE_NOOP("ErrorText", "There is not enough free disk space. Free up space, or choose a "
                                                     "folder on another disk."),
    Remedy.CHOOSE_FOLDER: QT_TRANSLATE_NOOP("ErrorText", "This folder cannot be written to. Choose a folder you can "
                                                         "write to."),
    Remedy.TRY_AGAIN: QT_TRANSLATE_NOOP("ErrorText", "The download did not go through. Try again; if this repeats, "
                                                     "use a mirror."),
    Remedy.CHECK_SERVER: QT_TRANSLATE_NOOP("ErrorText", "The model server is not answering. Check that it is running "
                                                        "and that its address in Settings is right, then press "
                                                        "Retry."),
}
# The Settings field each code is fixed in (window.open_settings starts there).
SETTINGS = {Remedy.CHOOSE_MODEL: "model", Remedy.DOWNLOAD_MODEL: "model", Remedy.CHOOSE_VISION_TOWER: "vision_tower",
            Remedy.CHOOSE_DEVICE: "device", Remedy.CHOOSE_PRECISION: "dtype"}


@dataclass(frozen=True)
class ErrorText:
    headline: str  # what to do, translated; "" when the details say all there is (Remedy.NONE)
    details: str  # what happened, as the model stack said it (in English)
    setting: str = ""  # the Settings field that fixes it ("vision_tower", "model", ...), "" if none

    def sentence(self, separator: str = " ") -> str:
        """The headline, then the details: one text for a line under an answer or a status."""
        return separator.join(part for part in (self.headline, self.details) if part)


def failure_text(details: str, code: str) -> str:
    """A failed answer's line from what the history keeps of its problem, in the language of the moment; without
    a code it knows, `details` is already the sentence to show."""
    try:
        remedy = Remedy(code)
    except ValueError:
        return details
    return error_text(Problem(remedy, details)).sentence()


def error_text(problem: Problem) -> ErrorText:
    headline = HEADLINES.get(problem.code, "")
    return ErrorText(translate("ErrorText", headline) if headline else "", problem.details,
                     SETTINGS.get(problem.code, ""))
