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
