"""The environment `cfnet` sets up before any command loads torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs `python -m cfnet ARGS` as the command line does, noting OMP_WAIT_POLICY when torch is first imported.
SPY = """
import os, runpy, sys
class FirstTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not os.path.exists(os.environ["SPY_OUT"]):
            with open(os.environ["SPY_OUT"], "w") as out:
                out.write(os.environ.get("OMP_WAIT_POLICY", "unset"))
        return None
sys.meta_path.insert(0, FirstTorchImport())
sys.argv = ["cfnet", *sys.argv[1:]]
runpy.run_module("cfnet", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_threads_wait_passively_unless_the_user_chose(tmp_path: Path, given: str | None, seen: str) -> None:
    """A spinning OpenMP pool starves other processes on a machine of few cores (issue 21 item 14)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env |= {"SPY_OUT": str(tmp_path / "policy"), **({"OMP_WAIT_POLICY": given} if given else {})}
    args = ["models", "--model", "unet", "--preset", "tiny", "--size", "64x64", "--json"]
    done = subprocess.run([sys.executable, "-c", SPY, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "policy").read_text() == seen
