"""`runtime/tensorrt_backend.py` type-checks against tensorrt-stubs (TensorRT cannot run on the CPU machines).

The installed stubs are unusable by mypy as they are (no `py.typed`, two syntax errors); the repaired copy is
made by the export package's identical check, whose helper is reused here. A probe with a deliberate misuse of
the runtime API (`execute_async_v3` without a stream) proves the stubs are in force.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.export.test_tensorrt_types import _stub_root

ROOT = Path(__file__).resolve().parents[2]
PROBE = """import tensorrt as trt


def probe(context: trt.IExecutionContext) -> None:
    context.execute_async_v3()
"""


def test_tensorrt_backend_type_checks_against_the_stubs() -> None:
    work = ROOT / ".mypy_cache" / "tensorrt-stubs-runtime"  # fixed place: mypy's cache is keyed by path
    shutil.rmtree(work / "stubs", ignore_errors=True)
    stubs = _stub_root(work)
    probe = work / "probe.py"
    probe.write_text(PROBE)
    config = work / "mypy.ini"
    config.write_text(
        "[mypy]\npython_version = 3.11\nignore_missing_imports = True\ncheck_untyped_defs = True\n"
        f"mypy_path = {stubs}\ncache_dir = {work / 'cache'}\n"
        "[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]\n"
        "follow_imports = silent\nignore_errors = True\n"
    )
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "runtime/tensorrt_backend.py", str(probe)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    in_probe = [line for line in errors if Path(line.split(":", 1)[0]).resolve() == probe.resolve()]
    assert any("execute_async_v3" in line for line in in_probe), result.stdout
    assert [line for line in errors if line not in in_probe] == []
