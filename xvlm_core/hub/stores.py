"""Where a repo's files go: the hub cache in its standard layout, or a plain folder the user chose.

Every file name is placed with safepath.path_inside, so no name from a listing can lead out of its folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.file_download import repo_folder_name

from xvlm_core.errors import XvlmError
from xvlm_core.hub.connection import default_cache_dir
from xvlm_core.hub.transfer import PartialFile, PlannedFile, write_durably
from xvlm_core.local_files import read_regular_file
from xvlm_core.safepath import path_inside


class Store:
    """Where a repo's files are kept; subclasses say where finished and partial files live."""

    root: Path

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        """The folder a repo's files go into at `commit`; no file name may lead out of it."""
        raise NotImplementedError

    def final_path(self, file: PlannedFile) -> Path:
        return path_inside(self.repo_folder(file.repo_id, file.commit), file.filename,
                           source=f"the file list of {file.repo_id}")

    def partial_path(self, file: PlannedFile) -> Path:
        raise NotImplementedError

    def lock_path(self, file: PlannedFile) -> Path:
        raise NotImplementedError

    def complete_path(self, file: PlannedFile) -> Path | None:
        """Where the finished file can be read, or None when it is not (completely) here."""
        raise NotImplementedError

    def is_complete(self, file: PlannedFile) -> bool:
        return self.complete_path(file) is not None

    def place(self, file: PlannedFile, partial: Path) -> None:
        raise NotImplementedError

    def adopt(self, file: PlannedFile) -> None:
        """Make a file that `is_complete` found usable under its name (nothing to do for most stores)."""

    def finish_repo(self, repo_id: str, revision: str, commit: str) -> None:
        """Called once every file of the repo is in place."""

    def done_bytes(self, file: PlannedFile) -> int:
        if self.is_complete(file):
            return file.size
        return PartialFile.kept_bytes(self.partial_path(file), file)


class CacheStore(Store):
    """The hub cache: blobs/<etag>, snapshots/<commit>/<name> linking to it, refs/<revision> naming the commit.

    Partial files are blobs/<etag>.incomplete, as huggingface_hub names them, with a sidecar beside them.
    """

    def __init__(self, root: Path):
        self.root = root

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_folder_name(repo_id=repo_id, repo_type="model")

    def blob_path(self, file: PlannedFile) -> Path:
        return path_inside(self.repo_dir(file.repo_id) / "blobs", file.etag, source=f"the file list of {file.repo_id}")

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / commit

    def partial_path(self, file: PlannedFile) -> Path:
        return self.blob_path(file).with_name(file.etag + ".incomplete")

    def lock_path(self, file: PlannedFile) -> Path:
        # The lock huggingface_hub takes for the same blob, so the two never write it at once.
        return self.root / ".locks" / self.repo_dir(file.repo_id).name / f"{file.etag}.lock"

    def complete_path(self, file: PlannedFile) -> Path | None:
        if self.final_path(file).is_file():
            return self.final_path(file)
        blob = self.blob_path(file)  # maybe there already for another revision
        return blob if blob.is_file() and blob.stat().st_size == file.size else None

    def adopt(self, file: PlannedFile) -> None:
        if not self.final_path(file).is_file():
            _link(self.blob_path(file), self.final_path(file))

    def place(self, file: PlannedFile, partial: Path) -> None:
        blob = self.blob_path(file)
        os.replace(partial, blob)
        _link(blob, self.final_path(file))

    def finish_repo(self, repo_id: str, revision: str, commit: str) -> None:
        if revision == commit:
            return
        ref = path_inside(self.repo_dir(repo_id) / "refs", revision, source="the revision asked for")
        ref.parent.mkdir(parents=True, exist_ok=True)
        write_durably(ref, commit.encode())

    def snapshot(self, repo_id: str, revision: str) -> Path | None:
        """The snapshot folder a revision points to, when it holds a config.json; no other completeness check."""
        try:
            found = try_to_load_from_cache(repo_id, "config.json", cache_dir=self.root, revision=revision)
        except HFValidationError:
            return None
        return Path(found).parent if isinstance(found, str) else None


def _link(blob: Path, pointer: Path) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<etag>, or the file itself where symlinks are unavailable."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    try:
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    except OSError:
        shutil.copyfile(blob, pointer)  # Windows without developer mode: a copy (the blob may be shared)


RECORD_LIMIT = 64 * 2**10  # a folder download's record: an etag and a commit


class FolderStore(Store):
    """A plain folder the user chose; a small record per file says which version of it is there.

    Partial files, records and locks live under <folder>/.cache/xvlm/, named after the file.
    """

    def __init__(self, root: Path):
        self.root = root

    def _work(self, file: PlannedFile) -> Path:
        return path_inside(self.root / ".cache" / "xvlm", file.filename, source=f"the file list of {file.repo_id}")

    def repo_folder(self, repo_id: str, commit: str) -> Path:
        return self.root

    def partial_path(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".incomplete")

    def lock_path(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".lock")

    def _record(self, file: PlannedFile) -> Path:
        return self._work(file).with_name(self._work(file).name + ".json")

    def complete_path(self, file: PlannedFile) -> Path | None:
        final = self.final_path(file)
        try:
            record = json.loads(read_regular_file(self._record(file), RECORD_LIMIT))
            return final if final.is_file() and final.stat().st_size == file.size and record.get(
                "etag") == file.etag else None
        except (XvlmError, OSError, ValueError, AttributeError, RecursionError):
            return None  # no record we wrote: the file is fetched again

    def place(self, file: PlannedFile, partial: Path) -> None:
        final = self.final_path(file)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        write_durably(self._record(file), json.dumps({"etag": file.etag, "commit": file.commit}).encode())


class Stores:
    """The cache, and the user's folder for the model when one was given."""

    def __init__(self, cache_dir: Path | None = None, local_dir: Path | None = None):
        self.cache = CacheStore(Path(cache_dir).expanduser() if cache_dir else default_cache_dir())
        self.folder = FolderStore(Path(local_dir).expanduser()) if local_dir else None

    def for_role(self, role: str) -> Store:
        return self.folder if self.folder is not None and role == "model" else self.cache

    @property
    def destination(self) -> Path:
        return self.folder.root if self.folder else self.cache.root


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds `path`, which may not exist yet."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return 0
