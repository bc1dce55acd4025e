"""What the build takes and leaves out, checked without building: the spec's lists against the app's own code."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path, PurePosixPath

import bundle
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
APP = PROJECT_ROOT / "app"
SPEC = PROJECT_ROOT / "packaging" / "xvlm-chat.spec"


def _constant_strings(node: ast.expr | None) -> list[str]:
    """"send" -> ["send"]; "stop" if busy else "send" -> both."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constant_strings(node.body) + _constant_strings(node.orelse)
    return []


def _called_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def icon_names_in_app() -> dict[str, str]:
    """Icon names written in app/: arguments of icon(...), and of any app function's `icon_name` parameter."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in APP.rglob("*.py")}
    takes_icon_name = {}  # function name -> position of icon_name among the arguments a caller writes
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [argument.arg for argument in node.args.args if argument.arg not in ("self", "cls")]
                if "icon_name" in names:
                    takes_icon_name[node.name] = names.index("icon_name")
    found = {}
    for path, tree in trees.items():
        for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
            name = _called_name(call)
            arguments: list[ast.expr | None] = []
            if name == "icon" and call.args:
                arguments.append(call.args[0])
            if name in takes_icon_name and len(call.args) > takes_icon_name[name]:
                arguments.append(call.args[takes_icon_name[name]])
            arguments += [keyword.value for keyword in call.keywords if keyword.arg == "icon_name"]
            for argument in arguments:
                for icon_name in _constant_strings(argument):
                    found[icon_name] = f"{path.relative_to(PROJECT_ROOT)}:{call.lineno}"
    return found


def resource_paths_in_app() -> dict[str, str]:
    """Paths written as `resources_dir() / "a" / "b"` in app/, up to the first part that is not a plain string."""
    found = {}
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            parts: list[str] = []
            while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                right = _constant_strings(node.right)
                parts = [right[0], *parts] if right else []  # what follows a computed part is not known
                node = node.left
            if parts and isinstance(node, ast.Call) and _called_name(node) == "resources_dir":
                found["/".join(parts)] = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
    return found


def bundled_resources() -> set[str]:
    return {f"{folder}/{Path(source).name}" for source, folder in bundle.resource_datas()}


def test_every_file_under_resources_is_bundled_where_the_app_looks():
    files = {path.relative_to(PROJECT_ROOT).as_posix() for path in (PROJECT_ROOT / "resources").rglob("*")
             if path.is_file() and path.suffix not in bundle.PACKAGE_MARKERS}
    assert files == bundled_resources()
    assert {"resources/icons/app.svg", "resources/self-check.png", "resources/xvlm-chat.desktop.in"} <= files


def test_the_interface_translations_are_bundled_beside_their_sources():
    bundled = bundled_resources()
    for language in ("zh_CN",):
        assert {f"resources/translations/xvlm_chat_{language}.qm",
                f"resources/translations/xvlm_chat_{language}.ts"} <= bundled
    assert "translations" in resource_paths_in_app()  # app.i18n looks there


def test_every_icon_the_app_names_is_bundled():

    names = icon_names_in_app()
    assert {"send", "stop", "close", "attach", "warning"} <= set(names)  # the scan sees the composer and window
    missing = {name: where for name, where in names.items() if f"resources/icons/{name}.svg" not in bundled_resources()}
    assert not missing, f"icons used but not in the bundle: {missing}"


def test_every_resource_path_the_app_builds_is_bundled():
    paths = resource_paths_in_app()
    assert "icons/app.svg" in paths
    bundled = bundled_resources()
    missing = {path: where for path, where in paths.items()
               if not any(item == f"resources/{path}" or item.startswith(f"resources/{path}/") for item in bundled)}
    assert not missing, f"resources the app opens but the bundle lacks: {missing}"


def test_hidden_imports_name_every_module_of_the_app_and_the_core():
    hidden = set(bundle.hidden_imports())
    for package in ("app", "xvlm_core"):
        modules = {f"{package}.{path.stem}" for path in (PROJECT_ROOT / package).glob("*.py")
                   if path.stem not in ("__init__", "__main__")}
        assert modules <= hidden, modules - hidden


def _imports(folder: Path) -> dict[str, str]:
    found = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                found[name] = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
    return found


def test_no_excluded_module_is_imported_by_the_app_or_the_core():
    excluded = bundle.excluded_modules()
    imported = {**_imports(PROJECT_ROOT / "xvlm_core"), **_imports(APP)}
    clashes = {name: where for name, where in imported.items()
               if any(name == gone or name.startswith(f"{gone}.") for gone in excluded)}
    assert not clashes, f"imported but left out of the build (see packaging/bundle.py): {clashes}"


def test_unused_qt_modules_are_left_out_and_used_ones_kept():
    excluded = set(bundle.excluded_modules())
    used = bundle.qt_modules_used()
    assert {"QtCore", "QtGui", "QtWidgets", "QtSvg"} <= used
    assert not {f"PySide6.{name}" for name in used} & excluded
    assert {"PySide6.QtQuick", "PySide6.QtQml", "PySide6.QtOpenGL"} <= excluded


RUNTIME_PROBE = """
import json, sys
from pathlib import Path
from xvlm_core.model import prompt
from xvlm_core import sampling
from xvlm_core.engines.pytorch.loading import load_model
from xvlm_core.engines.pytorch.session import ChatSession
loaded = load_model(sys.argv[1], sys.argv[2], "cpu", "float32")
picture = str(Path(sys.argv[3]))
for settings in (sampling.SamplingSettings(max_new_tokens=4),
                 sampling.SamplingSettings(max_new_tokens=4, temperature=0.8, top_p=0.9, top_k=20,
                                           repetition_penalty=1.1, seed=1)):
    "".join(ChatSession(loaded).answer([prompt.Message("user", "What is it?", [picture])], settings))
import app.ui.window, app.self_check, xvlm_core.cli, xvlm_core.hub  # noqa
print(json.dumps(sorted(sys.modules)))
"""


@pytest.fixture(scope="module")
def modules_loaded_at_run_time(tiny_model_dir, tiny_tower_dir) -> list[str]:
    """Every module a process has imported after loading the model and answering, greedy and sampled."""
    done = subprocess.run(
        [sys.executable, "-c", RUNTIME_PROBE, str(tiny_model_dir), str(tiny_tower_dir),
         str(PROJECT_ROOT / "resources" / "self-check.png")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_transformers_models_kept_are_the_ones_loading_and_answering_imports(modules_loaded_at_run_time):
    models = {name.split(".")[2] for name in modules_loaded_at_run_time
              if name.startswith("transformers.models.") and name.count(".") >= 2}
    assert "llama" in models and "clip" in models
    assert models <= set(bundle.TRANSFORMERS_MODELS), models - set(bundle.TRANSFORMERS_MODELS)


def test_nothing_left_out_is_imported_while_answering(modules_loaded_at_run_time):
    excluded = bundle.excluded_modules()
    clashes = [name for name in modules_loaded_at_run_time
               if any(name == gone or name.startswith(f"{gone}.") for gone in excluded)]
    assert not clashes


@pytest.mark.parametrize(("dest", "kept"), [
    ("PySide6/Qt/plugins/platforms/libqxcb.so", True),
    ("PySide6/Qt/plugins/platforms/libqoffscreen.so", True),
    ("PySide6/Qt/plugins/platforms/qwindows.dll", True),
    ("PySide6/Qt/plugins/platforms/libqeglfs.so", False),
    ("PySide6/Qt/plugins/platforms/libqvnc.so", False),
    ("PySide6/Qt/plugins/imageformats/libqjpeg.so", True),
    ("PySide6/Qt/plugins/imageformats/libqwebp.so", True),
    ("PySide6/Qt/plugins/imageformats/libqpdf.so", False),
    ("PySide6/Qt/plugins/iconengines/libqsvgicon.so", True),
    ("PySide6/Qt/plugins/platformthemes/libqgtk3.so", False),
    ("PySide6/Qt/plugins/platforminputcontexts/libqtvirtualkeyboardplugin.so", False),
    ("PySide6/Qt/plugins/platforminputcontexts/libibusplatforminputcontextplugin.so", True),
    ("PySide6/Qt/plugins/styles/qmodernwindowsstyle.dll", True),
    ("PySide6/Qt/plugins/sqldrivers/libqsqlite.so", False),
    ("PySide6/plugins/platforms/qwindows.dll", True),
    ("PySide6/Qt/translations/qtbase_zh_CN.qm", True),
    ("PySide6/Qt/translations/qtbase_de.qm", False),
    ("torch/bin/torch_shm_manager", True),
    ("torch/bin/test_api", False),
    ("torch/lib/libtorch_cpu.so", True),
    ("torch/lib/libtorchbind_test.so", False),
    ("torch/include/ATen/core/TensorBody.h", False),
    ("transformers/models/llama/modeling_llama.py", True),
    ("numpy/_core/tests/data/file.npy", False),
])
def test_keep_file_takes_what_runs_and_drops_the_rest(dest, kept):
    assert bundle.keep_file(dest) is kept


def test_libraries_only_left_out_plugins_link_are_dropped():
    links = {
        "/x/QtWidgets.abi3.so": ["libQt6Widgets.so.6"],
        "/x/libQt6Widgets.so.6": ["libQt6Gui.so.6"],
        "/x/libQt6Gui.so.6": ["libQt6Core.so.6", "libfontconfig.so.1"],
        "/x/libqxcb.so": ["/deep/path/libQt6XcbQpa.so.6"],
    }
    binaries = [
        ("PySide6/QtWidgets.abi3.so", "/x/QtWidgets.abi3.so", "EXTENSION"),
        ("PySide6/Qt/plugins/platforms/libqxcb.so", "/x/libqxcb.so", "BINARY"),
        ("PySide6/Qt/lib/libQt6Widgets.so.6", "/x/libQt6Widgets.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Gui.so.6", "/x/libQt6Gui.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Core.so.6", "/x/libQt6Core.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6XcbQpa.so.6", "/x/libQt6XcbQpa.so.6", "BINARY"),
        ("PySide6/Qt/lib/libQt6Pdf.so.6", "/x/libQt6Pdf.so.6", "BINARY"),  # only the dropped pdf plugin used it
        ("libfontconfig.so.1", "/x/libfontconfig.so.1", "BINARY"),
        ("libgtk-3.so.0", "/x/libgtk-3.so.0", "BINARY"),
        ("libpython3.11.so.1.0", "/x/libpython3.11.so.1.0", "BINARY"),  # the programs load it themselves
        ("torch/lib/libtorch_cpu.so", "/x/libtorch_cpu.so", "BINARY"),  # in a package's folder: a root
    ]
    kept, dropped = bundle.prune_unlinked(binaries, lambda path: links.get(path, []))
    assert dropped == ["PySide6/Qt/lib/libQt6Pdf.so.6", "libgtk-3.so.0"]
    assert [entry for entry in binaries if entry[0] not in dropped] == kept


def test_each_program_gets_the_run_time_hooks_and_only_its_own_script():
    scripts = [("pyi_rth_pkgutil", "/h/pyi_rth_pkgutil.py", "PYSOURCE"),
               ("pyi_rth_pyside6", "/h/pyi_rth_pyside6.py", "PYSOURCE"),
               ("main", str(PROJECT_ROOT / "main.py"), "PYSOURCE"),
               ("__main__", str(PROJECT_ROOT / "xvlm_core" / "__main__.py"), "PYSOURCE")]
    gui, cli = bundle.split_scripts(scripts, PROJECT_ROOT / "main.py", PROJECT_ROOT / "xvlm_core" / "__main__.py")
    assert gui == [*scripts[:2], scripts[2]]
    assert cli == [*scripts[:2], scripts[3]]


@pytest.mark.parametrize(("path", "component"), [
    ("torch/lib/libtorch_cpu.so", "torch"),
    ("torch.nn.modules.linear", "torch"),
    ("nvidia/cublas/lib/libcublas.so.12", "CUDA libraries"),
    ("PySide6/Qt/lib/libQt6Core.so.6", "Qt"),
    ("shiboken6.Shiboken", "Qt"),
    ("transformers/models/llama/modeling_llama.py", "transformers"),
    ("tokenizers/tokenizers.abi3.so", "transformers"),
    ("libpython3.11.so.1.0", "python stdlib"),
    ("python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", "python stdlib"),
    ("asyncio.base_events", "python stdlib"),
    ("numpy/_core/_multiarray_umath.so", "other"),
    ("PIL.Image", "other"),
])
def test_sizes_are_counted_by_component(path, component):
    assert bundle.component(path) == component


def run_spec(workpath: Path, platform: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Execute the spec as PyInstaller does, with recorders for its classes: {class: [(args, kwargs), ...]}."""
    for module in ("PIL.IcnsImagePlugin", "PIL.IcoImagePlugin", "PySide6.QtGui", "PySide6.QtSvg"):
        importlib.import_module(module)  # before sys.platform is faked below: they look at it while they load

    made: dict[str, list] = {}

    def recorder(kind: str):
        def record(*args, **kwargs):
            made.setdefault(kind, []).append((args, kwargs))
            target = types.SimpleNamespace(name=kwargs.get("name"))
            if kind == "Analysis":
                target.binaries, target.datas, target.pure = [], [], []
                target.scripts = [(Path(script).stem, str(script), "PYSOURCE") for script in args[0]]
            return target

        return record

    fake_bindepend = types.ModuleType("PyInstaller.depend.bindepend")
    fake_bindepend.get_imports = lambda path: []
    for name, module in {"PyInstaller": types.ModuleType("PyInstaller"),
                         "PyInstaller.depend": types.ModuleType("PyInstaller.depend"),
                         "PyInstaller.depend.bindepend": fake_bindepend}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "platform", platform)
    namespace = {"SPECPATH": str(SPEC.parent), "SPEC": str(SPEC), "workpath": str(workpath),
                 "DISTPATH": str(workpath / "dist"), "specnm": SPEC.stem, "__file__": str(SPEC)}
    namespace.update({kind: recorder(kind) for kind in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")})
    exec(compile(SPEC.read_bytes(), str(SPEC), "exec"), namespace)
    return made


def test_the_spec_bundles_the_llama_cpp_engines_library_where_llama_cpp_python_loads_it(tmp_path, monkeypatch):
    made = run_spec(tmp_path, "linux", monkeypatch)
    [(_args, kwargs)] = made["Analysis"]
    [(library, folder)] = kwargs["binaries"]
    assert folder == "llama_cpp/lib" and Path(library).name == "libllama.so" and Path(library).is_file()
    assert bundle.component("llama_cpp/lib/libllama.so") == bundle.component("libggml-cpu.so.0") == "llama.cpp engine"


def test_the_spec_bundles_every_resource_and_the_icon_theme(tmp_path, monkeypatch):
    made = run_spec(tmp_path, "linux", monkeypatch)
    [(args, kwargs)] = made["Analysis"]
    datas = {f"{folder}/{Path(source).name}" for source, folder in kwargs["datas"]}
    assert bundled_resources() <= datas
    for size in bundle.ICON_SIZES:
        assert f"{bundle.ICON_THEME_DIR}/{size}x{size}/apps/xvlm-chat.png" in datas
    assert f"{bundle.ICON_THEME_DIR}/scalable/apps/xvlm-chat.svg" in datas
    assert [Path(script).name for script in args[0]] == ["main.py", "__main__.py"]
    assert set(kwargs["hiddenimports"]) == set(bundle.hidden_imports())
    assert set(kwargs["excludes"]) == set(bundle.excluded_modules())


def test_the_spec_makes_a_window_program_and_a_console_program_in_one_folder(tmp_path, monkeypatch):
    made = run_spec(tmp_path, "linux", monkeypatch)
    gui, cli = (kwargs for _args, kwargs in made["EXE"])
    assert (gui["name"], gui["console"]) == ("xvlm-chat", False)
    assert (cli["name"], cli["console"]) == ("xvlm", True)
    assert gui["exclude_binaries"] and cli["exclude_binaries"]  # the libraries go to the shared folder
    [(collected, collect_kwargs)] = made["COLLECT"]
    assert [target.name for target in collected[:2]] == ["xvlm-chat", "xvlm"]
    assert collect_kwargs["name"] == "XVLM Chat"
    assert "BUNDLE" not in made


def test_on_windows_both_programs_carry_the_icon_and_version_info(tmp_path, monkeypatch):
    made = run_spec(tmp_path, "win32", monkeypatch)
    for _args, kwargs in made["EXE"]:
        assert Path(kwargs["icon"]).suffix == ".ico" and Path(kwargs["icon"]).is_file()
        version = Path(kwargs["version"]).read_text(encoding="utf-8")
        assert f"StringStruct('ProductVersion', '{bundle.project_version()}')" in version
        assert f"StringStruct('OriginalFilename', '{kwargs['name']}.exe')" in version


def test_on_macos_the_folder_becomes_an_app_with_icon_and_identifier(tmp_path, monkeypatch):
    made = run_spec(tmp_path, "darwin", monkeypatch)
    [(_args, kwargs)] = made["BUNDLE"]
    assert kwargs["name"] == "XVLM Chat.app"
    assert kwargs["bundle_identifier"] == "org.xvlm.chat"
    assert Path(kwargs["icon"]).suffix == ".icns" and Path(kwargs["icon"]).is_file()
    assert kwargs["version"] == bundle.project_version()


VERSION_CLASSES = ("VSVersionInfo", "FixedFileInfo", "StringFileInfo", "StringTable", "StringStruct", "VarFileInfo",
                   "VarStruct")


def test_version_files_are_what_pyinstaller_reads():
    """PyInstaller eval()s the file with its version-resource classes in scope (it can only import them on
    Windows); stand-ins record the structure, and the keywords are checked against PyInstaller's own source."""
    import assets

    text = assets.windows_version_info("1.2.3", "xvlm-chat", "XVLM Chat")
    info = eval(text, {name: (lambda *args, kind=name, **kwargs: (kind, args, kwargs)) for name in VERSION_CLASSES})
    kind, _args, fields = info
    assert kind == "VSVersionInfo"
    fixed, [string_info, _variables] = fields["ffi"], fields["kids"]
    assert fixed[0] == "FixedFileInfo" and fixed[2]["filevers"] == fixed[2]["prodvers"] == (1, 2, 3, 0)
    [table] = string_info[1][0]  # StringFileInfo([StringTable(language, [StringStruct(name, value), ...])])
    _language, strings = table[1]
    values = dict(struct[1] for struct in strings)
    assert values["ProductVersion"] == values["FileVersion"] == "1.2.3"
    assert values["OriginalFilename"] == "xvlm-chat.exe"

    spec = importlib.util.find_spec("PyInstaller")
    if spec is None:
        pytest.skip("the build extra is not installed: keywords not compared with PyInstaller's")
    source = Path(spec.origin).parent / "utils" / "win32" / "versioninfo.py"
    classes = {node.name: node for node in ast.parse(source.read_text(encoding="utf-8")).body
               if isinstance(node, ast.ClassDef)}
    init = next(node for node in classes["FixedFileInfo"].body
                if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    assert set(fixed[2]) <= {argument.arg for argument in init.args.args}
    assert set(VERSION_CLASSES) <= set(classes)


def test_icons_are_drawn_at_every_size_from_the_svg(tmp_path):
    import assets
    from PIL import Image

    made = assets.generate(tmp_path)
    for size in bundle.ICON_SIZES:
        with Image.open(made.icon_theme / f"{size}x{size}" / "apps" / "xvlm-chat.png") as image:
            assert image.size == (size, size) and image.mode == "RGBA"
            assert image.getpixel((size // 2, size // 2))[3] == 255  # drawn, not an empty canvas
            assert image.getpixel((0, 0))[3] == 0  # the rounded corner stays transparent
    with Image.open(made.ico) as ico:
        assert {(16, 16), (32, 32), (48, 48), (256, 256)} <= set(ico.info["sizes"])
    with Image.open(made.icns) as icns:
        assert {512, 1024} <= {width * scale for width, _height, scale in icns.info["sizes"]}
    assert PurePosixPath(made.datas()[0][1]).parts[:3] == ("share", "icons", "hicolor")
