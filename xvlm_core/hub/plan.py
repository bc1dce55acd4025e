"""The plan of a download: which files a model needs from which repos, how big, and how much is already here.

The hub's API is asked for the revision's commit and the file tree, page by page, each answer read with a byte
bound; the listing as a whole is bounded in pages, bytes and entries, and a page that leads back to one already
read ends it. The safetensors header of the model's weights, read with a bounded Range request, says whether they
embed the vision tower (then the tower's own weights are not fetched). Every listed name is checked to stay inside
its destination before anything is written. Cancel is looked at before every request and while waiting for one.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from xvlm_core.errors import XvlmError
from xvlm_core.hub.connection import DownloadError, HubConnection
from xvlm_core.hub.installed import MAX_HEADER, embeds_tower, file_keys, index_keys, offline_folder, read_local
from xvlm_core.hub.progress import format_size
from xvlm_core.hub.registry import WEIGHT_FORMATS, WEIGHT_PATTERNS, ModelSpec, RepoSpec, matches, tower_repos
from xvlm_core.hub.stores import Store, Stores, free_bytes
from xvlm_core.hub.transfer import SMALL_FILE_LIMIT, PlannedFile, read_prefix, read_whole
from xvlm_core.local_files import read_regular_file
from xvlm_core.model.checkpoint_files import EMBEDDED_TOWER_PREFIX
from xvlm_core.safepath import UnsafePathError, path_inside

log = logging.getLogger(__name__)

HEADER_PREFIX = 100_008  # one request reads the length and most safetensors headers whole
SPACE_MARGIN = 200 * 10**6  # free space kept beyond the download, so the disk is not filled to the last byte
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_ETAG = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")  # a git blob id or a SHA-256: a blob's file name
# No model repo comes near these; a file list that goes beyond them is not a real one. The hub sends up to 1,000
# entries a page, so MAX_ENTRIES takes 100 of its pages: a mirror with smaller pages still has room.
MAX_ENTRIES = 100_000
MAX_PAGES = 1_000
LISTING_LIMIT = 64 * 2**20  # bytes of a whole file list, its pages together


@dataclass(frozen=True)
class ListedFile:
    """A file as the hub's file list names it."""

    path: str
    size: int
    blob_id: str  # its git blob id (of the LFS pointer for large files)
    sha256: str | None  # large (LFS) files only


@dataclass(frozen=True)
class DownloadPlan:
    """What a download will do, to show before it starts: files, sizes, where they go, the space there."""

    spec: ModelSpec
    files: tuple[PlannedFile, ...]
    total_bytes: int
    missing_bytes: int
    destination: Path
    free_bytes: int
    tower_embedded: bool | None = None  # None: not known before the model's weights are here

    @property
    def needed_bytes(self) -> int:
        """Free space the download needs, with a margin."""
        return self.missing_bytes + SPACE_MARGIN if self.missing_bytes else 0

    @property
    def enough_space(self) -> bool:
        return self.free_bytes >= self.needed_bytes


def plan_from_hub(hub: HubConnection, spec: ModelSpec, stores: Stores) -> DownloadPlan:
    model_store = stores.for_role("model")
    model_files = _list_files(hub, spec.model_repo, model_store)
    embedded = _tower_embedded(hub, model_files, model_store)
    files = list(model_files)
    for tower in tower_repos(spec, lambda name: _read_small(hub, name, model_files, model_store)):
        tower_files = _list_files(hub, tower, stores.for_role("vision_tower"))
        files += [file for file in tower_files if not (embedded and file.is_weights)]
    return make_plan(spec, files, stores, embedded)


def offline_plan(spec: ModelSpec, stores: Stores) -> DownloadPlan:
    """Offline: a plan of what is already on disk, or the error saying what is not."""
    model_folder = offline_folder(spec, stores)
    folders = [(spec.model_repo, model_folder)]
    for tower in tower_repos(spec, lambda name: read_local(model_folder / name)):
        snapshot = stores.cache.snapshot(tower.repo_id, tower.revision)
        folders += [(tower, snapshot)] if snapshot else []
    files = [
        PlannedFile(repo_id=repo.repo_id, filename=path.relative_to(folder).as_posix(), size=path.stat().st_size,
                    sha256=None, done_bytes=path.stat().st_size, revision=repo.revision, role=repo.role)
        for repo, folder in folders for path in sorted(folder.rglob("*"))
        if path.is_file() and ".cache" not in path.relative_to(folder).parts
    ]
    return make_plan(spec, files, stores, embeds_tower(model_folder))


def make_plan(spec: ModelSpec, files: list[PlannedFile], stores: Stores, embedded: bool | None) -> DownloadPlan:
    total = sum(file.size for file in files)
    missing = total - sum(file.done_bytes for file in files)
    destination = stores.destination
    return DownloadPlan(spec, tuple(files), total, missing, destination, free_bytes(destination), embedded)


def _list_files(hub: HubConnection, repo: RepoSpec, store: Store) -> list[PlannedFile]:
    """The repo's files that `repo.allow_patterns` asks for, one weight format only, at the revision's commit."""
    commit = _resolve_commit(hub, repo)
    listing = _tree(hub, repo.repo_id, commit)
    source = f"the file list of {repo.repo_id} at {hub.endpoint}"
    try:
        # Every listed name, wanted or not: a listing that names a file outside its repo is not trusted at all.
        for entry in listing:
            path_inside(store.repo_folder(repo.repo_id, commit), entry.path, source=source)
    except UnsafePathError as exc:
        raise DownloadError(f"{exc} Nothing was downloaded.", "integrity") from None
    wanted = [entry for entry in listing if matches(entry.path, repo.allow_patterns)]
    files = []
    for entry in _one_weight_format(wanted):
        file = PlannedFile(
            repo_id=repo.repo_id, filename=entry.path, size=entry.size, sha256=entry.sha256, done_bytes=0,
            revision=repo.revision, commit=commit, blob_id=entry.blob_id, role=repo.role,
        )
        if not _ETAG.match(file.etag):
            raise DownloadError(f"Refused {entry.path!r} from {source}: its checksum {file.etag!r} is not a hash. "
                                "Nothing was downloaded.", "integrity")
        files.append(replace(file, done_bytes=store.done_bytes(file)))
    return files


def _api_url(hub: HubConnection, repo_id: str, kind: str, revision: str) -> str:
    return f"{hub.endpoint}/api/models/{quote(repo_id, safe='/')}/{kind}/{quote(revision, safe='')}"


def _resolve_commit(hub: HubConnection, repo: RepoSpec) -> str:
    info = hub.get_json(_api_url(hub, repo.repo_id, "revision", repo.revision), repo.repo_id, repo.revision).document
    commit = info.get("sha") if isinstance(info, dict) else None
    if not isinstance(commit, str) or not _COMMIT.match(commit):
        raise DownloadError(f"{hub.endpoint} did not give a commit for {repo.repo_id}; is it a model hub?", "http")
    return commit


def _tree(hub: HubConnection, repo_id: str, commit: str) -> list[ListedFile]:
    """Every file of the repo at `commit`, following the listing's pages (`Link: rel=next`) to the end."""
    never_ends = f"The file list of {repo_id} from {hub.host} never ends"
    check_address = "Check the hub address (HF_ENDPOINT), or try again later."
    url: str | None = _api_url(hub, repo_id, "tree", commit) + "?recursive=true&expand=false"
    read: set[str] = set()
    files: list[ListedFile] = []
    received = 0
    while url is not None:
        if url in read:
            raise DownloadError(f"{never_ends}: page {len(read) + 1} leads back to a page already read. "
                                f"{check_address}", "http")
        if len(read) >= MAX_PAGES:
            raise DownloadError(f"{never_ends}: it goes on past {MAX_PAGES} pages, more than any model has. "
                                f"{check_address}", "http")
        read.add(url)
        page = hub.get_json(url, repo_id, commit)
        received += page.size
        if received > LISTING_LIMIT:
            raise DownloadError(f"The file list of {repo_id} from {hub.host} is larger than "
                                f"{format_size(LISTING_LIMIT)}, more than any model's. {check_address}", "http")
        files += _listed_files(hub, repo_id, page.document)
        if len(files) > MAX_ENTRIES:
            raise DownloadError(f"The file list of {repo_id} from {hub.host} names more than {MAX_ENTRIES} files, "
                                f"more than any model has. {check_address}", "http")
        url = page.next_page
    return files


def _listed_files(hub: HubConnection, repo_id: str, page: object) -> list[ListedFile]:
    """The files of one page of a file list (folders are skipped); anything else is not a hub's answer."""
    if not isinstance(page, list):
        raise hub.not_a_hub(repo_id)
    files = []
    for entry in page:
        if not isinstance(entry, dict) or entry.get("type") not in ("file", "directory"):
            raise hub.not_a_hub(repo_id)
        if entry["type"] == "directory":
            continue
        path, size, blob_id, lfs = entry.get("path"), entry.get("size"), entry.get("oid"), entry.get("lfs")
        sha256 = lfs.get("oid") if isinstance(lfs, dict) else None
        if not (isinstance(path, str) and type(size) is int and size >= 0 and isinstance(blob_id, str)
                and (lfs is None or isinstance(sha256, str))):
            raise hub.not_a_hub(repo_id)
        files.append(ListedFile(path, size, blob_id, sha256))
    return files


def _one_weight_format(entries: list[ListedFile]) -> list[ListedFile]:
    """Every file that is not weights, plus the weights of the first format in WEIGHT_FORMATS that is there."""
    kept = [entry for entry in entries if not matches(entry.path, WEIGHT_PATTERNS)]
    for patterns in WEIGHT_FORMATS:
        weights = [entry for entry in entries if matches(entry.path, patterns)]
        if any(not entry.path.endswith(".json") for entry in weights):
            return kept + weights
    return kept


def _read_small(hub: HubConnection, filename: str, files: list[PlannedFile], store: Store) -> bytes | None:
    """A small file of the model repo (config, index), from disk when it is complete, else from the hub."""
    file = next((item for item in files if item.filename == filename), None)
    if file is None:
        return None
    if (path := store.complete_path(file)) is not None:
        try:
            return read_regular_file(path, SMALL_FILE_LIMIT, what=f"{filename} of {file.repo_id}")
        except XvlmError as exc:
            log.warning("%s; reading it from the hub instead", str(exc).rstrip("."))
    return read_whole(hub, file)


def _tower_embedded(hub: HubConnection, files: list[PlannedFile], store: Store) -> bool | None:
    """Whether the model's weights hold the vision tower; None when only the whole .bin file could tell."""
    keys = _remote_weight_keys(hub, files, store)
    return None if keys is None else any(key.startswith(EMBEDDED_TOWER_PREFIX) for key in keys)


def _remote_weight_keys(hub: HubConnection, files: list[PlannedFile], store: Store) -> set[str] | None:
    weights = [file for file in files if file.is_weights]
    index = next((file for file in weights if file.filename.endswith(".index.json")), None)
    if index is not None:
        return index_keys(_read_small(hub, index.filename, files, store) or b"{}")
    single = weights[0] if weights else None
    if single is None:
        return set()
    if (path := store.complete_path(single)) is not None:
        return file_keys(path)
    if not single.filename.endswith(".safetensors"):
        return None
    return _safetensors_keys(hub, single)


def _safetensors_keys(hub: HubConnection, file: PlannedFile) -> set[str]:
    """The tensor names in a remote safetensors file's header, reading only the header.

    Our own bounded read rather than HfApi's header helper: that one keeps the whole body in memory when a server
    (a plain-http mirror, say) ignores the Range header.
    """
    head = read_prefix(hub, file, HEADER_PREFIX)
    length = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    if not 0 < length <= MAX_HEADER or length + 8 > file.size:
        raise DownloadError(f"{file.filename} of {file.repo_id} has an unreadable safetensors header.", "integrity")
    if length + 8 > len(head):
        head = read_prefix(hub, file, length + 8)
    try:
        header = json.loads(head[8 : 8 + length])
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict):
        raise DownloadError(f"{file.filename} of {file.repo_id} has an unreadable safetensors header.", "integrity")
    return {key for key in header if key != "__metadata__"}
