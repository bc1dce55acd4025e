"""What goes into the frozen build and what stays out, for `xvlm-chat.spec`, `build.py` and the packaging tests.

Plain data and small functions over PyInstaller's (destination, source, typecode) lists; nothing here imports
PyInstaller, torch or Qt, so the tests can check the lists without building anything.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import sys
import tomllib
from collections.abc import Callable, Iterable
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from app import APP_NAME as APP_NAME  # noqa: E402 - the spec runs with packaging/ on sys.path, not the project

RESOURCES = PROJECT_ROOT / "resources"
# resources/ is also a Python package (for installs from a wheel); its marker and bytecode are not resources.
PACKAGE_MARKERS = (".py", ".pyc")
GUI_NAME = "xvlm-chat"  # the window; also the desktop entry's and the icon's name
CLI_NAME = "xvlm"  # the terminal command
BUNDLE_ID = "org.xvlm.chat"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)  # the hicolor sizes desktops look for
ICON_THEME_DIR = "share/icons/hicolor"  # in the bundle: <size>x<size>/apps/xvlm-chat.png and scalable/apps/*.svg

# Qt plugins kept, by plugin folder; a folder not named here is left out entirely. Names are file names without
# "lib" and suffix (libqxcb.so, qxcb.dll and libqxcb.dylib are all "qxcb"); None keeps the whole folder.
QT_PLUGINS: dict[str, frozenset[str] | None] = {
    # Linux: X11, Wayland, and the two windowless ones (self-check, CI); Windows and macOS: their own.
    "platforms": frozenset({"qxcb", "qwayland", "qwayland-generic", "qoffscreen", "qminimal", "qwindows", "qcocoa"}),
    "xcbglintegrations": None,  # the xcb plugin asks for these at start-up; missing ones cost a warning
    "wayland-shell-integration": frozenset({"xdg-shell"}),
    "wayland-decoration-client": None,  # window title bars where the compositor draws none
    # What people attach, drop or paste (the model reads the same formats through Pillow), and the icons.
    "imageformats": frozenset({"qgif", "qjpeg", "qwebp", "qtiff", "qsvg", "qico"}),
    "iconengines": frozenset({"qsvgicon"}),
    "styles": None,  # Windows' and macOS's native looks; Linux uses Fusion, built into Qt
    # Native file dialogs and the dark/light setting through the desktop portal (D-Bus). Not gtk3: it would pull
    # this machine's GTK stack (glib, cairo, pango...) into the build, to clash with the user's own GTK.
    "platformthemes": frozenset({"qxdgdesktopportal"}),
    # dead keys; Chinese and other input methods
    "platforminputcontexts": frozenset({"composeplatforminputcontextplugin", "ibusplatforminputcontextplugin"}),
}
QT_TRANSLATIONS = ("*_zh_CN.qm",)  # the app speaks English (built into Qt) and Simplified Chinese

# Model families the checkpoint is built from; transformers' other ~550 model folders stay out (~100 MB).
# `auto` and `encoder_decoder` are imported by transformers itself while loading these.
TRANSFORMERS_MODELS = ("auto", "clip", "encoder_decoder", "llama")

# `xvlm serve`'s HTTP protocol and lifespan, which uvicorn imports by name at run time (uvicorn itself needs click).
SERVER_MODULES = ("uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on")

# Never imported when the app runs, but reachable in the import graph through optional branches.
EXCLUDED_MODULES = (
    # other Qt bindings, that qasync and others probe for
    "PyQt5", "PyQt6", "PySide2", "shiboken2",
    # interactive tools and test suites
    "tkinter", "_tkinter", "turtle", "turtledemo", "idlelib", "IPython", "ipykernel", "jupyter_client",
    "notebook", "pytest", "_pytest", "pytestqt", "pytest_timeout", "pluggy", "hypothesis", "expecttest",
    "lib2to3", "ensurepip", "venv", "pydoc_data",
    # build tools
    "PyInstaller", "pip", "setuptools", "pkg_resources", "distutils", "Cython", "ruff",
    # other frameworks that transformers and torch integrate with when they are installed
    "tensorflow", "tensorboard", "keras", "jax", "jaxlib", "flax", "optax", "torchvision", "torchaudio",
    "torchao", "triton", "onnx", "onnxruntime", "onnxscript", "accelerate", "bitsandbytes", "deepspeed",
    "peft", "timm", "datasets", "pandas", "scipy", "sklearn", "matplotlib", "av", "cv2", "librosa",
    "soundfile", "kernels", "torch.utils.tensorboard",
    # huggingface_hub's command line and file-system layers, and torch's graph partitioner; the app downloads with
    # its own requests (xvlm_core.hub), so the Xet client is not needed either
    "typer", "rich", "pygments", "shellingham", "markdown_it", "mdurl", "pydantic", "pydantic_core",
    "annotated_types", "annotated_doc", "typing_inspection", "fsspec", "hf_xet", "networkx",
)

# Files PyInstaller's hooks collect with a package but the app never opens: C++ headers and test programs
# (torch/bin, torch/test), CMake files, type stubs, test libraries. KEPT_FILES wins over them.
KEPT_FILES = ("torch/bin/torch_shm_manager",)  # `import torch` checks it is there (Linux, macOS)
EXCLUDED_FILES = (
    "torch/bin/*", "torch/test/*", "torch/include/*", "torch/share/*", "torch/lib/*test*",
    "torch/lib/libbackend_with_compiler*", "torch/lib/libaoti_custom_ops*", "torch/lib/*.lib",
    "*.pyi", "*/tests/*",
    "PySide6/Qt/qml/*", "PySide6/qml/*", "PySide6/Qt/metatypes/*", "PySide6/typesystems/*", "PySide6/include/*",
)


def program(folder: Path, name: str) -> Path:
    """The program `name` (GUI_NAME, CLI_NAME) in a built folder."""
    return folder / (f"{name}.exe" if sys.platform == "win32" else name)


def project_version() -> str:
    """The version in pyproject.toml, so a build never needs the package installed to know it."""
    with (PROJECT_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["version"]


def resource_datas() -> list[tuple[str, str]]:
    """(file, folder in the bundle) for everything under resources/: icons, translations, the test picture, the
    desktop-entry template. The app finds them through `app.icons.resources_dir()`."""
    return [(str(path), PurePosixPath("resources", *path.parent.relative_to(RESOURCES).parts).as_posix())
            for path in sorted(RESOURCES.rglob("*")) if path.is_file() and path.suffix not in PACKAGE_MARKERS]


def _submodules(package: str) -> list[str]:
    folder = PROJECT_ROOT / package
    return [package] + [f"{package}.{info.name}" for info in pkgutil.iter_modules([str(folder)])
                        if info.name != "__main__"]


def hidden_imports() -> list[str]:
    """Every module of the app and of xvlm_core: the worker imports the model code by name, at run time."""
    return _submodules("app") + _submodules("xvlm_core") + list(SERVER_MODULES)


def engine_binaries() -> list[tuple[str, str]]:
    """(file, folder in the bundle) for the llama.cpp engine's library, where llama-cpp-python loads it from (its
    package's lib/): it opens it with ctypes, which no import shows. The libraries it links, beside it, follow by
    PyInstaller's own analysis. None where the engine is not installed: the build then answers on PyTorch only."""
    folder = _installed_folder("llama_cpp")
    name = {"win32": "llama.dll", "darwin": "libllama.dylib"}.get(sys.platform, "libllama.so")
    library = folder / "lib" / name if folder is not None else None
    return [(str(library), "llama_cpp/lib")] if library is not None and library.is_file() else []


def qt_modules_used() -> set[str]:
    """The Qt modules (`QtCore`, ...) that the app's code imports; the build leaves the binding's others out."""
    used = set()
    for path in [PROJECT_ROOT / "main.py", *sorted((PROJECT_ROOT / "app").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            used.update(name.split(".")[1] for name in names if name.startswith("PySide6.Qt"))
    return used


def _installed_folder(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds the package without running its __init__
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


def excluded_modules() -> list[str]:
    """EXCLUDED_MODULES, the Qt modules the app does not import, and the transformers models it does not use."""
    excluded = list(EXCLUDED_MODULES)
    pyside = _installed_folder("PySide6")
    if pyside is not None:
        modules = {path.name.split(".")[0] for path in pyside.iterdir()  # QtCore.abi3.so, QtCore.pyd
                   if path.name.startswith("Qt") and path.suffix in (".so", ".pyd")}
        excluded += sorted(f"PySide6.{name}" for name in modules - qt_modules_used())
    transformers = _installed_folder("transformers")
    if transformers is not None:
        models = {path.name for path in (transformers / "models").iterdir() if (path / "__init__.py").is_file()}
        excluded += sorted(f"transformers.models.{name}" for name in models - set(TRANSFORMERS_MODELS))
    return excluded


def plugin_name(file_name: str) -> str:
    """`libqxcb.so`, `qxcb.dll`, `libqxcb.dylib` -> `qxcb`."""
    return file_name.split(".")[0].removeprefix("lib")


def _qt_plugin_kept(dest: PurePosixPath) -> bool | None:
    """For a file under a Qt plugins folder: whether QT_PLUGINS keeps it; None for anything else."""
    parts = dest.parts
    if "plugins" not in parts or parts[0] != "PySide6":
        return None
    index = parts.index("plugins")
    if len(parts) != index + 3:
        return None
    wanted = QT_PLUGINS.get(parts[index + 1], frozenset())
    return wanted is None or plugin_name(parts[-1]) in wanted


def keep_file(dest: str) -> bool:
    """Whether a collected file (its path in the bundle) belongs in the build."""
    path = PurePosixPath(dest.replace("\\", "/"))
    plugin = _qt_plugin_kept(path)
    if plugin is not None:
        return plugin
    if path.parts[:3] == ("PySide6", "Qt", "translations") and path.suffix == ".qm":
        return any(fnmatch(path.name, pattern) for pattern in QT_TRANSLATIONS)
    return (any(fnmatch(path.as_posix(), pattern) for pattern in KEPT_FILES)
            or not any(fnmatch(path.as_posix(), pattern) for pattern in EXCLUDED_FILES))


def keep(toc: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """A PyInstaller TOC (binaries or datas) without the files `keep_file` rejects."""
    return [entry for entry in toc if keep_file(entry[0])]


def _is_shared_library_candidate(dest: str) -> bool:
    """Libraries that only exist in the build because something links them: the system libraries beside the
    programs, and Qt's own libraries."""
    path = PurePosixPath(dest.replace("\\", "/"))
    folder = path.parent.as_posix()
    return (folder in (".", "PySide6/Qt/lib") or (folder == "PySide6" and path.name.startswith("Qt6"))) \
        and not path.name.lower().startswith(("libpython", "python"))  # the programs load Python themselves


def prune_unlinked(binaries: list[tuple[str, str, str]],
                   imports_of: Callable[[str], Iterable[str]]) -> tuple[list[tuple[str, str, str]], list[str]]:
    """`binaries` without the shared libraries that nothing kept links to; also returns what was dropped.

    PyInstaller finds the libraries of every Qt plugin before `keep` drops most plugins; what only those plugins
    needed (GTK's stack for the gtk3 theme, EGL device integrations, ...) would otherwise stay. Extension modules,
    plugins and libraries in package folders are the roots; `imports_of(source path)` names what a file links.
    """
    candidates = {PurePosixPath(dest.replace("\\", "/")).name.lower(): (dest, source, typecode)
                  for dest, source, typecode in binaries
                  if typecode == "BINARY" and _is_shared_library_candidate(dest)}
    roots = [source for dest, source, _typecode in binaries
             if PurePosixPath(dest.replace("\\", "/")).name.lower() not in candidates]
    reached: set[str] = set()
    queue = list(roots)
    while queue:
        for name in imports_of(queue.pop()):
            key = name.replace("\\", "/").rsplit("/", 1)[-1].lower()
            if key in candidates and key not in reached:
                reached.add(key)
                queue.append(candidates[key][1])
    dropped = sorted(candidates[key][0] for key in candidates.keys() - reached)
    return [entry for entry in binaries if entry[0] not in dropped], dropped


def split_scripts(scripts: list[tuple[str, str, str]], *programs: Path) -> list[list[tuple[str, str, str]]]:
    """One Analysis of several programs lists its run-time hooks, then each program; give each EXE the hooks and
    its own program."""
    sources = [str(Path(program).resolve()) for program in programs]
    hooks = [entry for entry in scripts if str(Path(entry[1]).resolve()) not in sources]
    by_source = {str(Path(entry[1]).resolve()): entry for entry in scripts}
    return [[*hooks, by_source[source]] for source in sources]


# Sizes by component: the first matching prefix of a path in the bundle (or of a module name in the PYZ archive).
COMPONENTS = (
    ("torch", ("torch", "functorch", "torchgen", "libtorch", "libc10", "libgomp", "libshm")),
    ("CUDA libraries", ("nvidia", "libcuda", "libcudnn", "libcublas", "libnccl", "libnv", "triton")),
    ("Qt", ("PySide6", "shiboken6", "libQt6", "libpyside6", "libshiboken6", "Qt6", "pyside6")),
    ("transformers", ("transformers", "tokenizers", "sentencepiece", "safetensors", "huggingface_hub", "hf_xet")),
    ("llama.cpp engine", ("llama_cpp", "gguf", "libllama", "libggml")),
    ("python stdlib", ("base_library.zip", "python3", "libpython", "lib-dynload", "Python")),
)


def component(path: str) -> str:
    """The component a file in the bundle, or a module in the PYZ archive, belongs to."""
    first = path.replace("\\", "/").split("/")[0]
    top = first.split(".")[0]
    for name, prefixes in COMPONENTS:
        if any(first.startswith(prefix) for prefix in prefixes):
            return name
    if top in sys.stdlib_module_names or first in sys.stdlib_module_names:
        return "python stdlib"
    return "other"
