"""Where the app logs and how: a rotating file in the user log folder, warnings also on stderr (one line each)."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import platformdirs

from app import APP_NAME

LOG_FILE_BYTES = 2_000_000
LOG_FILES_KEPT = 3


class OneLineFormatter(logging.Formatter):
    """A record without its traceback: the terminal gets a line that points to the log file, which has the rest."""

    def __init__(self, fmt: str, log_file: Path):
        super().__init__(fmt)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        line = super().format(plain)
        if record.exc_info and record.exc_info[0] is not None:
            line += f" ({record.exc_info[0].__name__}; the details are in {self.log_file})"
        return line


def log_dir() -> Path:
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def setup_logging(level: str = "INFO", folder: Path | None = None) -> Path:
    """Log to a rotating file in the user log folder (and warnings, without tracebacks, to stderr); returns the
    file's path."""
    folder = folder or log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "xvlm-chat.log"
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILES_KEPT, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)
    console.setFormatter(OneLineFormatter("%(levelname)s %(name)s: %(message)s", path))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(file_handler)
    root.addHandler(console)
    return path
