"""The TensorRT code (engine builder, native backend) type-checks against the installed `tensorrt-stubs`.

TensorRT cannot run on the project's CPU machines, so mypy is what checks these files against the API. mypy
cannot use the stubs as installed: the `tensorrt/` folder has no `py.typed` (so mypy treats the module as
untyped, `Any`), and `tensorrt_bindings/tensorrt.pyi` has two syntax errors (a parameter named `in`, a
parameter without default after defaulted ones). The test writes a repaired copy and points mypy at it; a
probe with a deliberate API misuse proves the stubs are really in force. Everything lives at a fixed place
under `.mypy_cache/` so that mypy's cache (keyed by path) stays valid between runs.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    # module: (a deliberate misuse of the API it uses, the name mypy must complain about)
    "export/tensorrt.py": (
        'def probe(builder: trt.Builder) -> None:\n    builder.create_network(flags="strongly typed")\n',
        "create_network",
    ),
    "export/precision/layer_precision.py": (
        "def probe(layer: trt.ILayer) -> None:\n    layer.set_output_type(0, 'fp32')\n",
        "set_output_type",
    ),
    "runtime/backends/tensorrt.py": (
        "def probe(context: trt.IExecutionContext) -> None:\n    context.execute_async_v3()\n",
        "execute_async_v3",
    ),
}


def _defaults_for_trailing_params(line: str) -> str:
    head, rest = line.split("(", 1)
    params, tail = rest.rsplit(") ->", 1)
    fixed, seen_default = [], False
    for param in params.split(", "):
        if "=" in param:
            seen_default = True
        elif seen_default and not param.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return f"{head}({', '.join(fixed)}) ->{tail}"


def _repaired(text: str) -> str:
    lines = re.sub(r"\bin: ", "in_: ", text).split("\n")
    for _ in range(20):
        try:
            ast.parse("\n".join(lines))
            return "\n".join(lines)
        except SyntaxError as exc:
            if exc.lineno is None or "non-default argument" not in str(exc.msg):
                raise
            lines[exc.lineno - 1] = _defaults_for_trailing_params(lines[exc.lineno - 1])
    raise AssertionError("could not repair the tensorrt stubs")


def _stub_root(work: Path) -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    bindings, top = site / "tensorrt_bindings" / "tensorrt.pyi", site / "tensorrt" / "__init__.pyi"
    if not bindings.is_file() or not top.is_file():
        pytest.fail("tensorrt-stubs is not installed: pip install --no-deps tensorrt-stubs (make install does)")
    root = work / "stubs"
    (root / "tensorrt").mkdir(parents=True)
    (root / "tensorrt_bindings").mkdir()
    (root / "tensorrt" / "__init__.pyi").write_text(top.read_text())
    (root / "tensorrt_bindings" / "__init__.pyi").write_text((site / "tensorrt_bindings" / "__init__.pyi").read_text())
    (root / "tensorrt_bindings" / "tensorrt.pyi").write_text(_repaired(bindings.read_text()))
    return root


@pytest.mark.parametrize("module", sorted(CHECKS))
def test_tensorrt_code_type_checks_against_the_stubs(module: str) -> None:
    work = ROOT / ".mypy_cache" / ("tensorrt-stubs-" + Path(module).parent.name)
    shutil.rmtree(work / "stubs", ignore_errors=True)
    stubs = _stub_root(work)
    misuse, name = CHECKS[module]
    probe = work / "probe.py"
    probe.write_text(f"import tensorrt as trt\n\n\n{misuse}")
    config = work / "mypy.ini"
    config.write_text(
        "[mypy]\npython_version = 3.11\nignore_missing_imports = True\ncheck_untyped_defs = True\n"
        f"mypy_path = {stubs}\ncache_dir = {work / 'cache'}\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "follow_imports = silent\nignore_errors = True\n"
    )
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), module, str(probe)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    in_probe = [line for line in errors if Path(line.split(":", 1)[0]).resolve() == probe.resolve()]
    assert any(name in line for line in in_probe), result.stdout
    assert [line for line in errors if line not in in_probe] == []
