"""Which system libraries Qt's X11 platform plugin cannot find, and the packages that bring them.

Qt aborts the process when its platform plugin does not load, naming one library at best (often the wrong one),
so the check runs before the first window: the dynamic loader is asked for everything the plugin links to.
`python -m app.qt_platform` prints the same sentence; tools/setup-venv runs it after installing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

# Library -> (Debian and Ubuntu package, Fedora package), for everything Qt's xcb plugin links beyond glibc.
PACKAGES = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
}
_NOT_FOUND = re.compile(r"^\s*(\S+) => not found", re.MULTILINE)


def xcb_plugin() -> Path | None:
    """Qt's X11 platform plugin as installed with PySide6, or None where there is none (Windows, macOS)."""
    from PySide6.QtCore import QLibraryInfo  # QtCore only: it loads without any display library

    plugin = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def missing_libraries(plugin: Path) -> list[str]:
    """The libraries `plugin` links to that the dynamic loader cannot find, as their file names."""
    try:
        linked = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):  # no ldd (not glibc): nothing can be told in advance
        return []
    return sorted(set(_NOT_FOUND.findall(linked.stdout)))


def advice(missing: list[str]) -> str:
    """One sentence that names the missing libraries and the commands that install them."""
    known = [PACKAGES[name] for name in missing if name in PACKAGES]
    debian = " ".join(dict.fromkeys(packages[0] for packages in known))
    fedora = " ".join(dict.fromkeys(packages[1] for packages in known))
    text = f"The window cannot open: the system lacks libraries Qt needs to draw on X11 ({', '.join(missing)})."
    if known:
        text += (f" Install them with `sudo apt install {debian}` (Debian, Ubuntu) or `sudo dnf install {fedora}`"
                 " (Fedora), then start XVLM Chat again.")
    return text


def uses_xcb(environ: os._Environ | dict[str, str]) -> bool:
    """Whether Qt will pick its X11 plugin: asked for by name, or the default on a Linux desktop without Wayland."""
    asked = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0]
    return sys.platform.startswith("linux") and (asked == "xcb" or (not asked and not environ.get("WAYLAND_DISPLAY")))


def check_before_window(environ: os._Environ | dict[str, str] = os.environ) -> str | None:
    """The sentence to print instead of opening a window that Qt cannot show, or None when all is there."""
    plugin = xcb_plugin() if uses_xcb(environ) else None
    missing = missing_libraries(plugin) if plugin else []
    return advice(missing) if missing else None


def main() -> int:
    """`python -m app.qt_platform`: say what is missing, whatever the session's platform; exit 1 if something is."""
    plugin = xcb_plugin() if sys.platform.startswith("linux") else None
    missing = missing_libraries(plugin) if plugin else []
    if missing:
        print(advice(missing))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
