"""Advice the model stack wrote for its command line, said as what to do in the window.

xvlm_core's errors end with what a terminal user types ("pass its folder with --vision-tower"); the app and
`xvlm` share those errors, so the app rewords the advice here and names the setting that fixes it, which the
banner offers as a button.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The command-line options the core's messages name, and the Settings field that does the same in the window.
FLAG_SETTINGS = {
    "--model": ("model", "Settings › Model"),
    "--vision-tower": ("vision_tower", "Settings › Vision tower"),
    "--device": ("device", "Settings › Device"),
    "--dtype": ("dtype", "Settings › Precision"),
}
_FLAG = re.compile(r"--[a-z][a-z-]*")
# Whole phrases first, so that the sentence still reads well; then any option left, by name.
_PASS_FOLDER = re.compile(r"pass its folder with (--[a-z-]+)|pass (--[a-z-]+) with its folder")
_DOWNLOAD = re.compile(r"run: xvlm download \S+?(?=[.;]?$)", re.MULTILINE)


@dataclass(frozen=True)
class Advice:
    text: str  # the message, with advice a person can follow in the window
    setting: str = ""  # the Settings field that fixes it ("vision_tower", "model", ...), "" if none


def window_advice(message: str) -> Advice:
    """`message` (an error from the core) with its command-line advice turned into the window's."""
    settings: list[str] = []

    def place_of(flag: str) -> str:
        setting, place = FLAG_SETTINGS.get(flag, ("", "Settings"))
        settings.append(setting)
        return place

    def download(_found: re.Match) -> str:
        # The window fetches what the model needs on its own; what it cannot find is chosen as a folder.
        what, flag = ("vision tower", "--vision-tower") if "vision tower" in message else ("model", "--model")
        return f"choose a folder that holds the {what} in {place_of(flag)}"

    text = _PASS_FOLDER.sub(lambda found: f"choose its folder in {place_of(found.group(1) or found.group(2))}",
                            message)
    text = _DOWNLOAD.sub(download, text)
    text = _FLAG.sub(lambda found: place_of(found.group(0)) if found.group(0) in FLAG_SETTINGS else found.group(0),
                     text)
    return Advice(text, next((setting for setting in settings if setting), ""))
