"""Where Qt's X11 plugin lacks system libraries, the app says which packages bring them instead of aborting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import qt_platform

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# An ldd that finds everything but two of the X11 plugin's libraries, as on a minimal Debian.
FAKE_LDD = """#!/bin/sh
echo "	libxcb-icccm.so.4 => not found"
echo "	libxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)"
echo "	libxcb-keysyms.so.1 => not found"
"""


@pytest.fixture
def minimal_debian(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ldd").write_text(FAKE_LDD)
    (bin_dir / "ldd").chmod(0o755)
    environ = {key: value for key, value in os.environ.items() if key not in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return {**environ, "PATH": f"{bin_dir}{os.pathsep}{environ['PATH']}", "DISPLAY": ":99",
            "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_the_advice_names_each_library_and_the_packages_for_debian_and_fedora():
    text = qt_platform.advice(["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in text
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in text
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in text


def test_a_library_without_a_known_package_is_still_named():
    assert "libsomething.so.7" in qt_platform.advice(["libsomething.so.7"])


@pytest.mark.parametrize(("environ", "xcb"), [
    ({}, True),
    ({"QT_QPA_PLATFORM": "xcb"}, True),
    ({"QT_QPA_PLATFORM": "xcb:dpi=1"}, True),
    ({"QT_QPA_PLATFORM": "offscreen"}, False),
    ({"QT_QPA_PLATFORM": "wayland;xcb"}, False),
    ({"WAYLAND_DISPLAY": "wayland-0"}, False),
])
def test_only_the_x11_plugin_is_checked(environ, xcb):
    assert qt_platform.uses_xcb(environ) is (xcb and sys.platform.startswith("linux"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's X11 plugin is Linux's")
def test_xvlm_chat_prints_the_packages_instead_of_aborting(minimal_debian):
    done = subprocess.run([sys.executable, "main.py"], cwd=PROJECT_ROOT, env=minimal_debian, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's X11 plugin is Linux's")
def test_the_module_says_the_same_for_setup(minimal_debian):
    done = subprocess.run([sys.executable, "-m", "app.qt_platform"], cwd=PROJECT_ROOT, env=minimal_debian,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "sudo dnf install xcb-util-wm xcb-util-keysyms" in done.stdout
