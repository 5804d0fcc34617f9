"""pyproject's torch minimum is the first release that has every torch API the code calls (a user with an older
torch must be stopped by pip, not by a TypeError in the middle of a run)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEEDS = {
    # (file, what the code calls): the first torch release that has it
    ("cfnet/train/loop.py", 'torch.amp.GradScaler("cuda"'): (2, 3),  # the device-generic GradScaler
    ("cfnet/train/distributed.py", '{"device_id": device}'): (2, 3),  # init_process_group(device_id=...)
    ("export/onnx.py", "dynamo=False"): (2, 5),  # torch.onnx.export's `dynamo` argument
}


def _minimum(name: str) -> tuple[int, int]:
    found = re.findall(rf'^\s*"{name}>=(\d+)\.(\d+)', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert len(found) == 1, f"pyproject.toml should declare {name}>=X.Y once"
    return int(found[0][0]), int(found[0][1])


def test_the_declared_torch_minimum_has_every_api_the_code_calls() -> None:
    for (path, call), release in NEEDS.items():
        assert call in (ROOT / path).read_text(), f"{path} no longer calls {call}: update NEEDS"
        assert _minimum("torch") >= release, f"{call} ({path}) needs torch >= {release[0]}.{release[1]}"
    torch_minor = _minimum("torch")[1]
    assert _minimum("torchvision") == (0, torch_minor + 15)  # torchvision 0.20 is torch 2.5's release
