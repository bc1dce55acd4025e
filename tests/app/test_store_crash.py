"""Killed mid-answer (kill -9): every earlier message survives, and the partial answer is there, interrupted."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.history.database import ChatStore

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
@pytest.mark.timeout(60)
def test_killed_while_streaming_keeps_the_partial_answer(tmp_path: Path, images_dir: Path) -> None:
    db_path = tmp_path / "data" / "chats.sqlite3"
    search_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
    with subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("store_crash_child.py")), str(db_path),
         str(images_dir / "gradient_square.png")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    ) as child:
        marker = child.stdout.readline()
        if not marker.startswith("STREAMING"):
            child.kill()
            pytest.fail(f"the child did not start streaming: {marker!r} {child.communicate()[1]}")
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    chat_id, answer_id = map(int, marker.split()[1:])

    with ChatStore(db_path) as store:
        messages = store.load_chat(chat_id).messages
        thumbnail = store.list_chats()[0].thumbnail
    assert [(m.role, m.text, m.status) for m in messages[:3]] == [
        ("user", "What is in the picture?", "complete"),
        ("assistant", "Some shapes.", "complete"),
        ("user", "Count them slowly.", "complete"),
    ]
    assert Path(messages[0].images[0].path).read_bytes() == (images_dir / "gradient_square.png").read_bytes()
    assert thumbnail.is_file()
    partial = messages[3]
    assert (partial.id, partial.role, partial.status) == (answer_id, "assistant", "interrupted")
    # Written during the stream, not only its first word: the child streamed for seconds before the kill.
    assert re.fullmatch(r"(w\d+ )+", partial.text)
    assert len(partial.text.split()) > 100
    assert partial.text.startswith("w0 w1 w2 ")

    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    finally:
        db.close()
