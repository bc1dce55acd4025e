"""`xvlm download` as a person runs it: progress, a cut connection survived, a killed process resumed, offline ask."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from xvlm_core import hub
from xvlm_core.cli import _DownloadBar, main
from xvlm_core.hub.plan import HEADER_PREFIX

MODEL = "XiaoduoAILab/Xmodel_VLM"
WEIGHTS = f"{MODEL}/model.safetensors"


def test_download_survives_a_cut_then_offline_ask_answers(hub_server, capsys, monkeypatch, golden, images_dir,
                                                         tiny_model_dir):
    hub_server.cut_at(WEIGHTS, 3_000_000)
    assert main(["download"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"Xmodel-VLM: 8 files from {MODEL}, openai/clip-vit-large-patch14-336; 17.6 MB in all")
    assert out[1].startswith(f"Destination: {hub.default_cache_dir()} (")
    assert "100.0%  17.6 MB / 17.6 MB" in out[-2]
    assert out[-1] == f"Ready: {hub.find_cached(MODEL)}"
    assert len(out) <= 2 + 12 + 1  # redirected output: a line per 10%, not per event
    # The cut cost nothing: the header read while planning, then each byte of the weights once.
    assert hub_server.served[WEIGHTS] <= (tiny_model_dir / "model.safetensors").stat().st_size + HEADER_PREFIX

    hub_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    case = golden["cases"]["single_square"]
    code = main(["ask", "--model", MODEL, "--dtype", "float32", "--max-new-tokens", str(case["max_new_tokens"]),
                 "--image", str(images_dir / case["images"][0]), case["turns"][0][0]])
    assert code == 0
    assert capsys.readouterr().out == case["text"] + "\n"


def test_download_error_is_one_line(hub_server, capsys):
    hub_server.stop()
    assert main(["download"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: Cannot reach the model hub at 127.0.0.1:")
    assert not any("Traceback" in line for line in err)


def test_download_options_reach_the_engine(hub_server, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing there: --endpoint must win
    target = tmp_path / "xmodel"
    assert main(["download", MODEL, "--endpoint", hub_server.url, "--local-dir", str(target), "--revision",
                 hub_server.repos[MODEL].commit]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"Ready: {target}"
    hub.validate_local_folder(target)


def test_killed_download_resumes_from_what_was_synced(hub_server, tiny_model_dir):
    hub_server.bytes_per_s = 6_000_000
    process = subprocess.Popen([sys.executable, "-m", "xvlm_core", "download"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while hub_server.served[WEIGHTS] < 9_500_000 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert hub_server.served[WEIGHTS] >= 9_500_000, "the download did not get far enough"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) is None

    hub_server.bytes_per_s = None
    hub_server.ranges.clear()
    hub.download_model(hub.DEFAULT_MODEL)
    resumed = [start for name, start in hub_server.ranges if name == WEIGHTS and start > 8]
    assert resumed == [8 * 2**20]  # fsync'ed every 8 MiB: at most that much is fetched again after a crash
    assert hub.installed_model_folder(hub.DEFAULT_MODEL) is not None


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_redraws_one_line_on_a_terminal():
    terminal = _Terminal()
    bar = _DownloadBar(terminal)
    bar(hub.DownloadProgress(500_000_000, 2_000_000_000, f"{MODEL}/model.safetensors", 12_500_000, 120.0))
    bar(hub.DownloadProgress(2_000_000_000, 2_000_000_000, f"{MODEL}/model.safetensors", 12_500_000, 0.0))
    bar.close()
    text = terminal.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    first, second = text.strip("\n").split("\r")[1:]
    assert first.startswith(" 25.0%  500.0 MB / 2.0 GB  12.5 MB/s  ETA 2 min 00 s  model.safetensors")
    assert second.startswith("100.0%  2.0 GB / 2.0 GB")


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59.4, "59 s"), (61, "1 min 01 s"), (7320, "2 h 02 min")])
def test_durations_read_naturally(seconds, text):
    assert hub.format_duration(seconds) == text
