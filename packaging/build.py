"""Build the app as one folder: `python packaging/build.py` makes "dist/XVLM Chat/" (and "XVLM Chat.app" on macOS).

Needs the build extra (`pip install -e ".[build]"`). Prints how long the build took and the size by component, so
growth shows in every CI log. Then check the result with
    "dist/XVLM Chat/xvlm-chat" --self-check MODEL_DIR [--vision-tower DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bundle  # packaging/ is no package: the library `packaging` owns that name
import translations

SPEC = bundle.PROJECT_ROOT / "packaging" / "xvlm-chat.spec"
LINUX_INSTALLER = bundle.PROJECT_ROOT / "packaging" / "linux" / "install.sh"
MB = 1_000_000


def build(dist: Path, work: Path, clean: bool) -> int:
    command = [sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm", "--log-level", "WARN",
               "--distpath", str(dist), "--workpath", str(work)]
    if clean:
        command.append("--clean")
    # Importing every torch submodule to collect it prints dozens of torch's own deprecation notices.
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run(command, cwd=bundle.PROJECT_ROOT, env=env, check=False).returncode


def versions() -> str:
    """The versions that decide most of the size, for the report."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("torch", "PySide6-Essentials", "transformers", "pyinstaller"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def _archive_sizes(executable: Path) -> Counter[str] | None:
    """A program's bytes by component (its archive of Python modules split by module; the rest is "other"),
    or None for a file that is not one of PyInstaller's programs."""
    from PyInstaller.archive.readers import ArchiveReadError, CArchiveReader
    from PyInstaller.loader.pyimod01_archive import ZlibArchiveReader

    try:
        package = CArchiveReader(str(executable))
    except (ArchiveReadError, OSError):
        return None
    sizes: Counter[str] = Counter()
    for offset, _length, _size, _compressed, typecode in package.toc.values():
        if typecode == "z":  # the PYZ archive
            archive = ZlibArchiveReader(str(executable), package._start_offset + offset)
            for module, (_kind, _offset, module_length) in archive.toc.items():
                sizes[bundle.component(module)] += module_length
    sizes["other"] += executable.stat().st_size - sum(sizes.values())
    return sizes


def size_report(folder: Path) -> str:
    """Bytes on disk in `folder` by component, as a table (symbolic links count nothing)."""
    contents = folder / "_internal"
    sizes: Counter[str] = Counter()
    programs = []
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        if path.parent == folder and (archive := _archive_sizes(path)) is not None:
            sizes.update(archive)
            programs.append(f"{path.name} {path.stat().st_size / MB:.1f} MB")
            continue
        inside = path.relative_to(contents if contents in path.parents else folder)
        sizes[bundle.component(inside.as_posix())] += path.stat().st_size
    total = sum(sizes.values())
    lines = [f"Size of {folder}: {total / MB:.1f} MB"]
    for name in [name for name, _prefixes in bundle.COMPONENTS] + ["other"]:
        if sizes[name] or name != "CUDA libraries":
            lines.append(f"  {name:<16}{sizes[name] / MB:>9.1f} MB {100 * sizes[name] / max(total, 1):>5.1f} %")
    lines.append(f"  programs (each with its own archive of Python modules, counted above): {', '.join(programs)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="drop PyInstaller's cache and earlier build files first")
    parser.add_argument("--dist", type=Path, default=bundle.PROJECT_ROOT / "dist", help="where the app goes")
    parser.add_argument("--work", type=Path, default=bundle.PROJECT_ROOT / "build", help="PyInstaller's work folder")
    args = parser.parse_args(argv)

    started = time.monotonic()
    # The .qm files the bundle takes from resources/, compiled afresh so a bundle never ships a stale one.
    translations.release()
    code = build(args.dist.resolve(), args.work.resolve(), args.clean)

    if code:
        print(f"build failed (PyInstaller exit code {code})", file=sys.stderr)
        return code
    folder = args.dist.resolve() / bundle.APP_NAME
    if sys.platform.startswith("linux"):
        installer = folder / LINUX_INSTALLER.name
        shutil.copyfile(LINUX_INSTALLER, installer)
        os.chmod(installer, 0o755)
    print(f"Built {folder} in {time.monotonic() - started:.0f} s with {versions()}")
    print(size_report(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
