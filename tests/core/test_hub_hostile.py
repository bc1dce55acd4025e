"""A hub (or a mirror, or whoever sits between) that lists file names leading out of the destination.

Nothing outside the hub cache or the chosen folder may be created, replaced or deleted, and the error names the file.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from xvlm_core import hub
from xvlm_core.cli import main
from xvlm_core.errors import CheckpointError
from xvlm_core.hub import connection
from xvlm_core.hub import plan as plan_module

MODEL = "XiaoduoAILab/Xmodel_VLM"


def hostile_names(outside: Path) -> list[str]:
    """Names that each reach `outside/x.model` (or would on Windows), all matching the allow pattern `*.model`."""
    climb = "../" * 40 + outside.as_posix().lstrip("/") + "/x.model"  # more `..` than any destination is deep
    return [climb, (outside / "x.model").as_posix(), "..\\..\\..\\..\\x.model", "C:/x.model", "C:x.model",
            "sub/../../x.model"]


def tree_state(root: Path) -> dict[str, tuple[bool, bytes | None]]:
    """Every path under `root`: whether it is a link, and a file's bytes."""
    return {
        path.relative_to(root).as_posix(): (path.is_symlink(), path.read_bytes() if path.is_file() else None)
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the destinations, holding a file a hostile name aims at."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "x.model").write_bytes(b"precious")
    return folder


@pytest.mark.parametrize("case", range(6))
@pytest.mark.parametrize("destination", ["cache", "local_dir"])
def test_listed_names_leading_out_of_the_destination_are_refused(hub_server, tmp_path, outside, case, destination):
    name = hostile_names(outside)[case]
    hub_server.plant(MODEL, name, tmp_path / "outside" / "x.model")
    local_dir = tmp_path / "chosen" / "xmodel" if destination == "local_dir" else None
    before = tree_state(tmp_path)
    with pytest.raises(hub.DownloadError) as error:
        hub.download_model(hub.DEFAULT_MODEL, local_dir=local_dir)
    assert error.value.kind == "integrity"
    assert str(error.value).startswith(f"Refused the file name {name!r} from the file list of {MODEL}")
    assert "Nothing was downloaded" in str(error.value)
    assert tree_state(tmp_path) == before  # the chosen folder is not even created
    assert (outside / "x.model").read_bytes() == b"precious" and not (outside / "x.model").is_symlink()
    assert hub_server.served == {}  # refused while planning: no file was fetched


def test_the_download_command_refuses_a_hostile_listing_in_one_line(hub_server, tmp_path, outside, capsys):
    name = hostile_names(outside)[0]
    hub_server.plant(MODEL, name, outside / "x.model")
    before = tree_state(tmp_path)
    assert main(["download", "--local-dir", str(tmp_path / "xmodel")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: Refused the file name {name!r}")
    assert tree_state(tmp_path) == before


def test_a_star_in_an_allow_pattern_stays_within_one_folder(hub_server, outside):
    hub_server.plant(MODEL, "nested/extra.model", outside / "x.model")
    hub_server.plant(MODEL, "old/model.safetensors", outside / "x.model")
    names = {file.filename for file in hub.plan_download(hub.DEFAULT_MODEL).files if file.repo_id == MODEL}
    assert "nested/extra.model" not in names and "old/model.safetensors" not in names
    assert "xmodel_32000.model" in names and "model.safetensors" in names


def test_a_listed_checksum_that_is_not_a_hash_is_refused(hub_server, monkeypatch):
    file = hub_server.repos[MODEL].files["config.json"]
    monkeypatch.setitem(hub_server.repos[MODEL].files, "config.json",
                        type(file)(file.path, file.size, file.sha256, "../../../x", file.lfs))
    with pytest.raises(hub.DownloadError, match=r"Refused 'config.json' .* its checksum '../../../x' is not a hash"):
        hub.plan_download(hub.DEFAULT_MODEL)


def test_a_shard_index_in_a_local_folder_naming_a_file_outside_is_refused(tmp_path, tiny_model_dir):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "xmodel_32000.model"):
        (folder / name).symlink_to(tiny_model_dir / name)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"lm_head.weight": "/etc/passwd"}}')
    with pytest.raises(CheckpointError) as error:
        hub.validate_local_folder(folder)
    assert f"Refused the file name '/etc/passwd' from {folder / 'model.safetensors.index.json'}" in str(error.value)


def test_an_endless_error_answer_is_read_only_up_to_its_bound():
    import http.server
    import socketserver
    import threading

    from huggingface_hub import get_session

    from xvlm_core.hub.connection import ERROR_BODY_LIMIT, bounded_error

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()
            try:
                for _ in range(10_000):  # 640 MB at most, if nobody hung up
                    self.wfile.write(b"x" * 65536)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with get_session().stream("GET", f"http://127.0.0.1:{server.server_address[1]}/x") as answer:
            error = bounded_error(answer)
    finally:
        server.shutdown()
        server.server_close()
    assert error.status_code == 404 and len(error.content) == ERROR_BODY_LIMIT


# -- answers that never end


@pytest.mark.parametrize("length", [None, 10**12], ids=["chunked", "lying-length"])
@pytest.mark.parametrize("answer", ["revision", "tree"])
def test_an_endless_answer_from_the_hub_is_read_only_up_to_its_bound(hub_server, monkeypatch, answer, length):
    monkeypatch.setattr(connection, "JSON_LIMIT", 2**20)
    hub_server.endless_api, hub_server.endless_length = answer, length
    with pytest.raises(hub.DownloadError) as error:
        hub.plan_download(hub.DEFAULT_MODEL)
    assert error.value.kind == "http"
    assert str(error.value).startswith(f"{hub_server.url.removeprefix('http://')} sent more than 1.0 MB")
    # What the client took before it hung up: its bound, plus what was in flight (the hub would send 64 MB).
    assert hub_server.endless_sent < 24 * 2**20


def tree_requests(hub_server) -> int:
    return sum("/tree/" in path for _, path, _ in hub_server.requests)


def test_a_file_list_whose_page_leads_back_to_itself_stops_at_once(hub_server):
    hub_server.tree_pages = "self"
    with pytest.raises(hub.DownloadError) as error:
        hub.plan_download(hub.DEFAULT_MODEL)
    assert error.value.kind == "http"
    assert str(error.value).startswith(f"The file list of {MODEL} from {hub_server.url.removeprefix('http://')} "
                                       "never ends: page 2 leads back to a page already read.")
    assert tree_requests(hub_server) == 1


def test_a_file_list_that_goes_on_page_after_page_stops_at_its_bound(hub_server, monkeypatch):
    monkeypatch.setattr(plan_module, "MAX_PAGES", 20)
    hub_server.tree_pages = "onward"
    with pytest.raises(hub.DownloadError, match=f"The file list of {MODEL} from .* never ends: it goes on past 20 "
                                                "pages"):
        hub.plan_download(hub.DEFAULT_MODEL)
    assert tree_requests(hub_server) == 20


def test_a_file_list_larger_than_any_model_has_stops_at_its_bound(hub_server, monkeypatch):
    monkeypatch.setattr(plan_module, "LISTING_LIMIT", 2**20)
    hub_server.tree_page_size = 1
    hub_server.tree_padding = 300_000  # every page within the bound of one answer; together they are not
    with pytest.raises(hub.DownloadError, match=f"The file list of {MODEL} from .* is larger than 1.0 MB"):
        hub.plan_download(hub.DEFAULT_MODEL)
    assert tree_requests(hub_server) == 4


def test_cancel_stops_planning_between_pages(hub_server):
    hub_server.tree_pages = "onward"
    cancel = threading.Event()

    class CancelOnThirdPage(list):
        """The hub's request log, pressing Cancel while the third page is asked for."""

        def append(self, request) -> None:
            super().append(request)
            if tree_requests(hub_server) == 3:
                cancel.set()

    hub_server.requests = CancelOnThirdPage()
    with pytest.raises(hub.DownloadError) as error:
        hub.plan_download(hub.DEFAULT_MODEL, cancel=cancel)
    assert error.value.kind == "cancelled"
    assert tree_requests(hub_server) == 3


def test_the_token_goes_to_no_other_address_a_file_list_leads_to(hub_server, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    hub_server.tree_link_base = hub_server.cdn_url  # the next pages are on another origin
    hub.plan_download(hub.DEFAULT_MODEL)
    first_pages = [auth for _, path, auth in hub_server.requests if "/tree/" in path and "cursor=" not in path]
    next_pages = [auth for _, path, auth in hub_server.requests if "/tree/" in path and "cursor=" in path]
    assert first_pages == ["Bearer secret-token"] * 2 and next_pages and set(next_pages) == {None}


def test_a_redirect_that_names_no_address_is_an_error_not_a_wait(hub_server):
    plan = hub.plan_download(hub.DEFAULT_MODEL)
    hub_server.fail_next(1, status=300)  # "Multiple Choices", and no Location to follow
    cancel = threading.Event()
    bound = threading.Timer(10, cancel.set)  # a download that waits for a body that never comes ends here
    bound.start()
    try:
        with pytest.raises(hub.DownloadError) as error:
            hub.download_model(hub.DEFAULT_MODEL, cancel=cancel, plan=plan)
    finally:
        bound.cancel()
    assert error.value.kind == "http" and "answered '300 Multiple Choices'" in str(error.value)


@pytest.mark.parametrize("loop", ["/api/", "/cdn/"])
def test_a_redirect_loop_gets_a_sentence(hub_server, loop):
    hub_server.redirect_loop = loop  # the hub's own answers, or the large files it sends elsewhere
    with pytest.raises(hub.DownloadError) as error:
        hub.download_model(hub.DEFAULT_MODEL)
    assert error.value.kind == "unreachable"
    assert str(error.value) == (f"The hub or mirror at {hub_server.url.removeprefix('http://')} redirects in a "
                                "loop, so nothing can be fetched from it. Check its address (HF_ENDPOINT).")
