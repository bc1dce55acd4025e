"""Open with: `xvlm-chat photo.jpg`, a file manager's "Open With", and a second launch with files, all attach."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeSession, fake_load
from fifo_guard import HANG_GUARD_S
from PySide6.QtGui import QImageReader

from app.chat.composer import IMAGE_FILTER
from app.launch import Launch, launch_from_args
from app.main import parse_args
from app.model.worker import ModelWorker
from app.single_instance import SingleInstance, server_name
from xvlm_core.load_options import LoadOptions

PROJECT = Path(__file__).resolve().parents[2]
# Coming forward raises the window; offscreen, there is no window manager to raise it for.
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support raise")


def test_image_arguments_become_absolute_files(tmp_path):
    args = parse_args(["photo.jpg", "sub/more.png", "/pictures/a b.png", "file:///pictures/c%20d.png",
                       "--device", "cpu"])
    launch = launch_from_args(args, cwd=tmp_path)
    assert launch.files == (str(tmp_path / "photo.jpg"), str(tmp_path / "sub" / "more.png"), "/pictures/a b.png",
                            "/pictures/c d.png")
    assert launch.options == LoadOptions(device="cpu") and launch.options.given
    assert not launch_from_args(parse_args(["photo.jpg"]), cwd=tmp_path).options.given
    assert launch_from_args(parse_args([])).files == ()
    mixed = parse_args(["a.png", "--device", "cpu", "b.png"])  # as a launcher may put them
    assert (mixed.images, mixed.device) == (["a.png", "b.png"], "cpu")


def test_a_launch_survives_its_trip_through_the_socket_encoding():
    launch = Launch(files=("/a/图片 1.png",), options=LoadOptions("org/repo", "/t", "cuda:1", "float16", "int4"))
    assert Launch.decode(launch.encode()) == launch
    assert Launch.decode(b"not json") is None
    for not_a_launch in (b"5", b"[[1]]", b'"text"', b'{"files": 5}', b'{"files": [[1]]}', b'{"unknown": 1}',
                         b'{"quantize": "int3"}', b'{"dtype": 16}'):
        assert Launch.decode(not_a_launch) is None


def wait_chips(qtbot, window, *paths: Path) -> None:
    qtbot.waitUntil(lambda: [chip.path for chip in window.composer.chips] == [str(path) for path in paths]
                    and len(window.composer.images) == len(paths), timeout=20_000)


def test_files_from_the_command_line_are_attached_and_the_rest_is_named(qtbot, make_window, images_dir, tmp_path):
    window = make_window(worker=ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession()))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    window.open_files([str(images_dir / "gradient_square.png"), str(notes), str(tmp_path / "gone.png"),
                       str(images_dir / "shapes_wide.png")])
    wait_chips(qtbot, window, images_dir / "gradient_square.png", images_dir / "shapes_wide.png")
    notice = window.composer.notice.text()
    assert window.composer.notice.isVisible()
    assert notice == "notes.txt: not an image this app can read. gone.png: no such file."
    assert window.composer.input.hasFocus()


def test_a_second_launch_s_files_reach_the_running_window(qtbot, make_window, images_dir, tmp_path):
    window = make_window(worker=ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession()))
    name = server_name(str(tmp_path / "instance"))
    first = SingleInstance(name)
    assert first.listen()
    first.launched_again.connect(window.launched_again)
    window.showMinimized()
    second = launch_from_args(parse_args(["shapes_wide.png"]), cwd=images_dir)
    assert SingleInstance(name).forward_to_running(second)
    wait_chips(qtbot, window, images_dir / "shapes_wide.png")
    assert not window.isMinimized()
    first.close()


def window_recording_loads(qtbot, make_window) -> tuple[object, list]:
    """A window whose model thread notes each load it is asked for, once its first model is ready."""
    loads = []

    def load(request, on_stage):
        loads.append(request)
        return fake_load()(request, on_stage)

    window = make_window(worker=ModelWorker(load=load, session_factory=lambda _loaded: FakeSession()))
    qtbot.waitUntil(lambda: len(loads) == 1 and window.controller.phase.value == "ready", timeout=20_000)
    return window, loads


def test_a_second_launch_naming_another_model_loads_it(qtbot, make_window, tiny_model_dir, tmp_path):
    window, loads = window_recording_loads(qtbot, make_window)
    window.launched_again(Launch())  # only "come forward": nothing reloads
    window.launched_again(Launch(options=LoadOptions(str(tiny_model_dir), device="cpu")))
    qtbot.waitUntil(lambda: len(loads) == 2 and window.controller.phase.value == "ready", timeout=20_000)
    assert loads[-1].options.device == "cpu" and loads[-1].options.model == str(tiny_model_dir)
    assert not window.startup.start_again(LoadOptions(str(tiny_model_dir), device="cpu"))  # the same: no reload


def test_a_second_launch_forwards_every_model_option_to_the_load(qtbot, make_window, tiny_model_dir, tmp_path):
    window, loads = window_recording_loads(qtbot, make_window)
    args = parse_args(["--model", str(tiny_model_dir), "--vision-tower", "/towers/clip", "--device", "cpu",
                       "--dtype", "float32", "--quantize", "int8", "--engine", "pytorch"])
    line = launch_from_args(args, cwd=tmp_path).encode()  # as the second process sends it
    window.launched_again(Launch.decode(line))
    qtbot.waitUntil(lambda: len(loads) == 2, timeout=20_000)
    assert loads[-1].options == LoadOptions(str(tiny_model_dir), "/towers/clip", "cpu", "float32", "int8", "pytorch")


def test_the_desktop_entry_opens_the_images_the_app_reads():
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(PROJECT / "resources" / "xvlm-chat.desktop.in", encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Exec"].split()[-1] == "%F"  # any number of local files
    mime_types = [mime for mime in section["MimeType"].split(";") if mime]
    readable = {bytes(mime.data()).decode() for mime in QImageReader.supportedMimeTypes()}
    assert {"image/png", "image/jpeg"} <= set(mime_types) <= readable
    for mime in mime_types:  # the attach dialog offers the same kinds
        assert f"*.{mime.removeprefix('image/')}" in IMAGE_FILTER


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_given_as_an_image_is_named_without_freezing_the_window(qtbot, make_window, images_dir, tmp_path):
    window = make_window(worker=ModelWorker(load=fake_load(), session_factory=lambda _loaded: FakeSession()))
    fifo = tmp_path / "camera.png"
    os.mkfifo(fifo)
    # Qt's image reader keeps the interpreter while it waits on a FIFO, so no thread of this process could free
    # it: another process opens the FIFO for writing after HANG_GUARD_S, should the window still be waiting.
    unblock = ("import os, sys, time; time.sleep(float(sys.argv[2])); "
               "os.close(os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK))")
    unblocker = subprocess.Popen([sys.executable, "-c", unblock, str(fifo), str(HANG_GUARD_S)],
                                 stderr=subprocess.DEVNULL)
    try:
        window.open_files([str(fifo), str(images_dir / "gradient_square.png")])
    finally:
        unblocker.kill()
        unblocker.wait()
    wait_chips(qtbot, window, images_dir / "gradient_square.png")
    assert window.composer.notice.text() == ("This picture cannot be used. Choose another one. "  # the window's
                                             f"{fifo}: not a regular file (a device, pipe or socket); only ordinary "
                                             "files are read.")  # the core's
