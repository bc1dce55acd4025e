"""Log lines that text from outside (a request's path, a client's address, an error's message) cannot forge.

A percent-encoded CR/LF in a path would otherwise start a new, made-up log line, and an ESC sequence would
drive the operator's terminal. `printable` is the one escape; `LogFormatter` runs every record through it.
"""

from __future__ import annotations

import logging

CONTINUATION = "    "  # starts each further line of a traceback: no record starts with spaces


def printable(text: str) -> str:
    """`text` with every character Python does not count as printable (controls, line and paragraph
    separators, bidi and other format characters) written as a backslash escape, so it stays on one line."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


class LogFormatter(logging.Formatter):
    """`TIME LEVEL message`, one line per record.

    Only errors (the server's own failures) carry a traceback, on further lines that each start with spaces;
    a lower level's exception is named on the record's line.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        plain = logging.makeLogRecord(record.__dict__)
        plain.msg, plain.args = printable(record.getMessage()), None
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        line = super().format(plain)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if record.levelno < logging.ERROR:
                return f"{line} ({type(exc).__name__}: {printable(str(exc))})"
            trace = self.formatException(record.exc_info)
            return "\n".join([line, *(CONTINUATION + printable(part) for part in trace.splitlines())])
        return line
