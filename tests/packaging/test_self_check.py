"""`xvlm-chat --self-check` from the source tree: passes on the tiny model, and names what is broken when not."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray

from app import self_check

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_main(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "main.py", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=240, check=False, env=env)


def test_self_check_answers_about_the_test_picture_and_exits_0(tiny_model_dir, tiny_tower_dir):
    done = run_main("--self-check", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("XVLM Chat ") and "(from source," in lines[0]
    assert lines[-1] == "self-check passed"
    answer = next(line for line in lines if line.strip().startswith("A: "))
    assert len(answer.strip()) > len("A: ")
    assert any("first token" in line and "tokens/s" in line for line in lines)
    assert any(line.endswith(", llama.cpp)") for line in lines)  # the test environment has the llama.cpp engine
    for check in ("Qt platform plugins", "image formats", "icons", "translations", "TLS for downloads", "log",
                  "model on PyTorch", "model on llama.cpp", "lazily loaded modules"):
        assert any(line.startswith(f"ok    {check}:") for line in lines), check


def test_self_check_on_a_broken_model_folder_exits_1_naming_the_problem(tiny_model_dir, tiny_tower_dir, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "config.json").unlink()
    done = run_main("--self-check", str(broken), "--vision-tower", str(tiny_tower_dir))
    assert done.returncode == 1
    [failure] = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert failure.startswith("FAIL  model on PyTorch: ") and "config.json" in failure  # llama.cpp not tried
    assert done.stdout.splitlines()[-1] == "self-check FAILED: 1 problem(s)"


def test_self_check_without_a_display_runs_offscreen(tiny_model_dir, tiny_tower_dir):
    env = {key: value for key, value in os.environ.items()
           if key not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = run_main("--self-check", str(tiny_model_dir), "--vision-tower", str(tiny_tower_dir), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "platform 'offscreen'" in done.stdout


def test_a_missing_image_format_plugin_is_named(qapp, monkeypatch):
    monkeypatch.setattr(self_check.QImageReader, "supportedImageFormats",
                        staticmethod(lambda: [QByteArray(b"png"), QByteArray(b"svg")]))
    with pytest.raises(self_check.CheckFailed, match=r"Qt cannot read jpeg, jpg, gif, .*webp"):
        self_check._check_image_formats()


def test_a_missing_svg_icon_engine_is_named(qapp, monkeypatch, tmp_path):
    monkeypatch.setattr(self_check, "_plugin_dir", lambda kind: tmp_path / kind)
    with pytest.raises(self_check.CheckFailed, match="the SVG icon engine is missing"):
        self_check._check_icons()


def test_a_missing_platform_plugin_is_named_before_qt_would_abort(monkeypatch, tmp_path):
    (tmp_path / "platforms").mkdir()
    (tmp_path / "platforms" / "libqoffscreen.so").touch()
    monkeypatch.setattr(self_check, "_plugin_dir", lambda kind: tmp_path / kind)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(self_check.CheckFailed, match=r"missing xcb, minimal in .*platforms \(found: \['offscreen'\]\)"):
        self_check._check_platform_plugins_present()


def test_a_failure_the_worker_words_vaguely_keeps_its_exception():
    handler = self_check._LastError()
    try:
        raise ImportError("No module named 'transformers.models.clip'")
    except ImportError:
        handler.handle(logging.LogRecord("app.model.worker", logging.ERROR, __file__, 1, "loading failed", None,
                                         sys.exc_info()))
    vague = "ImportError"
    assert handler.add_to(vague) == f"{vague} [ImportError: No module named 'transformers.models.clip']"
    assert handler.add_to("No module named 'transformers.models.clip'") == "No module named 'transformers.models.clip'"
