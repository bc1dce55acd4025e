"""The interface's translations: `update` rereads the app's strings into the .ts sources (pyside6-lupdate),
`release` compiles them into the .qm files the app loads (lrelease); the build runs `release` first.

Qt's own tools, as PySide6-Essentials ships them beside the binding. Usage: python packaging/translations.py
update|release. After `update`, translate what is new (Qt Linguist: pyside6-linguist FILE.ts), then `release`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = PROJECT_ROOT / "resources" / "translations"
LANGUAGES = ("zh_CN",)  # besides English, which the source is written in
CATALOG = "xvlm_chat"  # as app.i18n.CATALOG; not imported, so that this runs without the app's dependencies


def qt_tool(name: str) -> Path:
    """lupdate or lrelease from the installed PySide6."""
    import PySide6

    tool = Path(PySide6.__file__).parent / (f"{name}.exe" if sys.platform == "win32" else name)
    if not tool.is_file():
        raise SystemExit(f"{tool} is missing: install PySide6-Essentials 6.8 or newer, which ships Qt's {name}.")
    return tool


def sources(language: str) -> Path:
    return TRANSLATIONS / f"{CATALOG}_{language}.ts"


def update() -> None:
    """Every translatable string of app/ into each .ts (new ones unfinished; ones no longer used dropped)."""
    files = sorted(str(path.relative_to(PROJECT_ROOT)) for path in (PROJECT_ROOT / "app").rglob("*.py"))
    for language in LANGUAGES:
        subprocess.run([str(qt_tool("lupdate")), *files, "-ts", str(sources(language).relative_to(PROJECT_ROOT)),
                        "-target-language", language, "-no-obsolete", "-locations", "none"],
                       cwd=PROJECT_ROOT, check=True)


def release(folder: Path = TRANSLATIONS) -> list[Path]:
    """Compile each .ts into `folder`; returns the .qm files written."""
    written = []
    for language in LANGUAGES:
        target = folder / sources(language).with_suffix(".qm").name
        subprocess.run([str(qt_tool("lrelease")), "-silent", str(sources(language)), "-qm", str(target)], check=True)
        written.append(target)
    return written


if __name__ == "__main__":
    steps = {"update": update, "release": release}
    if len(sys.argv) != 2 or sys.argv[1] not in steps:
        raise SystemExit("usage: python packaging/translations.py update|release")
    steps[sys.argv[1]]()
