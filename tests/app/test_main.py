"""Start-up: the command line, the window on screen before the model stack is imported, the last-resort hooks."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

from app.logs import setup_logging
from app.main import FRIENDLY_ERROR, friendly_error, install_exception_hooks, parse_args

PROJECT = Path(__file__).resolve().parents[2]


def test_parse_args_reads_the_documented_options():
    args = parse_args(["--model", "org/repo", "--vision-tower", "/towers/clip", "--device", "cuda:1",
                       "--log-level", "debug"])
    assert (args.model, args.vision_tower, args.device, args.log_level) == ("org/repo", "/towers/clip", "cuda:1",
                                                                           "DEBUG")
    defaults = parse_args([])
    assert (defaults.model, defaults.device, defaults.log_level) == ("", "", "INFO")


# Run in the child: notes, in order, when the main window is first shown and when the model stack is first
# imported (on any thread), then closes the window once the model thread has begun importing torch.
STARTUP_PROBE = """
import json, runpy, sys, threading, time
started = time.perf_counter()
events, watched = [], {"torch", "transformers"}


class FirstImports:
    def find_spec(self, name, path=None, target=None):
        if name in watched and name not in sys.modules:
            watched.discard(name)
            events.append(("import " + name, threading.current_thread().name))
        return None


sys.meta_path.insert(0, FirstImports())
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow


class FirstShow(QObject):
    def eventFilter(self, watched_object, event):
        if event.type() == QEvent.Type.Show and isinstance(watched_object, QMainWindow) and not shown:
            shown.append(watched_object)
            events.append(("window shown", [name for name in ("torch", "transformers") if name in sys.modules]))
            print("SHOWN_AFTER_S", time.perf_counter() - started, flush=True)
        return False


def close_once_torch_is_imported(ticks=[0]):
    ticks[0] += 1
    if any(name == "import torch" for name, _ in events) or ticks[0] > 2400:  # at most about 2 minutes
        shown[0].close()
    else:
        QTimer.singleShot(50, close_once_torch_is_imported)


shown = []
app = QApplication(sys.argv[:1])
show_filter = FirstShow()
app.installEventFilter(show_filter)
QTimer.singleShot(0, close_once_torch_is_imported)
sys.argv = ["main.py", "--model", sys.argv[1], "--vision-tower", sys.argv[2]]
try:
    runpy.run_path("main.py", run_name="__main__")
finally:
    print("EVENTS", json.dumps(events), flush=True)
    print("TITLE", shown[0].windowTitle() if shown else "", flush=True)
"""


def test_main_py_shows_the_window_before_the_model_stack_is_imported(tmp_path, tiny_model_dir, tiny_tower_dir):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "-c", STARTUP_PROBE, str(tiny_model_dir), str(tiny_tower_dir)],
                            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    output = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    (first, loaded_then), *imports = json.loads(output["EVENTS"])
    # The window is on screen first; torch and transformers come after it, imported by the model thread.
    assert first == "window shown" and loaded_then == [], output["EVENTS"]
    assert "import torch" in [name for name, _thread in imports], output["EVENTS"]
    assert all(thread != "MainThread" for _name, thread in imports), output["EVENTS"]
    assert output["TITLE"].endswith("XVLM Chat")
    log_text = (tmp_path / "state" / "XVLM Chat" / "log" / "xvlm-chat.log").read_text()
    assert "window shown" in log_text
    # How soon is for the benchmarks to say; here it is only reported.
    logging.getLogger(__name__).info("window shown %.2f s after start-up began",
                                     float(output.get("SHOWN_AFTER_S", "nan")))


def test_uncaught_exceptions_are_logged_and_reported_kindly(tmp_path, monkeypatch, capsys):
    reports: list[str] = []
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        log_file = setup_logging("INFO", tmp_path / "logs")
        install_exception_hooks(lambda: reports.append(friendly_error()))
        try:
            raise ValueError("on the UI thread")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        thread = threading.Thread(target=lambda: 1 / 0, name="helper")
        thread.start()
        thread.join()
    finally:
        for handler in root.handlers[len(handlers):]:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    assert reports == [FRIENDLY_ERROR, FRIENDLY_ERROR]
    assert "Traceback" not in FRIENDLY_ERROR and "log" in FRIENDLY_ERROR
    text = log_file.read_text()
    assert "ValueError: on the UI thread" in text and "ZeroDivisionError" in text and "helper" in text
    # The terminal gets one line per failure that points to the log; the traceback stays in the file.
    terminal = capsys.readouterr().err
    assert "Traceback" in text and "Traceback" not in terminal
    assert f"(ValueError; the details are in {log_file})" in terminal
    assert f"(ZeroDivisionError; the details are in {log_file})" in terminal
