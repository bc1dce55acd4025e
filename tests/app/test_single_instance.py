"""One window per user: a second launch brings the first forward; a history in use opens read-only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from app.history.database import ChatStore, default_store_path
from app.history.service import open_history
from app.single_instance import SingleInstance, server_name

PROJECT = Path(__file__).resolve().parents[2]


def test_a_second_launch_asks_the_first_to_come_forward(qtbot, tmp_path):
    name = server_name(str(tmp_path))
    first = SingleInstance(name)
    assert not first.forward_to_running()  # nobody there yet
    assert first.listen()
    with qtbot.waitSignal(first.activation_requested, timeout=3000):
        assert SingleInstance(name).forward_to_running()
    first.close()
    assert not SingleInstance(name).forward_to_running()


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


def test_main_py_second_launch_exits_and_leaves_the_first_running(tmp_path, tiny_model_dir, tiny_tower_dir):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_DATA_HOME": str(tmp_path / "data"),
           "QT_QPA_PLATFORM": "offscreen"}
    command = [sys.executable, "main.py", "--model", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir)]
    log_file = tmp_path / "state" / "XVLM Chat" / "log" / "xvlm-chat.log"
    first = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (log_file.exists() and "window shown" in log_file.read_text()):
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        started = time.monotonic()
        second = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, timeout=30)
        assert second.returncode == 0 and time.monotonic() - started < 10
        assert "already running" in log_file.read_text()
        assert first.poll() is None
        assert default_store_path() != Path(env["XDG_DATA_HOME"]) / "XVLM Chat" / "chats.sqlite3"  # isolated
    finally:
        first.terminate()
        first.wait(timeout=15)
