"""XVLM Chat, the desktop program: PySide6 widgets over xvlm_core, which runs on one worker thread."""

APP_NAME = "XVLM Chat"
