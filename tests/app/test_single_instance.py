"""One window per user: a second launch brings the first forward; a history in use opens read-only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtNetwork import QLocalSocket

from app.history.database import ChatStore, default_store_path
from app.history.service import open_history
from app.launch import Launch
from app.single_instance import SingleInstance, server_name
from xvlm_core.load_options import LoadOptions

PROJECT = Path(__file__).resolve().parents[2]


def test_a_second_launch_asks_the_first_to_come_forward(qtbot, tmp_path):
    name = server_name(str(tmp_path))
    first = SingleInstance(name)
    assert not first.forward_to_running()  # nobody there yet
    assert first.listen()
    with qtbot.waitSignal(first.launched_again, timeout=3000) as launched:
        assert SingleInstance(name).forward_to_running()
    assert launched.args == [Launch()]
    first.close()
    assert not SingleInstance(name).forward_to_running()


def test_a_second_launch_hands_over_its_files_and_model(qtbot, tmp_path):
    name = server_name(str(tmp_path))
    first = SingleInstance(name)
    assert first.listen()
    launch = Launch(files=(str(tmp_path / "photo 1.jpg"), "/pictures/图片.png"),
                    options=LoadOptions("/models/x", device="cpu", quantize="int8"))
    with qtbot.waitSignal(first.launched_again, timeout=3000) as launched:
        assert SingleInstance(name).forward_to_running(launch)
    assert launched.args == [launch] and launched.args[0].options.given
    first.close()


@pytest.mark.parametrize("message", [b"activate\n", b'{"files": "/one.png"}\n', b'{"files": [], "shell": "x"}\n',
                                     b'{"files": [], "model": 3}\n', b"[]\n"])
def test_a_message_that_is_not_a_launch_is_ignored(qtbot, tmp_path, message):
    name = server_name(str(tmp_path))
    first = SingleInstance(name)
    assert first.listen()
    launches = []
    first.launched_again.connect(launches.append)
    socket = QLocalSocket()
    socket.connectToServer(name)
    assert socket.waitForConnected(3000)
    socket.write(message)
    socket.waitForBytesWritten(3000)
    socket.disconnectFromServer()
    qtbot.waitUntil(lambda: not first._received, timeout=3000)  # the first read it and let go of the connection
    with qtbot.waitSignal(first.launched_again, timeout=3000):  # and still serves the next launch
        assert SingleInstance(name).forward_to_running(Launch(files=("/a.png",)))
    assert launches == [Launch(files=("/a.png",))]
    first.close()


def test_names_differ_per_history_folder(tmp_path):
    assert server_name(str(tmp_path / "a")) != server_name(str(tmp_path / "b"))


def test_a_history_in_use_opens_read_only_with_a_notice():
    writer = ChatStore()
    writer.add_user_message(writer.create_chat(), "kept")
    writer.flush()
    try:
        history = open_history()
        assert history.available and not history.writable
        assert "read-only" in history.notice.text and not history.notice.saving
        assert [chat.title for chat in history.list_chats()] == ["kept"]
        history.close()
    finally:
        writer.close()
    history = open_history()
    assert history.writable and history.notice is None
    history.close()


def test_main_py_second_launch_exits_and_leaves_the_first_running(tmp_path, tiny_model_dir, tiny_tower_dir,
                                                                  images_dir):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, str(PROJECT / "main.py"), "--model", str(tiny_model_dir),
               "--vision-tower", str(tiny_tower_dir)]
    log_file = tmp_path / "state" / "XVLM Chat" / "log" / "xvlm-chat.log"
    opened = "opening 1 file(s) from a launch"
    first = subprocess.Popen([*command, "shapes_wide.png"], cwd=images_dir, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (log_file.exists() and opened in log_file.read_text()):  # shown, with the picture attached
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        started = time.monotonic()
        second = subprocess.run([*command, "gradient_square.png"], cwd=images_dir, env=env, capture_output=True,
                                timeout=30)
        assert second.returncode == 0 and time.monotonic() - started < 10
        assert "already running: handed that window this launch (1 file(s))" in log_file.read_text()
        deadline = time.monotonic() + 30
        while log_file.read_text().count(opened) < 2:  # the first one took it
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert first.poll() is None
        assert default_store_path() != Path(env["XDG_DATA_HOME"]) / "XVLM Chat" / "chats.sqlite3"  # isolated
    finally:
        first.terminate()
        first.wait(timeout=15)
