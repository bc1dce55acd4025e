"""`xvlm chat`: an unknown /command is an error, not a question for the model; "//" sends a leading slash."""

from __future__ import annotations

import subprocess
import sys


def run_chat(script: str, tiny_model_dir, tiny_tower_dir) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xvlm_core", "chat", "--model", str(tiny_model_dir), "--vision-tower",
         str(tiny_tower_dir), "--dtype", "float32", "--max-new-tokens", "4"],
        input=script, capture_output=True, text=True, timeout=120, check=False,
    )


def test_an_unknown_command_is_an_error_and_is_not_sent(tiny_model_dir, tiny_tower_dir):
    done = run_chat("/help\n/imagine a cat\n/quit\n", tiny_model_dir, tiny_tower_dir)
    assert done.returncode == 0, done.stderr
    assert "error: there is no command /help; the commands are /image FILE, /new and /quit." in done.stdout
    assert "error: there is no command /imagine;" in done.stdout
    assert "model>" not in done.stdout


def test_a_double_slash_sends_a_message_that_begins_with_a_slash(tiny_model_dir, tiny_tower_dir):
    done = run_chat("//usr/bin is a folder?\n/quit\n", tiny_model_dir, tiny_tower_dir)
    assert done.returncode == 0, done.stderr
    assert "model>" in done.stdout and "error" not in done.stdout


def test_a_message_the_session_refuses_is_an_error_and_the_chat_goes_on(tiny_model_dir, tiny_tower_dir, images_dir):
    image = images_dir / "gradient_square.png"
    too_many = f"/image {image}\n" * 40
    done = run_chat(f"{too_many}What are these?\nAnd hello?\n/quit\n", tiny_model_dir, tiny_tower_dir)
    assert done.returncode == 0, done.stderr
    assert "error: " in done.stdout and "images" in done.stdout
    assert "model>" in done.stdout.split("error: ", 1)[1]  # the next message was still answered
