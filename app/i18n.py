"""The interface's language: Qt translators for the app's own strings and for Qt's, from Settings or the system.

Every string a person sees goes through `translate(context, text)` (Qt's QCoreApplication.translate, which
`pyside6-lupdate` finds in the source); the contexts are written out rather than taken from `self.tr()`, whose
context in PySide6 is the class of the object at run time, so a subclass would lose its translations.
Sentences with values are translated whole and filled in afterwards with str.format.

The language changes at once: `install_translators` replaces the translators it installed before, Qt sends every
widget a LanguageChange event, and each widget that shows text words it again in its `retranslate()` (Qt's
retranslateUi pattern). A text made from values at run time is kept as the function that words it (`Wording`),
so it can be worded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QT_TRANSLATE_NOOP, QCoreApplication, QLibraryInfo, QLocale, QTranslator

from app.icons import resources_dir

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

CATALOG = "xvlm_chat"  # resources/translations/xvlm_chat_<locale>.ts and .qm
TRANSLATOR_NAME = "interface language"  # the object name of the translators install_translators installs

Wording = Callable[[], str]  # words a text in the language of the moment; called again when the language changes

# (setting, name in the list). A language is named in itself, so a person who cannot read the current one finds theirs.
LANGUAGES = (("system", QT_TRANSLATE_NOOP("Language", "System")), ("en", "English"), ("zh_CN", "简体中文"))
LOCALES = {"en": QLocale(QLocale.Language.English, QLocale.Country.UnitedStates),
           "zh_CN": QLocale(QLocale.Language.Chinese, QLocale.Country.China)}


def translations_dir() -> Path:
    return resources_dir() / "translations"


def language_label(setting: str) -> str:
    """The name shown for a Language setting in Settings."""
    labels = dict(LANGUAGES)
    return translate("Language", labels[setting]) if setting == "system" else labels[setting]


def chosen_locale(language: str) -> QLocale:
    """The locale for the Language setting: "system" (or anything unknown) follows the desktop's."""
    return LOCALES.get(language, QLocale.system())


def install_translators(app: QCoreApplication, language: str) -> list[QTranslator]:
    """Load and install the app's and Qt's translations for `language` in place of those installed for the
    language before; returns the installed translators. The windows open follow at once (see the module's notes).

    English needs none (the source strings are English). A language without a catalog stays English.
    """
    for old in app.findChildren(QTranslator, TRANSLATOR_NAME):
        app.removeTranslator(old)
        old.setParent(None)  # a caller that kept it may still hold it; otherwise it goes now
    locale = chosen_locale(language)
    QLocale.setDefault(locale)  # dates and numbers worded again on the LanguageChange follow it too
    installed: list[QTranslator] = []
    if locale.language() == QLocale.Language.English:
        log.info("interface language: English")
        return installed

    for name, folder in ((CATALOG, translations_dir()),
                         ("qtbase", Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)))):
        translator = QTranslator()
        # load() tries each of the locale's UI languages: zh_CN, then zh, ...
        if not translator.load(locale, name, "_", str(folder)):
            break  # Qt's buttons in a language the rest of the window does not speak would be worse than English
        translator.setObjectName(TRANSLATOR_NAME)
        translator.setParent(app)
        app.installTranslator(translator)
        installed.append(translator)

    log.info("interface language: %s (%d translation catalog(s))", locale.name(), len(installed))
    return installed


class Worded:
    """Texts shown through setters (a label's setText, ...) together with the wordings that made them, so that
    `reword()` words each again in the language of the moment. Every text a setter shows goes through `show`, or a
    new language would bring back an old one."""

    def __init__(self) -> None:
        self._shown: dict[Callable[[str], object], Wording] = {}

    def show(self, setter: Callable[[str], object], wording: Wording) -> None:
        self._shown[setter] = wording
        setter(wording())

    def reword(self) -> None:
        for setter, wording in self._shown.items():
            setter(wording())
