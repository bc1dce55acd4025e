"""The interface's language: Qt translators for the app's own strings and for Qt's, from Settings or the system.

Every string a person sees goes through `translate(context, text)` (Qt's QCoreApplication.translate, which
`pyside6-lupdate` finds in the source); the contexts are written out rather than taken from `self.tr()`, whose
context in PySide6 is the class of the object at run time, so a subclass would lose its translations.
Sentences with values are translated whole and filled in afterwards with str.format.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QT_TRANSLATE_NOOP, QCoreApplication, QLibraryInfo, QLocale, QTranslator

from app.icons import resources_dir

log = logging.getLogger(__name__)

translate = QCoreApplication.translate

CATALOG = "xvlm_chat"  # resources/translations/xvlm_chat_<locale>.ts and .qm

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
    """Load and install the app's and Qt's translations for `language`; returns the installed translators.

    English needs none (the source strings are English). A language without a catalog stays English.
    """
    locale = chosen_locale(language)
    QLocale.setDefault(locale)
    installed: list[QTranslator] = []
    if locale.language() == QLocale.Language.English:
        log.info("interface language: English")
        return installed

    for name, folder in ((CATALOG, translations_dir()),
                         ("qtbase", Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)))):
        translator = QTranslator(app)
        # load() tries each of the locale's UI languages: zh_CN, then zh, ...
        if not translator.load(locale, name, "_", str(folder)):
            break  # Qt's buttons in a language the rest of the window does not speak would be worse than English
        app.installTranslator(translator)
        installed.append(translator)

    log.info("interface language: %s (%d translation catalog(s))", locale.name(), len(installed))
    return installed
