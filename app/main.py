"""Start-up: arguments, logging, the last-resort exception hooks, QApplication and the qasync event loop.

Nothing here imports torch or xvlm_core's model code: the window is on screen before any of it loads
(the model thread imports it when it starts loading).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from PySide6.QtCore import QT_TRANSLATE_NOOP, QCoreApplication
from xvlm_core.precisions import ENGINE_CHOICES, QUANTIZE_CHOICES

from app import APP_NAME
from app.launch import launch_from_args
from app.logs import setup_logging
from app.qt_platform import check_before_window

log = logging.getLogger("app")

# Translated where it is shown (report), once the translators are installed.
FRIENDLY_ERROR = QT_TRANSLATE_NOOP("main", "Something went wrong that the app has no message for. It keeps running; "
                                           "if something looks wrong, start a new chat or restart it. The details are "
                                           "in the log (Help → Open Log Folder).")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xvlm-chat", description=f"{APP_NAME}: chat about images, locally.")
    parser.add_argument("images", metavar="IMAGE", nargs="*",
                        help="pictures to attach to the message box (a running window takes them)")
    parser.add_argument("--model", metavar="PATH_OR_REPO", default="",
                        help="a checkpoint folder or a hub repo id (default: the one in Settings, else Xmodel-VLM)")
    parser.add_argument("--vision-tower", metavar="PATH_OR_REPO", default="",
                        help="the CLIP vision tower, when the checkpoint does not hold it")
    parser.add_argument("--device", default="", help="auto, cpu, cuda, cuda:N or mps (default: from Settings)")
    parser.add_argument("--dtype", default="", help="auto, float32, float16 or bfloat16 (default: from Settings)")
    parser.add_argument("--quantize", default="", choices=QUANTIZE_CHOICES,
                        help="int8: 8-bit weights, faster, answers may differ slightly; int4: 4-bit weights, "
                             "faster still, answers may differ more; none: exact (default: from Settings)")
    parser.add_argument("--engine", default="", choices=ENGINE_CHOICES,
                        help="what runs the language model: pytorch, llama.cpp (CPU only, faster answers) or auto, "
                             "llama.cpp on the CPU where it is installed (default: from Settings)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        type=str.upper, help="how much to write to the log file (default: INFO)")
    parser.add_argument("--self-check", metavar="MODEL_DIR", default="",
                        help="check this installation without a window: load MODEL_DIR, answer one question "
                             "about a test picture, print the answer and timings; exit 0 if all works")
    return parser.parse_intermixed_args(argv)  # images may come before, between or after the options


def friendly_error() -> str:
    """What the window says of an exception the app has no message for, in the language of the moment."""
    return QCoreApplication.translate("main", FRIENDLY_ERROR)


def install_exception_hooks(report: Callable[[], None]) -> None:
    """Log any uncaught exception (UI thread, other threads, asyncio tasks) and have the person told, kindly
    (`friendly_error`).

    `report` is called on whichever thread failed; pass something that is safe to call from any thread
    (a Qt signal's emit).
    """

    def on_exception(kind, value, traceback) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, traceback)
            return
        log.critical("uncaught exception", exc_info=(kind, value, traceback))
        report()

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        log.critical("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        report()

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception


def asyncio_exception_handler(report: Callable[[], None]) -> Callable[[asyncio.AbstractEventLoop, dict], None]:
    def handle(_loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exception = context.get("exception")
        log.critical("uncaught exception in the event loop: %s", context.get("message"),
                     exc_info=(type(exception), exception, exception.__traceback__) if exception else None)
        report()

    return handle


# The model thread releases Python's lock for every torch operation and must win it back after each; with
# the UI thread busy, the default 5 ms hand-over cut a fast model's decoding several-fold (README, Speed).
GIL_SWITCH_INTERVAL_S = 0.0005


def run(args: argparse.Namespace) -> int:
    """Show the window, then find and load the model in the background; returns the exit code."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    logs = setup_logging(args.log_level)
    log.info("starting %s (log: %s)", APP_NAME, logs)
    if args.self_check:
        from app.self_check import run_self_check

        return run_self_check(args.self_check, args.vision_tower or None)
    cannot_show = check_before_window()
    if cannot_show:  # Qt would abort instead, naming one library at best
        log.error("%s", cannot_show)
        print(cannot_show, file=sys.stderr)
        return 1

    import qasync
    from PySide6.QtCore import QObject, Qt, Signal
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from app.history.database import default_store_path
    from app.history.service import open_history
    from app.i18n import install_translators
    from app.icons import app_icon
    from app.settings import SettingsFile
    from app.single_instance import SingleInstance, server_name
    from app.ui.parts import build_parts
    from app.ui.window import MainWindow

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("xvlm-chat")
    app.setWindowIcon(app_icon())
    settings_file = SettingsFile()
    install_translators(app, settings_file.load().language)
    launch = launch_from_args(args)
    instance = SingleInstance(server_name(str(default_store_path().parent)))
    if instance.forward_to_running(launch):
        log.info("already running: handed that window this launch (%d file(s))", len(launch.files))
        return 0
    instance.listen()

    class Reporter(QObject):
        """Carries word of an unexpected problem from any thread to the window."""

        problem = Signal()

    reporter = Reporter()
    install_exception_hooks(reporter.problem.emit)

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    # Plain threads for blocking hub and image calls; closing the loop waits for them (a download is cancelled first).
    loop.set_default_executor(ThreadPoolExecutor(max_workers=4, thread_name_prefix="io"))
    loop.set_exception_handler(asyncio_exception_handler(reporter.problem.emit))

    window = MainWindow(build_parts(settings_file, history=open_history(), log_dir=logs.parent))

    reporter.problem.connect(lambda: window.show_error(friendly_error))
    instance.launched_again.connect(window.launched_again)
    start = window.start(launch.options)  # first: the window opens on the page start-up knows comes first
    window.show()
    log.info("window shown")
    if launch.files:
        loop.call_soon(window.open_files, list(launch.files))

    with loop:
        loop.run_forever()  # until the last window closes; closeEvent has already begun stopping the model thread
    start.cancel()
    stopped = window.shutdown(timeout_ms=10_000)
    logging.shutdown()
    if not stopped:
        # The model thread is still inside a load that cannot be interrupted; Qt would abort on exit.
        os._exit(0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `xvlm-chat` entry point."""
    return run(parse_args(argv))
