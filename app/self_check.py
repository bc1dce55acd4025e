"""`xvlm-chat --self-check MODEL_DIR`: prove that this copy of the app (a frozen build or the source tree) works.

Without showing a window it checks what a build most often loses: Qt's platform, image-format and icon-engine
plugins, the app's resources, the TLS set-up that the first-launch download needs, and every module the app loads
lazily. Then it loads the model on `ModelWorker`'s thread, exactly as the window does, answers one question about a
bundled picture, and prints the answer with its timings. Exit code 0 when everything works; otherwise 1, with each
failure named on a `FAIL` line.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import (
    QBuffer,
    QByteArray,
    QCoreApplication,
    QEventLoop,
    QIODevice,
    QLibraryInfo,
    QLocale,
    QObject,
    QSize,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QIcon, QImage, QImageReader, QImageWriter
from PySide6.QtWidgets import QApplication
from xvlm_core.errors import Problem, Remedy
from xvlm_core.load_options import LoadOptions
from xvlm_core.messages import ImageRef, Message
from xvlm_core.sampling import SamplingSettings

import app
from app import APP_NAME
from app.icons import app_icon, icon, resources_dir
from app.model.worker import AnswerRequest, LoadRequest, ModelThread, ModelWorker

log = logging.getLogger(__name__)

QUESTION = "What is in this picture?"
MAX_NEW_TOKENS = 24
TIMEOUT_S = 300  # a cold start of a frozen build on a slow disk takes a while; the tiny model itself loads in ~1 s
# Qt reads these itself (drop, paste, thumbnails); the model reads the same formats through Pillow.
QT_IMAGE_FORMATS = ("png", "jpeg", "jpg", "gif", "bmp", "webp", "tif", "tiff", "svg", "ico")
# Formats whose plugin can also write, so a round trip proves the plugin really decodes.
ROUND_TRIP_FORMATS = ("jpeg", "webp", "tiff")
PLATFORM_PLUGINS = {"linux": ("xcb", "offscreen", "minimal"), "win32": ("windows", "offscreen", "minimal"),
                    "darwin": ("cocoa", "offscreen", "minimal")}


class CheckFailed(Exception):
    """One check that did not pass; the message says what is missing."""


def default_image() -> Path:
    return resources_dir() / "self-check.png"


def run_self_check(model: str, vision_tower: str | None, image: Path | None = None) -> int:
    """Check this build from Qt plugins to one answer of the model at `model`; returns the exit code."""
    _give_windowed_build_a_console()
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    image = image or default_image()
    frozen = "frozen build" if getattr(sys, "frozen", False) else "from source"
    _say(f"{APP_NAME} {_version()} self-check ({frozen}, Python {sys.version.split()[0]}, {sys.platform})")

    failures = 0

    def check(name: str, step: Callable[[], str]) -> bool:
        nonlocal failures
        try:
            detail = step()
        except CheckFailed as exc:
            _say(f"FAIL  {name}: {exc}")
            failures += 1
            return False
        except Exception as exc:  # a check's edge: whatever broke is this check's reason
            log.exception("self-check %s", name)
            _say(f"FAIL  {name}: {type(exc).__name__}: {exc}")
            failures += 1
            return False
        _say(f"ok    {name}: {detail}")
        return True

    if not check("Qt platform plugins", _check_platform_plugins_present):
        return 1  # QApplication would abort the process with Qt's own message
    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    check("Qt start-up", lambda: _check_qt_started(qt_app))
    check("image formats", _check_image_formats)
    check("icons", _check_icons)
    check("resources", lambda: _check_resources(image))
    check("translations", lambda: _check_translations(qt_app))
    check("TLS for downloads", _check_tls)
    check("log", _check_log)
    check("user folders", _user_folders)
    answered = check("model on PyTorch", lambda: _answer_one_question(model, vision_tower, image, "pytorch"))
    if importlib.util.find_spec("llama_cpp") is None:
        _say("skip  model on llama.cpp: this build has no llama.cpp engine")
    elif answered:  # built with the llama.cpp engine: it must answer too (a model PyTorch cannot read, it cannot)
        check("model on llama.cpp", lambda: _answer_one_question(model, vision_tower, image, "llama.cpp"))
    check("lazily loaded modules", _check_modules)
    _say("self-check passed" if not failures else f"self-check FAILED: {failures} problem(s)")
    return 0 if not failures else 1


def _say(line: str) -> None:
    """One line of the report: to stdout (when there is one) and to the log."""
    log.info("%s", line)
    if sys.stdout is not None:
        print(line, flush=True)


def _give_windowed_build_a_console() -> None:
    """A Windows GUI build has no stdout; borrow the console of the shell that started it, if any."""
    if sys.platform != "win32" or sys.stdout is not None:
        return
    import ctypes

    if ctypes.windll.kernel32.AttachConsole(-1):  # ATTACH_PARENT_PROCESS
        sys.stdout = open("CONOUT$", "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        sys.stderr = sys.stdout


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("xvlm-chat")
    except PackageNotFoundError:  # a build made without the app installed carries no metadata for it
        from xvlm_core import __version__

        return __version__


def _plugin_dir(kind: str) -> Path:
    return Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / kind


def _plugin_names(kind: str) -> set[str]:
    """`libqxcb.so`, `qxcb.dll`, `libqxcb.dylib` -> `xcb`."""
    folder = _plugin_dir(kind)
    files = folder.iterdir() if folder.is_dir() else ()
    return {path.name.split(".")[0].removeprefix("lib").removeprefix("q") for path in files}


def _check_platform_plugins_present() -> str:
    wanted = PLATFORM_PLUGINS.get(sys.platform, ("offscreen", "minimal"))
    found = _plugin_names("platforms")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise CheckFailed(f"missing {', '.join(missing)} in {_plugin_dir('platforms')} (found: {sorted(found)})")
    return ", ".join(sorted(found))


def _check_qt_started(qt_app: QApplication) -> str:
    from PySide6 import __version__ as pyside_version

    style = qt_app.style()
    if style is None:
        raise CheckFailed("no widget style")
    return f"PySide6 {pyside_version}, platform '{qt_app.platformName()}', style '{style.name()}'"


def _check_image_formats() -> str:
    readable = {bytes(name).decode() for name in QImageReader.supportedImageFormats()}
    missing = [name for name in QT_IMAGE_FORMATS if name not in readable]
    if missing:
        folder = _plugin_dir("imageformats")
        raise CheckFailed(f"Qt cannot read {', '.join(missing)} (image format plugins in {folder})")
    sample = QImage(QSize(32, 24), QImage.Format.Format_RGB32)
    sample.fill(0x3366CC)
    for name in ROUND_TRIP_FORMATS:
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        writer = QImageWriter(buffer, name.encode())
        if not writer.write(sample):
            raise CheckFailed(f"cannot write {name}: {writer.errorString()}")
        buffer.close()
        decoded = QImage.fromData(data, name.upper())
        if decoded.size() != sample.size():
            raise CheckFailed(f"a {name} image written by Qt does not read back")
    return ", ".join(QT_IMAGE_FORMATS)


def _check_icons() -> str:
    if "svgicon" not in _plugin_names("iconengines"):
        raise CheckFailed(f"the SVG icon engine is missing from {_plugin_dir('iconengines')}")
    application = app_icon()
    big = application.pixmap(QSize(256, 256))
    # Only the SVG engine draws at any size; without it the icon is missing or stuck at its natural 64 px.
    if application.isNull() or big.size() != QSize(256, 256):
        raise CheckFailed(f"the app icon does not draw at 256 px ({resources_dir() / 'icons' / 'app.svg'})")
    names = sorted(path.stem for path in (resources_dir() / "icons").glob("*.svg"))
    for name in names:
        if icon(name).pixmap(QSize(24, 24)).toImage().isNull():
            raise CheckFailed(f"icon '{name}' does not draw")
    theme_icon = QIcon.fromTheme("xvlm-chat")  # the desktop entry's icon name; fine when not installed
    extra = " (installed in the icon theme)" if not theme_icon.isNull() else ""
    return f"app icon and {len(names)} SVG icons draw{extra}"


def _check_resources(image: Path) -> str:
    picture = QImage(str(image))
    if picture.isNull():
        raise CheckFailed(f"cannot read the test picture {image}")
    return f"{resources_dir()} ({picture.width()}x{picture.height()} test picture)"


def _check_translations(qt_app: QApplication) -> str:
    """The Simplified Chinese interface: the app's catalog and Qt's own load (then are taken out again)."""
    from app.i18n import install_translators

    before = QLocale()
    translators = install_translators(qt_app, "zh_CN")
    try:
        said = QCoreApplication.translate("MainWindow", "&File")
    finally:
        for translator in translators:
            qt_app.removeTranslator(translator)
        QLocale.setDefault(before)
    if len(translators) != 2 or said == "&File":
        raise CheckFailed(f"the zh_CN translations do not load (found {len(translators)} of 2 catalogs)")
    return f"zh_CN ({said})"


def _check_tls() -> str:

    """The hub client's own SSL context: on Windows and macOS the system store (truststore), on Linux its CA files."""
    import ssl

    import httpx2
    import truststore  # httpx2 needs it on Windows and macOS; a build that drops it cannot download

    context = httpx2.create_ssl_context()
    if isinstance(context, truststore.SSLContext):
        return f"the system trust store ({ssl.OPENSSL_VERSION})"
    certificates = context.cert_store_stats()["x509_ca"]
    paths = ssl.get_default_verify_paths()
    where = paths.cafile or paths.capath or "the system's CA folder"
    return f"{certificates} CA certificates from {where} ({ssl.OPENSSL_VERSION})"


def _check_log() -> str:
    files = [Path(handler.baseFilename) for handler in logging.getLogger().handlers
             if isinstance(handler, logging.FileHandler)]
    if not files:
        return "not configured (run through the app's start-up to write one)"
    for handler in logging.getLogger().handlers:
        handler.flush()
    if not all(path.is_file() and path.stat().st_size > 0 for path in files):
        raise CheckFailed(f"nothing was written to {', '.join(map(str, files))}")
    return ", ".join(map(str, files))


def _user_folders() -> str:
    """Where this build keeps chats, settings, logs and models: the same folders as the app run from source."""
    from xvlm_core.hub import default_cache_dir

    from app.history.database import default_store_path
    from app.logs import log_dir
    from app.settings import config_dir

    return (f"chats {default_store_path().parent}, settings {config_dir()}, logs {log_dir()}, "
            f"models {default_cache_dir()}")


class _Driver(QObject):
    """Stands in for the chat controller: asks the worker through queued signals and collects what comes back.

    It lives on this (the UI) thread, so the worker's signals reach its slots queued, as they reach the window's.
    """

    load_requested = Signal(object)
    answer_requested = Signal(object)

    def __init__(self, worker: ModelWorker, request: AnswerRequest, loop: QEventLoop):
        super().__init__()
        self.request, self.loop = request, loop
        self.summary: dict = {}
        self.chunks: list[str] = []
        self.text, self.stats, self.error = "", {}, ""
        self.load_requested.connect(worker.load)
        self.answer_requested.connect(worker.generate)
        worker.loaded.connect(self.on_loaded)
        worker.load_failed.connect(self.on_failed)
        worker.chunk_ready.connect(self.on_chunk)
        worker.answer_finished.connect(self.on_finished)
        worker.answer_failed.connect(self.on_answer_failed)

    @Slot(dict)
    def on_loaded(self, summary: dict) -> None:
        self.summary = summary
        self.answer_requested.emit(self.request)

    @Slot(int, str)
    def on_chunk(self, _request_id: int, text: str) -> None:
        self.chunks.append(text)

    @Slot(int, str, dict)
    def on_finished(self, _request_id: int, text: str, stats: dict) -> None:
        self.text, self.stats = text, stats
        self.loop.quit()

    @Slot(int, object)
    def on_answer_failed(self, _request_id: int, problem: Problem) -> None:
        self.on_failed(problem)

    @Slot(object)
    def on_failed(self, problem: Problem) -> None:
        self.error = problem.details
        self.loop.quit()


class _LastError(logging.Handler):
    """Keeps the exception behind an error the worker has no words for (its details are only "ImportError"): a
    broken build needs the module's name."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.error: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.error = record.exc_info[1]

    def add_to(self, message: str) -> str:
        """`message`, with the exception behind it where the message does not already say it."""
        if self.error is None or str(self.error) in message:
            return message
        return f"{message} [{type(self.error).__name__}: {self.error}]"


def _answer_one_question(model: str, vision_tower: str | None, image: Path, engine: str) -> str:
    last_error = _LastError()
    logging.getLogger(ModelWorker.__module__).addHandler(last_error)
    try:
        return _ask_the_worker(LoadOptions(model, vision_tower or "", engine=engine), image, last_error)
    finally:
        logging.getLogger(ModelWorker.__module__).removeHandler(last_error)


def _ask_the_worker(options: LoadOptions, image: Path, last_error: _LastError) -> str:
    worker = ModelWorker()
    model_thread = ModelThread(worker)
    loop = QEventLoop()
    request = AnswerRequest(
        1, (Message("user", QUESTION, (ImageRef.from_file(image),)),), SamplingSettings(max_new_tokens=MAX_NEW_TOKENS)
    )
    driver = _Driver(worker, request, loop)
    timer = QTimer(singleShot=True, interval=TIMEOUT_S * 1000)
    timer.timeout.connect(lambda: driver.on_failed(Problem(Remedy.NONE, f"no answer within {TIMEOUT_S} s")))

    started = time.perf_counter()
    model_thread.start()
    driver.load_requested.emit(LoadRequest(options))
    timer.start()
    loop.exec()
    timer.stop()
    wall = time.perf_counter() - started
    if not model_thread.stop(timeout_ms=10_000):
        raise CheckFailed("the model thread did not stop")
    if driver.error:
        raise CheckFailed(last_error.add_to(driver.error))
    text, stats, summary = driver.text, driver.stats, driver.summary
    streamed = "".join(driver.chunks)
    if not text.strip() or streamed != text:
        raise CheckFailed(f"the streamed answer {streamed!r} does not add up to the answer {text!r}")
    if summary.get("engine") != options.engine:
        raise CheckFailed(f"the model loaded on {summary.get('engine')}, not on {options.engine}")
    return (f"{summary['name']} on {summary['device']} ({summary['dtype']}, {summary['engine']})\n"
            f"      Q: {QUESTION} [{image.name}]\n"
            f"      A: {text.strip()}\n"
            f"      load {summary['load_s']:.2f} s, image {stats['image_encode_s']:.2f} s, "
            f"first token {stats['ttft_s']:.2f} s, {stats['output_tokens']} tokens at {stats['decode_tok_s']:.1f} "
            f"tokens/s ({stats['stop_reason']}), {wall:.2f} s in all")


def _check_modules() -> str:
    """Import every module of the app and of xvlm_core: the app imports several only when first needed."""
    import xvlm_core

    counts = []
    for package in (xvlm_core, app):
        names = [f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                 if info.name != "__main__"]
        for name in names:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise CheckFailed(f"{name}: {exc}") from None
        counts.append(f"{len(names)} {package.__name__}")
    return ", ".join(counts)
