"""The dependency rules of the contract: runtime is torch-free; cfnet reaches other packages only via its CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_RUNTIME = ("torch", "torchvision", "onnx", "onnxslim", "cfnet", "export", "bench")


def _modules(package: str) -> list[str]:
    base = ROOT / package
    return [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in sorted(base.rglob("*.py"))
    ]


def test_runtime_imports_neither_torch_nor_other_packages() -> None:
    modules = _modules("runtime")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_RUNTIME!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime loaded: {out.stdout.strip()}"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_cfnet_reaches_other_packages_only_through_its_cli() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imported_roots(p) & {"export", "runtime", "bench"})
        for p in (ROOT / "cfnet").rglob("*.py")
        if p != ROOT / "cfnet" / "cli.py"
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_runtime_sources_never_name_torch() -> None:
    for path in (ROOT / "runtime").rglob("*.py"):
        assert not _imported_roots(path) & set(FORBIDDEN_IN_RUNTIME), path


def test_help_of_a_runtime_command_does_not_load_torch() -> None:
    code = (
        "import sys\nfrom cfnet.cli import cli\n"
        "try:\n    cli.main(['stream', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


PACKAGES = ("cfnet", "export", "runtime", "bench")
ONE_BACKEND = ("runtime.backends.onnxruntime", "runtime.backends.tensorrt", "runtime.backends.triton")
LONG_FILES = {"cfnet/data/scene.py"}  # the procedural scene, the one exception ARCHITECTURE.md allows


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere (top level or inside functions), read with ast.

    `from a.b import c` counts as importing `a.b.c` when that is a module, else `a.b`; parent packages that
    Python initialises on the way are not edges (every submodule would otherwise "import" its package). Imports
    under `if TYPE_CHECKING:` count too: a type that needs a circle to be named is a layering fault all the same.
    """
    files = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in files)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    edges.add(target if target in files else base)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_anywhere_in_the_four_packages() -> None:
    graph = import_graph()
    assert "runtime.backends.factory" in graph["runtime.backends"]  # the reader sees the imports at all
    assert "runtime.backends" in graph["runtime"]  # ... and those under `if TYPE_CHECKING:`
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_imports_follow_the_architecture_arrows() -> None:
    graph = import_graph()
    root = {name: {e.split(".")[0] for e in edges} for name, edges in graph.items()}
    wrong = {
        name: sorted(targets - allowed)
        for name, targets in root.items()
        for allowed in [
            {
                "runtime": {"runtime"},
                "export": {"export", "cfnet", "runtime"},
                "cfnet": {"cfnet", "export", "runtime", "bench"} if name == "cfnet.cli" else {"cfnet"},
                "bench": set(PACKAGES),
            }[name.split(".")[0]]
        ]
        if targets - allowed
    }
    assert wrong == {}
    # a base never imports what builds on it: artifact and the backends' base import no backend
    for base in ("runtime.artifact", "runtime.backends.base", "runtime.backends.availability"):
        assert not {e for e in graph[base] if e.startswith("runtime.backends.") or e == "runtime.backends"}, base
    # only the factory dispatches over the backends (the Triton ONNX Runtime model runs that one backend)
    users = {name for name, edges in graph.items() if edges & set(ONE_BACKEND) and name.startswith("runtime")}
    assert users <= {"runtime.backends.factory", "runtime.triton.models.onnxruntime_model"}, users


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT))
        for package in (*PACKAGES, "tests")
        for p in (ROOT / package).rglob("*.py")
        if len(p.read_text().splitlines()) > 500
    }
    assert long <= LONG_FILES, sorted(long - LONG_FILES)


OPTIONAL = {"tensorrt", "pycuda", "tritonclient", "google"}  # the [tensorrt] and [serve] extras (google: protobuf)
IMPORT_NAMES = {"opencv-python-headless": "cv2", "onnxruntime-gpu": "onnxruntime"}


def test_the_edge_install_in_the_readme_covers_every_package_the_runtime_imports() -> None:
    """An edge box installs `runtime/`'s packages by hand (README); one the runtime imports and the line lacks
    breaks `cfnet stream` there (orjson was nearly such a one)."""
    line = next(x for x in (ROOT / "README.md").read_text().splitlines() if x.startswith("pip install click "))
    listed = {IMPORT_NAMES.get(name, name) for name in line.split("#")[0].split()[2:]}
    imported: set[str] = set()
    for path in (ROOT / "runtime").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "runtime"}
    assert "cv2" in third_party and "orjson" in third_party  # the walk sees the imports at all
    assert third_party - OPTIONAL - listed == set()
