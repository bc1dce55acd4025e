"""A model hub on 127.0.0.1 for tests: the endpoints huggingface_hub talks to, with faults on demand.

Endpoints, as the real hub answers them:
    GET        /api/models/{repo}/revision/{rev}     repo info with the commit (`sha`) and file names
    GET        /api/models/{repo}/tree/{rev}         file listing: path, size, git `oid`, `lfs` {oid (sha256), size},
                                                     in pages of `tree_page_size` entries linked by a `Link` header
    HEAD, GET  /{repo}/resolve/{rev}/{path}          small files: the bytes, with ETag (git blob id) and X-Repo-Commit;
                                                     large (LFS) files: a 302 to the "CDN" with X-Linked-Etag/-Size
    HEAD, GET  /cdn/{sha256}                         served by a second server (another origin, like the real CDN)
Both servers honour `Range: bytes=a-b` / `bytes=a-` with 206 answers.

Hostile listings: `plant` lists a file under any name ("../../x", "/abs/x", "C:x"); a client that normalizes the `..`
out of the address still gets it (any unknown address ending in its base name).

Faults: cut a connection at a byte offset, answer 503 (or any status) for the next requests, flip a byte, throttle,
go away entirely (connections refused) and come back on the same ports. Files are named "<repo id>/<path>" in
faults and counters; `served[name]` counts the body bytes sent.

Hostile answers: an API answer that never ends (`endless_api`, with or without a Content-Length that lies), a file
list whose pages are empty and lead back to themselves or on forever (`tree_pages`), padded pages (`tree_padding`),
pages on another origin (`tree_link_base`), and addresses that redirect to themselves (`redirect_loop`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 100_000
ENDLESS_CAP = 64 * 2**20  # what an endless answer sends at most when the client never hangs up
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ServedFile:
    path: Path
    size: int
    sha256: str
    git_oid: str  # of the file itself for small files, of its LFS pointer for large ones
    lfs: bool


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _served_file(path: Path, lfs_threshold: int) -> ServedFile:
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    lfs = len(data) > lfs_threshold
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return ServedFile(path, len(data), sha256, _git_oid(pointer if lfs else data), lfs)


class FakeRepo:
    def __init__(self, repo_id: str, folder: Path, lfs_threshold: int = LFS_THRESHOLD):
        self.repo_id = repo_id
        self.files = {
            path.relative_to(folder).as_posix(): _served_file(path, lfs_threshold)
            for path in sorted(folder.rglob("*")) if path.is_file()
        }
        oids = "".join(f"{name}:{file.git_oid}" for name, file in self.files.items())
        self.commit = hashlib.sha1(f"{repo_id}\n{oids}".encode()).hexdigest()

    def info(self) -> dict:
        return {"id": self.repo_id, "modelId": self.repo_id, "sha": self.commit, "private": False,
                "siblings": [{"rfilename": name} for name in self.files]}

    def tree(self) -> list[dict]:
        entries = []
        for name, file in self.files.items():
            entry: dict = {"type": "file", "oid": file.git_oid, "size": file.size, "path": name}
            if file.lfs:
                entry["lfs"] = {"oid": file.sha256, "size": file.size, "pointerSize": 134}
            entries.append(entry)
        return entries


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-file is normal here


class FakeHub:
    """Serves `repos` (repo id -> folder) until `stop()`; faults and counters are plain attributes and methods."""

    def __init__(self, repos: dict[str, Path], lfs_threshold: int = LFS_THRESHOLD):
        self.repos = {repo_id: FakeRepo(repo_id, folder, lfs_threshold) for repo_id, folder in repos.items()}
        self.by_sha256 = {file.sha256: (f"{repo.repo_id}/{name}", file) for repo in self.repos.values()
                          for name, file in repo.files.items() if file.lfs}
        self.served: Counter[str] = Counter()  # body bytes sent per "<repo id>/<path>"
        self.ranges: list[tuple[str, int]] = []  # ("<repo id>/<path>", first byte) of every body sent
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.token: str | None = None  # when set, every repo is private to this token
        self.gated: set[str] = set()
        self.bytes_per_s: float | None = None
        self.tree_page_size = 3  # small, so that every listing takes several pages, as a large repo's does
        self.go_away_on_cut = False
        self.ignores_range = False  # as Python's own http.server does: every GET gets the whole file
        self.endless_api: str | None = None  # "revision" or "tree": that answer's JSON goes on (up to ENDLESS_CAP)
        self.endless_length: int | None = None  # the Content-Length an endless answer claims; None: chunked
        self.endless_sent = 0  # body bytes of endless answers that the client took
        self.tree_pages: str | None = None  # "self": empty pages linking to themselves; "onward": to new ones
        self.tree_padding = 0  # spaces added to every page of a file list
        self.tree_link_base: str | None = None  # where a file list's next pages are (default: the hub itself)
        self.redirect_loop: str | None = None  # every address starting with this redirects to itself
        self._refusing = False  # set the moment the hub goes away, before its servers have stopped
        self._stopping: threading.Thread | None = None
        self._cuts: dict[str, list[int]] = {}
        self._corrupt: dict[str, int] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._servers: list[_Server] = []
        self._ports = (0, 0)

    # -- running

    def start(self) -> FakeHub:
        if self._stopping is not None:
            self._stopping.join(timeout=10)  # a hub that went away on its own must be gone before it comes back
            self._stopping = None
        self._refusing = False
        handler = type("Handler", (_Handler,), {"hub": self})
        self._servers = [_Server(("127.0.0.1", port), handler) for port in self._ports]
        self._ports = tuple(server.server_address[1] for server in self._servers)
        for server in self._servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go away: stop listening and drop every open connection."""
        self._refusing = True
        servers, self._servers = self._servers, []
        for server in servers:
            server.shutdown()
            server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._ports[0]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._ports[1]}"

    # -- hostile listings

    def plant(self, repo_id: str, name: str, source: Path) -> None:
        """List `source` in `repo_id` under `name`, whatever it is, and serve it to whoever asks for it."""
        self.repos[repo_id].files[name] = _served_file(source, LFS_THRESHOLD)

    def _planted(self, path: str) -> tuple[str, ServedFile] | None:
        """A listed file whose base name ends `path`: what a client asks for after resolving `..` in its address."""
        for repo in self.repos.values():
            for name, file in repo.files.items():
                if name.replace("\\", "/").rsplit("/", 1)[-1] == path.rsplit("/", 1)[-1] and not file.lfs:
                    return f"{repo.repo_id}/{name}", file
        return None

    # -- faults

    def cut_at(self, name: str, offset: int, times: int = 1) -> None:
        """Drop the connection once `offset` bytes of `name` were sent (the next `times` bodies that pass it)."""
        self._cuts.setdefault(name, []).extend([offset] * times)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` requests, whatever they ask, with `status`."""
        self._failures.extend([status] * count)

    def corrupt(self, name: str, offset: int) -> None:
        """Flip the byte at `offset` every time `name` is served."""
        self._corrupt[name] = offset

    # -- internals used by the handler

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _cut_within(self, name: str, start: int, end: int) -> int | None:
        """A cut offset in (start, end], consumed."""
        with self._lock:
            cuts = self._cuts.get(name, [])
            for offset in cuts:
                if start < offset <= end:
                    cuts.remove(offset)
                    return offset
        return None

    def _track(self, connection: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(connection)


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def setup(self) -> None:
        super().setup()
        self.hub._track(self.connection, True)
        if self.hub._refusing:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        self.hub._track(self.connection, False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._route(with_body=True)

    def do_HEAD(self) -> None:
        self._route(with_body=False)

    def _route(self, with_body: bool) -> None:
        if self.hub._refusing:
            self.close_connection = True
            return
        self.hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
        status = self.hub._take_failure()
        if status is not None:
            return self._send_json(status, {"error": "injected failure"})
        path = unquote(urlsplit(self.path).path)
        if self.hub.redirect_loop and path.startswith(self.hub.redirect_loop):
            return self._send_json(302, {}, {"Location": self.path})
        if match := re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)$", path):
            return self._api(*match.groups())
        if match := re.match(r"^/cdn/([0-9a-f]{64})$", path):
            return self._cdn(match.group(1), with_body)
        if match := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
            return self._resolve(*match.groups(), with_body=with_body)
        if planted := self.hub._planted(path):
            return self._send_file(*planted, with_body, {"ETag": f'"{planted[1].git_oid}"'})
        self._send_json(404, {"error": "no such endpoint"})

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        """The repo if this request may see it at `revision`, else None after answering like the hub."""
        repo = self.hub.repos.get(repo_id)
        if repo is None or (self.hub.token and self.headers.get("Authorization") != f"Bearer {self.hub.token}"):
            self._send_json(401, {"error": "Repository not found"},
                            {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            return None
        if repo_id in self.hub.gated:
            self._send_json(403, {"error": "gated"}, {"X-Error-Code": "GatedRepo"})
            return None
        if revision not in ("main", repo.commit):
            self._send_json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
            return None
        return repo

    def _api(self, repo_id: str, kind: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if kind == self.hub.endless_api:
            return self._send_endless(kind, repo)
        if kind == "revision":
            return self._send_json(200, repo.info())
        address = urlsplit(self.path)
        start = int(parse_qs(address.query).get("cursor", ["0"])[0])
        end = start + self.hub.tree_page_size
        entries = repo.tree()
        headers = {}
        next_page = f'<{self.hub.tree_link_base or self.hub.url}{address.path}?recursive=true&cursor={end}>; rel="next"'
        if self.hub.tree_pages == "self":
            entries, headers["Link"] = [], f'<{self.hub.url}{self.path}>; rel="next"'
        elif self.hub.tree_pages == "onward":
            entries, headers["Link"] = [], next_page
        elif end < len(entries):
            headers["Link"] = next_page
        self._send_json(200, entries[start:end], headers, padding=self.hub.tree_padding)

    def _send_endless(self, kind: str, repo: FakeRepo) -> None:
        """JSON that never closes: the repo's info or listing, then the same entry again and again."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        length = self.hub.endless_length
        self.send_header(*(("Content-Length", str(length)) if length is not None else ("Transfer-Encoding", "chunked")))
        self.end_headers()
        entry = json.dumps({"rfilename": "x"} if kind == "revision" else repo.tree()[0]).encode() + b","
        opening = json.dumps({"sha": repo.commit})[:-1].encode() + b', "siblings": [' if kind == "revision" else b"["
        piece = entry * (_CHUNK // len(entry))
        try:
            for data in (opening, *[piece] * (ENDLESS_CAP // len(piece))):
                self.wfile.write(data if length is not None else b"%x\r\n%s\r\n" % (len(data), data))
                self.hub.endless_sent += len(data)
        except OSError:
            pass  # the client stopped reading, as it should
        self.close_connection = True

    def _resolve(self, repo_id: str, revision: str, filename: str, with_body: bool) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        file = repo.files.get(filename)
        common = {"X-Repo-Commit": repo.commit}
        if file is None:
            return self._send_json(404, {"error": "Entry not found"}, {**common, "X-Error-Code": "EntryNotFound"})
        if not file.lfs:
            return self._send_file(f"{repo_id}/{filename}", file, with_body, {**common, "ETag": f'"{file.git_oid}"'})
        self.send_response(302)
        for header, value in {**common, "Location": f"{self.hub.cdn_url}/cdn/{file.sha256}",
                            "ETag": f'"{file.git_oid}"', "X-Linked-Etag": f'"{file.sha256}"',
                            "X-Linked-Size": str(file.size), "Content-Length": "0"}.items():
            self.send_header(header, value)
        self.end_headers()

    def _cdn(self, sha256: str, with_body: bool) -> None:
        found = self.hub.by_sha256.get(sha256)
        if found is None:
            return self._send_json(404, {"error": "no such object"})
        name, file = found
        self._send_file(name, file, with_body, {"ETag": f'"{sha256}"'})

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None, padding: int = 0) -> None:
        body = json.dumps(payload).encode() + b" " * padding
        self.send_response(status)
        for header, value in {**(headers or {}), "Content-Type": "application/json",
                            "Content-Length": str(len(body))}.items():
            self.send_header(header, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, name: str, file: ServedFile, with_body: bool, headers: dict[str, str]) -> None:
        start, end = 0, file.size - 1
        requested = None if self.hub.ignores_range else self.headers.get("Range")
        if requested:
            match = _RANGE.match(requested)
            if match is None or int(match.group(1)) >= file.size:
                return self._send_json(416, {"error": "bad range"}, {"Content-Range": f"bytes */{file.size}"})
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
        self.send_response(206 if requested else 200)
        extra = {"Content-Range": f"bytes {start}-{end}/{file.size}"} if requested else {}
        for header, value in {**headers, **extra, "Accept-Ranges": "bytes",
                            "Content-Length": str(end - start + 1)}.items():
            self.send_header(header, value)
        self.end_headers()
        if with_body:
            self.hub.ranges.append((name, start))
            try:
                self._send_body(name, file, start, end)
            except OSError:
                self.close_connection = True  # the client went away

    def _send_body(self, name: str, file: ServedFile, start: int, end: int) -> None:
        with file.path.open("rb") as handle:
            handle.seek(start)
            position = start
            while position <= end:
                stop = min(position + _CHUNK, end + 1)
                cut = self.hub._cut_within(name, position, stop)
                data = bytearray(handle.read((cut or stop) - position))
                flipped = self.hub._corrupt.get(name)
                if flipped is not None and position <= flipped < position + len(data):
                    data[flipped - position] ^= 0xFF
                self.wfile.write(data)
                self.hub.served[name] += len(data)
                position += len(data)
                if self.hub.bytes_per_s:
                    self._wait(len(data) / self.hub.bytes_per_s)
                if cut is not None:
                    return self._drop_connection()

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.hub._refusing:
            time.sleep(min(0.02, seconds))

    def _drop_connection(self) -> None:
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
        if self.hub.go_away_on_cut:
            self.hub._refusing = True
            self.hub._stopping = threading.Thread(target=self.hub.stop, daemon=True)
            self.hub._stopping.start()
