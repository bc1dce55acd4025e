"""The Simplified Chinese catalog: complete, in step with the app's strings, and compiled from what is committed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("translations", PROJECT_ROOT / "packaging" / "translations.py")
translations = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(translations)

PLACEHOLDER = re.compile(r"\{\w*\}")


def messages(ts: Path) -> dict[tuple[str, str], ET.Element]:
    """(context, source) -> the <translation> element."""
    return {(context.findtext("name"), message.findtext("source")): message.find("translation")
            for context in ET.parse(ts).getroot().iter("context") for message in context.iter("message")}


@pytest.mark.parametrize("language", translations.LANGUAGES)
def test_every_message_is_translated_with_its_placeholders_and_access_keys(language):
    catalog = messages(translations.sources(language))
    assert catalog
    for (context, source), translation in catalog.items():
        where = f"{context}: {source!r}"
        assert translation.get("type") is None, f"{where} is {translation.get('type')}"
        assert (translation.text or "").strip(), f"{where} has no translation"
        assert sorted(PLACEHOLDER.findall(translation.text)) == sorted(PLACEHOLDER.findall(source)), where
        assert ("&" in source.replace("&&", "")) == ("&" in translation.text.replace("&&", "")), where


@pytest.mark.parametrize("language", translations.LANGUAGES)
def test_the_catalog_holds_exactly_the_strings_of_the_app(language, tmp_path):
    fresh = tmp_path / translations.sources(language).name
    shutil.copy(translations.sources(language), fresh)
    files = sorted(str(path) for path in (PROJECT_ROOT / "app").rglob("*.py"))
    subprocess.run([str(translations.qt_tool("lupdate")), *files, "-ts", str(fresh), "-no-obsolete", "-silent"],
                   check=True)
    assert messages(fresh).keys() == messages(translations.sources(language)).keys(), \
        "run: python packaging/translations.py update, translate what is new, then release"


def test_the_committed_qm_files_are_compiled_from_the_committed_sources(tmp_path):
    for fresh in translations.release(tmp_path):
        committed = translations.TRANSLATIONS / fresh.name
        assert committed.read_bytes() == fresh.read_bytes(), "run: python packaging/translations.py release"
