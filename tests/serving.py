"""Servers on 127.0.0.1 for the tests that talk HTTP: `xvlm serve` in a subprocess, and a server of the test's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
START_WAIT_S = 120.0


@dataclass
class ServedModel:
    url: str  # the API's base, http://127.0.0.1:PORT/v1
    log: Path  # the server's stderr: its start-up lines and one line per request

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


def wait_for(condition: Callable[[], object], what: str, wait_s: float = 30.0) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@contextmanager
def xvlm_serve(folder: Path, model_dir: Path, tower_dir: Path, *options: str) -> Iterator[ServedModel]:
    """Run `xvlm serve` on a free port (float32 on the CPU) until the block ends; its temporary files go in `folder`."""
    log = folder / "serve.log"
    env = {**os.environ, "TMPDIR": str(folder), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("XVLM_API_KEY", None)
    command = [sys.executable, "-m", "xvlm_core", "serve", "--model", str(model_dir), "--vision-tower",
               str(tower_dir), "--device", "cpu", "--dtype", "float32", "--port", "0", *options]
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env=env, cwd=PROJECT_ROOT)
    try:
        found: list[str] = []

        def started() -> bool:
            if process.poll() is not None:
                pytest.fail(f"xvlm serve exited with {process.returncode}:\n{log.read_text(encoding='utf-8')}")
            found[:] = re.findall(r"on (http://127\.0\.0\.1:\d+/v1)", log.read_text(encoding="utf-8"))
            return bool(found)

        wait_for(started, "xvlm serve to start", START_WAIT_S)
        yield ServedModel(found[0], log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class LoopbackServer:
    """A test's own HTTP server on 127.0.0.1 (a free port unless given), answering with `handler` on threads of its
    own from entering the `with` block to leaving it; `url` is its OpenAI-style base, http://127.0.0.1:PORT/v1."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
