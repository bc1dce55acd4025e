"""packaging/linux/install.sh: a menu entry and icons for the current user that point at the built folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import assets
import bundle
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTALL = PROJECT_ROOT / "packaging" / "linux" / "install.sh"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux desktop integration")


@pytest.fixture
def built_app(tmp_path: Path) -> Path:
    """A folder laid out like the build (program, template, icon theme), at a path that needs escaping."""
    app = tmp_path / 'odd "place" $HOME 100% \\ back`tick' / bundle.APP_NAME
    resources = app / "_internal" / "resources"
    resources.mkdir(parents=True)
    program = app / bundle.GUI_NAME
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    shutil.copy(PROJECT_ROOT / "resources" / "xvlm-chat.desktop.in", resources)
    made = assets.generate(tmp_path / "assets")
    shutil.copytree(made.icon_theme, app / "_internal" / bundle.ICON_THEME_DIR)
    shutil.copy(INSTALL, app / INSTALL.name)
    return app


def run_install(*args: str, data: Path, script: Path = INSTALL) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_DATA_HOME": str(data), "HOME": str(data.parent)}
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def desktop_entry(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "[Desktop Entry]"
    return dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def unescape_string(value: str) -> str:
    """The desktop entry spec's string escapes: \\s \\n \\t \\r \\\\."""
    out, chars = [], iter(value)
    for char in chars:
        out.append({"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[next(chars)] if char == "\\" else char)
    return "".join(out)


def exec_arguments(value: str) -> list[str]:
    """Split an Exec value as a launcher does: string escapes, then quoted arguments, then %% -> %."""
    text, arguments, current, quoted, index = unescape_string(value), [], "", False, 0
    while index < len(text):
        char = text[index]
        if quoted and char == "\\":
            current, index = current + text[index + 1], index + 2
            continue
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            arguments.append(current)
            current = ""
        else:
            current += char
        index += 1
    assert not quoted
    return [argument.replace("%%", "%") for argument in [*arguments, current] if argument]


def test_install_adds_a_menu_entry_that_starts_the_built_program(built_app, tmp_path):
    data = tmp_path / "home" / ".local" / "share"
    done = run_install(str(built_app), data=data)
    assert done.returncode == 0, done.stderr
    entry = desktop_entry(data / "applications" / "xvlm-chat.desktop")
    program = str(built_app / bundle.GUI_NAME)
    assert exec_arguments(entry["Exec"]) == [program, "%F"]  # "Open With" passes the images it opens
    assert {"image/png", "image/jpeg"} <= set(entry["MimeType"].split(";"))
    assert unescape_string(entry["TryExec"]) == program
    assert entry["Icon"] == "xvlm-chat" and entry["Name"] == "XVLM Chat" and entry["Terminal"] == "false"
    assert entry["StartupWMClass"] == bundle.GUI_NAME
    for size in bundle.ICON_SIZES:
        assert (data / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "xvlm-chat.png").is_file()
    assert (data / "icons" / "hicolor" / "scalable" / "apps" / "xvlm-chat.svg").is_file()
    if shutil.which("desktop-file-validate"):
        checked = subprocess.run(["desktop-file-validate", str(data / "applications" / "xvlm-chat.desktop")],
                                 capture_output=True, text=True, check=False)
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout


def test_the_copy_inside_the_build_installs_its_own_folder(built_app, tmp_path):
    data = tmp_path / "home" / ".local" / "share"
    done = run_install(data=data, script=built_app / INSTALL.name)
    assert done.returncode == 0, done.stderr
    entry = desktop_entry(data / "applications" / "xvlm-chat.desktop")
    assert exec_arguments(entry["Exec"]) == [str(built_app / bundle.GUI_NAME), "%F"]


def test_uninstall_removes_entry_and_icons_and_nothing_else(built_app, tmp_path):
    data = tmp_path / "home" / ".local" / "share"
    other_icon = data / "icons" / "hicolor" / "48x48" / "apps" / "another-app.png"
    other_icon.parent.mkdir(parents=True)
    other_icon.write_bytes(b"png")
    chats = data / "XVLM Chat" / "chats.sqlite3"
    chats.parent.mkdir(parents=True)
    chats.write_bytes(b"history")
    assert run_install(str(built_app), data=data).returncode == 0

    done = run_install("--uninstall", data=data)
    assert done.returncode == 0, done.stderr
    assert not (data / "applications" / "xvlm-chat.desktop").exists()
    assert not list((data / "icons").rglob("xvlm-chat.*"))
    assert other_icon.is_file() and chats.is_file()


def test_install_refuses_a_folder_without_the_program(tmp_path):
    done = run_install(str(tmp_path), data=tmp_path / "data")
    assert done.returncode == 1
    assert "no XVLM Chat build in" in done.stderr
    assert not (tmp_path / "data" / "applications").exists()
