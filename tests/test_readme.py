"""The README's commands as a newcomer meets them (issue 25 items 8 and 10): every file a `cfnet` example reads is
made by `make demo` or by an earlier example, and the cheap segment, stream and Triton-export examples run as
written against a stand-in of the demo's folder (a tiny model under the demo's names)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np
import pytest

from bench.demo import FILES, FOLDERS
from cfnet.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# parameters a command reads, and the ones it writes (what later examples may read)
READS = {
    "segment": ("images", "model"), "stream": ("sources", "model"), "export onnx": ("checkpoint", "calib_data"),
    "export triton": ("model",), "build-engine": ("onnx_path",), "evaluate": ("checkpoint", "data"),
    "train": ("data", "backbone_weights"), "bench": ("checkpoints", "data", "stream"), "ablate": ("data",),
    "data check": ("data",), "serve": ("repository",),
}
WRITES = {
    "segment": ("out",), "stream": ("out", "save_masks"), "export onnx": ("out",), "export triton": ("out",),
    "build-engine": ("out", "timing_cache"), "evaluate": ("save_predictions",), "train": ("out",),
    "bench": ("out", "markdown"), "ablate": ("out",), "data synth": ("out", "video"), "demo": ("out",),
}
EXTERNAL = ("cityscapes",)  # the data set a user downloads (README, Preparing Cityscapes)


def commands() -> Iterator[list[str]]:
    """The words of each command of the README's bash blocks, in order (lines joined at `\\`, split at `&&`,
    a shell redirection and what follows it left out: the shell's, not the command's)."""
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                command = words[:end]
                redirect = next((i for i, w in enumerate(command) if w in (">", ">>", "<", "|", "2>")), len(command))
                yield [w for w in command[:redirect] if w != "&"]
                words = words[end + 1:]


def examples() -> Iterator[tuple[str, dict[str, object], list[str]]]:
    """Each `cfnet ...` command of the README, in order: (command path, parsed parameters, its arguments)."""
    for words in commands():
        if words[:1] == ["cfnet"]:
            yield *_parse(words[1:]), words[1:]


def _parse(args: list[str]) -> tuple[str, dict[str, object]]:
    command: click.Command = cli
    path: list[str] = []
    while isinstance(command, click.Group):
        path.append(args[len(path)])
        command = command.commands[path[-1]]
    ctx = command.make_context(" ".join(path), args[len(path):], resilient_parsing=True)
    return " ".join(path), ctx.params


def _paths(value: object) -> list[str]:
    values = value if isinstance(value, tuple | list) else [value]
    return [str(v).rstrip("/") for v in values if v is not None and str(v)]


def _local(path: str) -> bool:
    return not (path.isdigit() or "://" in path or any(name in path for name in EXTERNAL))


def test_every_file_an_example_reads_is_made_by_the_demo_or_an_earlier_example() -> None:
    made = {f"demo/{name}" for name in (*FOLDERS, *FILES)}  # what `make demo` writes (bench/demo.py)
    found = set()
    for command, params, words in examples():
        found.add(command)
        reads = [p for name in READS.get(command, ()) for p in _paths(params.get(name)) if _local(p)]
        if command == "train" and params.get("resume"):
            reads += _paths(params["out"])
        for path in reads:
            assert any(path == m or path.startswith(m + "/") or m.startswith(path + "/") for m in made), (
                f"`cfnet {' '.join(words)}` reads {path}, which neither `make demo` nor an earlier example makes"
            )
        made.update(p for name in WRITES.get(command, ()) for p in _paths(params.get(name)))
    assert {"segment", "stream", "export onnx", "export triton", "build-engine", "bench"} <= found


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding `demo/` as `make demo` leaves it, for what the cheap examples read: the fp32 model (the
    runtime tests' tiny net under the demo's name), the video and the data set (the demo's own naming)."""
    from cfnet.data.synth import synthesize
    from runtime.results.reference import ReferenceBuilder
    from tests.runtime.helpers import CLASSES, export_tiny, synthetic_frames, tiny_metadata, write_video_file

    demo = tmp_path / "demo"
    (demo / "models").mkdir(parents=True)
    # the demo's fp32 model carries the drift reference of its calibration images (the README's --drift-alert)
    builder = ReferenceBuilder(len(CLASSES))
    builder.add(np.random.default_rng(0).normal(size=(len(CLASSES), 48, 64)).astype(np.float32))
    metadata = {**tiny_metadata(), "cfnet.reference": builder.build().to_json()}
    export_tiny(demo / "models" / "cfnet-pspnet-fp32.onnx", metadata)
    write_video_file(demo / "video.mp4", synthetic_frames(3, (48, 64)))
    synthesize(demo / "data", train=1, val=1, size=(64, 128), seed=0)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cheap(command: str, params: dict[str, object]) -> bool:
    """Runs here in seconds: segment, stream and Triton export of local files, without a window or a server."""
    model = str(params.get("model") or "")
    sources = _paths(params.get("sources")) if command == "stream" else []
    return (
        command in ("segment", "stream", "export triton")
        and model.endswith(".onnx")
        and all(_local(s) for s in sources)
        and not params.get("show")
        and not params.get("serve")
    )


def test_the_cheap_examples_run_as_written(stand_in: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = []
    for command, params, words in examples():
        if not _cheap(command, params):
            continue
        with pytest.raises(SystemExit) as exit_info:
            main(words)
        err = capsys.readouterr().err
        assert exit_info.value.code == 0, f"cfnet {' '.join(words)}: {err}"
        ran.append(command)
    assert {"segment", "stream", "export triton"} <= set(ran) and len(ran) >= 6, ran


def test_the_install_lines_do_not_pull_the_serve_extra() -> None:
    """`pip install -e '.[serve]'` would downgrade numpy (nvidia-pytriton pins numpy<2): the README gives the
    install the Makefile runs."""
    installs = [words for words in commands() if words[:2] == ["pip", "install"]]
    assert not any(".[serve]" in word for words in installs for word in words)
    assert ["pip", "install", "--no-deps", "nvidia-pytriton>=0.5"] in installs
    assert "--no-deps 'nvidia-pytriton>=0.5'" in (ROOT / "Makefile").read_text()
