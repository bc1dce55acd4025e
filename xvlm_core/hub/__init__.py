"""Model downloads and the local hub cache: which files, a resumable download, and what counts as installed.

Everything here is Qt-free and torch-free, so the first-run page can import it without loading torch. From
huggingface_hub come its cache layout and lookups, its HTTP session and headers; what it lacks is here:

    registry     which repos and files each model needs; the known vision towers by repo
    connection   the hub's address and token (read at call time), bounded reads with retries and cancel, errors
                 for people
    plan         which files to fetch, how big, what is already here, where they go and the free space there
    transfer     one file's resumable transfer: partial file, fsync'd sidecar, Range, hash check, cancel
    progress     speed and time left for people
    stores       where files go: the hub cache (blobs, snapshots, refs) or a folder the user chose
    installed    what counts as installed, from disk only; a folder copied by hand

Where files go
    The Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), in its standard
    layout, so models a user already has are found and every other tool finds ours. With `local_dir`, the model's
    files go straight into that folder (partials under `<local_dir>/.cache/xvlm/`) while its vision tower still
    goes to the hub cache, where the loader finds it by its repo id.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from xvlm_core.hub.connection import (
    DownloadCancelled,
    DownloadError,
    HubConnection,
    RetryPolicy,
    default_cache_dir,
    offline,
)
from xvlm_core.hub.installed import (
    embeds_tower,
    find_cached,
    installed_folder,
    installed_model_folder,
    missing_description,
    offline_folder,
    resolve_folder,
    validate_local_folder,
)
from xvlm_core.hub.plan import SPACE_MARGIN, DownloadPlan, offline_plan, plan_from_hub
from xvlm_core.hub.progress import (
    DownloadProgress,
    Meter,
    format_duration,
    format_size,
    ignore_progress,
    waiting_to_retry,
)
from xvlm_core.hub.registry import (
    DEFAULT_MODEL,
    MODEL_FILES,
    TOWER_FILES,
    ModelSpec,
    RepoSpec,
    looks_like_repo_id,
    model_spec,
    tower_repo_id,
)
from xvlm_core.hub.stores import Stores, free_bytes
from xvlm_core.hub.transfer import DISK_FULL, PlannedFile, fetch_file

# What the CLI, the first-run page and the loader use.
__all__ = [
    "DEFAULT_MODEL", "MODEL_FILES", "TOWER_FILES", "DownloadCancelled", "DownloadError", "DownloadPlan",
    "DownloadProgress", "ModelSpec", "PlannedFile", "RepoSpec", "RetryPolicy", "default_cache_dir", "download_model",
    "find_cached", "format_duration", "format_size", "installed_model_folder", "looks_like_repo_id", "model_spec",
    "plan_download", "resolve_folder", "tower_repo_id", "validate_local_folder",
]

log = logging.getLogger(__name__)

RETRY = RetryPolicy()  # what downloads use; tests swap it for one that waits milliseconds


def plan_download(spec: ModelSpec, endpoint: str | None = None, cache_dir: Path | None = None,
                  local_dir: Path | None = None, cancel: threading.Event | None = None,
                  on_progress: Callable[[DownloadProgress], None] = ignore_progress) -> DownloadPlan:
    """What `download_model` would fetch: files and sizes from the hub's listing, and what is already here.

    Blocking; setting `cancel` stops it within a second with DownloadError(kind="cancelled"). `on_progress` hears
    of each wait before the hub is asked again (events with `retry_in_s`), from this thread.
    """
    stores = Stores(cache_dir, local_dir)
    if offline():
        return offline_plan(spec, stores)
    hub = HubConnection(endpoint, cancel or threading.Event(), RETRY,
                        on_retry=lambda delay_s: on_progress(waiting_to_retry(delay_s)))
    return plan_from_hub(hub, spec, stores)


def download_model(
    spec: ModelSpec,
    on_progress: Callable[[DownloadProgress], None] = ignore_progress,
    cancel: threading.Event | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
    plan: DownloadPlan | None = None,
) -> Path:
    """Fetch what `spec` needs (resuming earlier partial downloads) and return the model's folder.

    Blocking; call it from a worker thread. `on_progress` is called from that thread. Setting `cancel` stops it
    within a second with DownloadError(kind="cancelled"). `plan` (from plan_download) saves listing the hub twice.
    """
    stores = Stores(cache_dir, local_dir)
    if offline():
        return offline_folder(spec, stores)
    hub = HubConnection(endpoint, cancel or threading.Event(), RETRY,
                        on_retry=lambda delay_s: on_progress(waiting_to_retry(delay_s)))
    try:
        plan = plan or plan_from_hub(hub, spec, stores)
    except DownloadError as error:
        folder = installed_folder(spec, stores) if error.kind in ("offline", "unreachable") else None
        if folder is None:
            raise
        log.warning("%s Using the copy already downloaded.", error)
        return folder
    if not plan.enough_space:
        raise DownloadError(
            f"Not enough disk space: {spec.display_name} needs {format_size(plan.needed_bytes)} more in "
            f"{plan.destination} ({format_size(plan.free_bytes)} free). Free up space or choose another folder.",
            "disk_full")
    meter = Meter(plan.total_bytes, plan.total_bytes - plan.missing_bytes, on_progress)
    hub.on_retry = meter.retrying  # waits now come with the bytes so far
    try:
        _fetch_all(hub, plan, stores, meter)
    except OSError as exc:
        raise _os_error(exc, plan.destination, meter.total - meter.done) from None
    meter.finish()
    folder = installed_folder(spec, stores)
    if folder is None:
        raise DownloadError(f"{spec.display_name} was downloaded but is not complete: "
                            f"{missing_description(spec, stores)}.", "integrity")
    return folder


def _fetch_all(hub: HubConnection, plan: DownloadPlan, stores: Stores, meter: Meter) -> None:
    embedded = plan.tower_embedded
    for file in _download_order(plan.files, embedded):
        skippable = file.role == "vision_tower" and file.is_weights
        if embedded is None and skippable:
            model_weights = next(item for item in plan.files if item.role == "model" and item.is_weights)
            embedded = embeds_tower(stores.for_role("model").final_path(model_weights).parent)
        if embedded and skippable:
            meter.adjust(-file.done_bytes, -file.size)  # the model carries the tower: not needed after all
            continue
        fetch_file(hub, stores.for_role(file.role), file, meter)
    # Refs only now: until every file is in place, no revision points at the new snapshots.
    for repo_id, revision, commit, role in {(file.repo_id, file.revision, file.commit, file.role)
                                            for file in plan.files}:
        stores.for_role(role).finish_repo(repo_id, revision, commit)


def _download_order(files: tuple[PlannedFile, ...], embedded: bool | None) -> list[PlannedFile]:
    """Small files first, the model's weights last (so it completes last), unless they decide the tower's."""

    def rank(file: PlannedFile) -> tuple[int, int]:
        if not file.is_weights:
            return (0, 0)
        model_first = embedded is None
        return (1, 0 if (file.role == "model") == model_first else 1)

    return sorted(files, key=rank)


def _os_error(exc: OSError, destination: Path, remaining: int) -> Exception:
    where = exc.filename or destination
    if exc.errno in DISK_FULL:
        return DownloadError(
            f"The disk is full: writing to {where} failed ({format_size(free_bytes(destination))} free). "
            f"Free up at least {format_size(remaining + SPACE_MARGIN)} and download again; "
            "what was already downloaded is kept.", "disk_full")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DownloadError(
            f"Cannot write to {where}: permission denied. Choose a folder you can write to "
            "(HF_HUB_CACHE, or a local folder) or fix its permissions.", "permission")
    return exc
