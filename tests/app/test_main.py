"""Start-up: the command line, the window on screen before the model stack is imported, the last-resort hooks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.logs import setup_logging
from app.main import FRIENDLY_ERROR, install_exception_hooks, parse_args

PROJECT = Path(__file__).resolve().parents[2]


def test_parse_args_reads_the_documented_options():
    args = parse_args(["--model", "org/repo", "--vision-tower", "/towers/clip", "--device", "cuda:1",
                       "--log-level", "debug"])
    assert (args.model, args.vision_tower, args.device, args.log_level) == ("org/repo", "/towers/clip", "cuda:1",
                                                                           "DEBUG")
    defaults = parse_args([])
    assert (defaults.model, defaults.device, defaults.log_level) == ("", "", "INFO")


def test_main_py_shows_the_window_quickly_and_before_torch_is_imported(tmp_path, tiny_model_dir, tiny_tower_dir):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    probe = (
        "import time\n"
        "started = time.perf_counter()\n"
        "import sys, runpy\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "def report():\n"
        "    window = next(w for w in QApplication.topLevelWidgets() if w.isVisible())\n"
        "    print('SHOWN', time.perf_counter() - started, 'torch' in sys.modules, window.windowTitle(), flush=True)\n"
        "    QTimer.singleShot(0, window.close)\n"
        "app = QApplication(sys.argv[:1])\n"
        "QTimer.singleShot(0, report)\n"
        f"sys.argv = ['main.py', '--model', {str(tiny_model_dir)!r}, '--vision-tower', {str(tiny_tower_dir)!r}]\n"
        "runpy.run_path('main.py', run_name='__main__')\n"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, env=env, capture_output=True, text=True,
                            timeout=120)
    total = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("SHOWN"))
    _, shown_after, torch_loaded, *title = line.split()
    # The first event the loop handles: the window is on screen; torch, transformers and the model are not yet.
    assert torch_loaded == "False"
    assert float(shown_after) < 2.0, f"window shown {shown_after} s after start-up began"
    assert " ".join(title).endswith("XVLM Chat")
    log_text = (tmp_path / "state" / "XVLM Chat" / "log" / "xvlm-chat.log").read_text()
    assert "window shown" in log_text
    print(f"window shown {float(shown_after):.2f} s after start-up began; process ran {total:.1f} s")


def test_uncaught_exceptions_are_logged_and_reported_kindly(tmp_path, monkeypatch, capsys):
    reports: list[str] = []
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        log_file = setup_logging("INFO", tmp_path / "logs")
        install_exception_hooks(reports.append)
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
