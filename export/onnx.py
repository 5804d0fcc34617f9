"""`export_onnx`: a zoo model -> a parity-checked ONNX file (fp32, mixed fp16 or int8 QDQ) with cfnet metadata.

The torch graph is traced by the TorchScript exporter (`dynamo=False`) with dynamic batch, H and W, checked,
simplified with onnxslim, then compared with PyTorch in ONNX Runtime on the CPU. The file is written to a
temp name in the output folder and renamed, so an interrupted export leaves nothing at `out`.
"""

from __future__ import annotations

import io
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from cfnet.atomic import write_bytes
from cfnet.errors import UserError
from cfnet.models.base import SegmentationModel
from cfnet.sizes import check_size
from export.mask import MASK, OUTPUTS, MaskParity, add_mask_output, compare_masks, outputs_metadata, select_outputs
from export.metadata import PRECISIONS, add_reference, build_metadata, plan_metadata, reference_images, set_metadata
from export.parity import FP32_MAX_RELATIVE_ERROR, FP32_MIN_AGREEMENT, Parity, compare, fp32_ok
from export.precision.autopilot import check_options as check_int8_options
from export.precision.int8 import WEIGHT_TYPES
from runtime.files import check_output

INPUT, OUTPUT = "images", "logits"
PARITY_SEED = 0
REAL_PARITY_IMAGES = 4
HELDOUT_IMAGES = 8


class ParityError(Exception):
    """The exported fp32 graph disagrees with PyTorch: the export is refused (exit 1)."""


@dataclass
class ExportReport:
    """What an export produced and measured."""

    path: Path
    precision: str
    metadata: dict[str, str]
    parity: dict[str, Parity] = field(default_factory=dict)
    mask_parity: dict[str, MaskParity] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    nodes: int = 0
    seconds: float = 0.0
    precision_plan: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "precision": self.precision,
            "metadata": self.metadata,
            "parity": {k: v.as_dict() for k, v in self.parity.items()},
            "mask_parity": {k: v.as_dict() for k, v in self.mask_parity.items()},
            "latency_ms": self.latency_ms,
            "nodes": self.nodes,
            "seconds": round(self.seconds, 2),
            "precision_plan": self.precision_plan,
        }


def export_onnx(
    model: SegmentationModel,
    out: str | Path,
    *,
    size: tuple[int, int] = (512, 512),
    dynamic: bool = True,
    simplify: bool = True,
    precision: str = "fp32",
    calib_images: str | Path | Iterable[np.ndarray] | None = None,
    opset: int = 17,
    batch: int = 1,
    calib_count: int = 32,
    output: str = "logits",
    calib_method: str = "minmax",
    int8_target: str = "cpu",
    min_agreement: float | None = None,
    heldout_count: int = HELDOUT_IMAGES,
) -> Path:
    """Export `model` to `out` and return the path; parity lines are printed on stderr.

    `calib_images`: a folder of images or an iterable of preprocessed `N x 3 x H x W` float32 arrays, used
    for int8 calibration (required then) and for parity on real images. `output`: the graph's outputs,
    `logits` (`N x C x H x W` float32), `mask` (`N x H x W` uint8, the argmax over classes in the graph) or
    `both`. Raises `ParityError` when the fp32 graph disagrees with PyTorch, `UserError` on bad arguments.
    int8: `calib_method` (`minmax`, `percentile`, `entropy`), `int8_target` (`cpu`: uint8 activations for ONNX
    Runtime; `tensorrt`: symmetric int8), `min_agreement`: the precision autopilot's target argmax agreement
    with fp32 on `heldout_count` held-out images (see `export.precision.autopilot`).
    """
    return export_report(
        model,
        out,
        size=size,
        dynamic=dynamic,
        simplify=simplify,
        precision=precision,
        calib_images=calib_images,
        opset=opset,
        batch=batch,
        calib_count=calib_count,
        output=output,
        calib_method=calib_method,
        int8_target=int8_target,
        min_agreement=min_agreement,
        heldout_count=heldout_count,
    ).path


def export_report(
    model: SegmentationModel,
    out: str | Path,
    *,
    size: tuple[int, int] = (512, 512),
    dynamic: bool = True,
    simplify: bool = True,
    precision: str = "fp32",
    calib_images: str | Path | Iterable[np.ndarray] | None = None,
    opset: int = 17,
    batch: int = 1,
    calib_count: int = 32,
    calib_method: str = "minmax",
    int8_target: str = "cpu",
    min_agreement: float | None = None,
    heldout_count: int = HELDOUT_IMAGES,
    log: Callable[[str], None] | None = None,
    output: str = "logits",
) -> ExportReport:
    """`export_onnx` returning the full `ExportReport` (parity per check, latencies); `log` gets progress lines."""
    started = time.perf_counter()
    say = log or (lambda line: print(line, file=sys.stderr))
    out = Path(out)
    divisor = int(getattr(model, "size_divisor", 1))
    _check_arguments(out, size, divisor, precision, opset, batch, calib_images)
    _check_output(output, model)
    check_int8_options(precision, calib_method, int8_target, min_agreement)
    model = model.eval()
    metadata = {**build_metadata(model, size, precision), **outputs_metadata(output)}

    proto = trace(model, size, batch=batch, dynamic=dynamic, opset=opset)
    if simplify:
        proto = simplify_graph(proto)
    fix_class_dim(proto, len(json.loads(metadata["cfnet.classes"])))
    set_metadata(proto, {**metadata, "cfnet.precision": "fp32"})
    onnx.checker.check_model(proto, full_check=True)

    real: list[np.ndarray] = []
    heldout = None
    if calib_images is not None and precision == "int8" and min_agreement is not None:
        from export.precision.calibration import load_split

        real, heldout = load_split(calib_images, metadata, calib_count, heldout_count)
    elif calib_images is not None:
        from export.precision.calibration import load_batches

        count = calib_count if precision == "int8" else REAL_PARITY_IMAGES
        real = load_batches(calib_images, metadata, count)
    groups = _parity_inputs(size, divisor, batch, dynamic, real[:REAL_PARITY_IMAGES])
    references = {kind: _torch_outputs(model, xs) for kind, xs in groups.items()}
    report = ExportReport(out, precision, metadata)

    fp32_session = _session(_with_mask(proto, output))
    fp32 = _check_parity(report, "fp32", fp32_session, groups, references, say)
    if not fp32_ok(fp32):
        raise ParityError(
            f"fp32 export disagrees with PyTorch ({fp32.line()}; needs agreement >= {100 * FP32_MIN_AGREEMENT}% "
            f"and relative error <= {FP32_MAX_RELATIVE_ERROR})"
        )
    if output != "logits":
        masks = _check_mask_parity(report, "fp32", fp32_session, groups, references, say)
        if masks.agreement < 1.0:
            raise ParityError(f"fp32 mask disagrees with PyTorch's argmax away from ties ({masks.line()})")

    timing_input = groups["random"][0][:1]
    if precision != "fp32":
        # timed now, then released: its arena holds the activations of the parity runs (1 GB for the paper
        # preset at 512x1024), which calibration would otherwise add its own to
        report.latency_ms["fp32"] = _latency_ms(fp32_session, timing_input)
    del fp32_session
    final = proto
    if real and precision in ("fp32", "fp16"):
        from export.precision.fp16_check import fp16_with_checks

        half, report.precision_plan = fp16_with_checks(
            proto, real, modules={name for name, _ in model.named_modules()}, say=say
        )
        metadata = {**metadata, **plan_metadata(report.precision_plan)}
        if precision == "fp32":
            set_metadata(final, metadata)
    if precision == "fp16":
        from export.precision.fp16 import convert_to_mixed_fp16

        final = half if real else convert_to_mixed_fp16(proto)
    elif precision == "int8":
        from export.precision.autopilot import quantize_for_export

        final, report.precision_plan = quantize_for_export(
            proto,
            real,
            heldout,
            method=calib_method,
            target=int8_target,
            min_agreement=min_agreement,
            modules={name for name, _ in model.named_modules()},
            num_classes=len(json.loads(metadata["cfnet.classes"])),
            say=say,
        )
        metadata = {**metadata, **plan_metadata(report.precision_plan)}
    final = _with_mask(final, output)
    if precision != "fp32":
        set_metadata(final, metadata)
        onnx.checker.check_model(final, full_check=True)
        session = _session(final, exact_int8=True)  # as the autopilot measures: the same on every CPU
        _check_parity(report, precision, session, groups, references, say)
        if output != "logits":
            _check_mask_parity(report, precision, session, groups, references, say)
        if precision == "int8" and WEIGHT_TYPES[int8_target] == "int8":
            del session  # timed as ONNX Runtime runs it by default: int8 weights in its u8 x s8 kernels
            session = _session(final)
        report.latency_ms[precision] = _latency_ms(session, timing_input)
        say(latency_line(precision, report.latency_ms[precision], report.latency_ms["fp32"]))

    if output != "logits":
        final = select_outputs(final, output)
        onnx.checker.check_model(final, full_check=True)
    if calib_images is not None:
        images = reference_images(calib_images, real, metadata, calib_count)
        report.metadata["cfnet.reference"] = add_reference(final, model, images)
        say(f"reference for the drift score: class shares and confidence on {len(images)} calibration images")
    report.nodes = len(final.graph.node)
    write_atomic(final, out)
    report.seconds = time.perf_counter() - started
    say(f"wrote {out} ({precision}, {report.nodes} nodes, {out.stat().st_size / 1e6:.1f} MB)")
    return report


def trace(model: SegmentationModel, size: tuple[int, int], *, batch: int, dynamic: bool, opset: int) -> onnx.ModelProto:
    """The inference graph of `model` from the TorchScript exporter: input `images`, output `logits`."""
    example = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(PARITY_SEED))
    axes = {0: "batch", 2: "height", 3: "width"}
    buffer = io.BytesIO()  # in memory: an export killed mid-way leaves no temp folder behind
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes file-like objects (models < 2 GB)
            input_names=[INPUT],
            output_names=[OUTPUT],
            opset_version=opset,
            dynamo=False,
            dynamic_axes={INPUT: axes, OUTPUT: axes} if dynamic else None,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def fix_class_dim(proto: onnx.ModelProto, classes: int) -> None:
    """Declare the logits `N x classes x H x W` (the exporter leaves the class dimension a symbol after a Resize)."""
    logits = next(o for o in proto.graph.output if o.name == OUTPUT)
    dims = logits.type.tensor_type.shape.dim
    if len(dims) == 4:
        dims[1].Clear()
        dims[1].dim_value = classes


def simplify_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim: constant folding, dead-code and shape-op elimination, Conv+BN fusion; dynamic axes survive."""
    import onnxslim

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slim = onnxslim.slim(proto)
    if not isinstance(slim, onnx.ModelProto):
        raise RuntimeError("onnxslim returned no model")
    return slim


def write_atomic(proto: onnx.ModelProto, out: Path) -> None:
    """Serialise `proto` to a temp file next to `out`, then rename it to `out`."""
    write_bytes(out, proto.SerializeToString())


def _check_arguments(
    out: Path,
    size: tuple[int, int],
    divisor: int,
    precision: str,
    opset: int,
    batch: int,
    calib_images: object,
) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'", f"choose from {', '.join(PRECISIONS)}")
    if opset < 17:
        raise UserError(f"opset {opset} is too old", "LayerNormalization needs opset >= 17")
    from torch.onnx import _constants

    newest = int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
    if opset > newest:
        raise UserError(f"opset {opset} is newer than torch's TorchScript exporter writes", f"--opset 17..{newest}")
    if batch < 1 or min(size) < 1:
        raise UserError(f"batch {batch} and size {size[0]}x{size[1]} must be positive", "export")
    try:
        check_size(size)
    except ValueError as exc:
        raise UserError(str(exc), "--size") from None
    if size[0] % divisor or size[1] % divisor:
        raise UserError(
            f"export size {size[0]}x{size[1]} is not a multiple of the model's size divisor {divisor}", "--size"
        )
    if precision == "int8" and calib_images is None:
        raise UserError("int8 export needs calibration images", "--calib-data DIR")
    check_output(out)


def _check_output(output: str, model: SegmentationModel) -> None:
    if output not in OUTPUTS:
        raise UserError(f"unknown output '{output}'", f"choose from {', '.join(OUTPUTS)}")
    classes = int(getattr(model, "config", {}).get("num_classes", 19))
    if output != "logits" and classes > 256:
        raise UserError(f"{classes} classes do not fit a uint8 mask", "--output logits")


def _with_mask(proto: onnx.ModelProto, output: str) -> onnx.ModelProto:
    """`proto` with the `mask` output appended (beside `logits`, which parity reads) unless `output` is logits."""
    return proto if output == "logits" else add_mask_output(proto)


def _parity_inputs(
    size: tuple[int, int], divisor: int, batch: int, dynamic: bool, real: list[np.ndarray]
) -> dict[str, list[np.ndarray]]:
    """`random`: normalised noise at the export size and, for dynamic graphs, at a second size with batch 2;
    `calibration`: the given calibration images, up to 4 (those of the export size only, for static graphs)."""
    rng = np.random.default_rng(PARITY_SEED)
    noise = [rng.standard_normal((batch, 3, *size), dtype=np.float32)]
    if dynamic:
        step = max(divisor, 8)
        other = (max(step, size[0] - step), size[1] + step)
        noise.append(rng.standard_normal((2, 3, *other), dtype=np.float32))
    images = [r for r in real if dynamic or (r.shape[0] == batch and r.shape[2:] == tuple(size))]
    return {"random": noise, "calibration": images} if images else {"random": noise}


def _check_parity(
    report: ExportReport,
    precision: str,
    session: Any,
    groups: dict[str, list[np.ndarray]],
    references: dict[str, list[np.ndarray]],
    say: Callable[[str], None],
) -> Parity:
    """Compare `session` with PyTorch per input group; record and print each; return the pooled figure."""
    outputs = {kind: _ort_outputs(session, xs) for kind, xs in groups.items()}
    for kind in groups:
        parity = compare(zip(references[kind], outputs[kind], strict=True))
        report.parity[f"{precision} {kind}"] = parity
        say(f"parity {precision} ONNX Runtime vs PyTorch, {kind} inputs: {parity.line()}")
    return compare(
        zip(
            [r for kind in groups for r in references[kind]], [o for kind in groups for o in outputs[kind]], strict=True
        )
    )


def _check_mask_parity(
    report: ExportReport,
    precision: str,
    session: Any,
    groups: dict[str, list[np.ndarray]],
    references: dict[str, list[np.ndarray]],
    say: Callable[[str], None],
) -> MaskParity:
    """The graph's `mask` against the argmax of PyTorch's logits away from ties, pooled; recorded and printed."""
    masks = [session.run([MASK], {INPUT: x})[0] for kind in groups for x in groups[kind]]
    parity = compare_masks(zip([r for kind in groups for r in references[kind]], masks, strict=True))
    report.mask_parity[precision] = parity
    say(f"parity {precision} ONNX Runtime {parity.line()}")
    return parity


def _torch_outputs(model: SegmentationModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [model(torch.from_numpy(x)).numpy() for x in inputs]


def _session(proto: onnx.ModelProto, exact_int8: bool = False) -> Any:
    """A CPU session of `proto`; `exact_int8`: int8 sums exact on every CPU (`runtime.cpu.EXACT_SUMS`)."""
    import onnxruntime as ort

    from runtime.cpu import EXACT_SUMS

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if exact_int8:
        options.add_session_config_entry(*EXACT_SUMS)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_outputs(session: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    return [session.run([OUTPUT], {INPUT: x})[0] for x in inputs]


def latency_line(precision: str, ms: float, fp32_ms: float) -> str:
    """The export's latency line, saying whether `precision` ran faster or slower than fp32 (and by how much)."""
    ratio = ms / fp32_ms
    if round(ratio, 2) > 1:
        verdict = f"{ratio:.2f}x slower than fp32"
    elif round(1 / ratio, 2) > 1:
        verdict = f"{1 / ratio:.2f}x faster than fp32"
    else:
        verdict = "as fast as fp32"
    return f"latency ONNX Runtime CPU {precision} {ms:.1f} ms vs fp32 {fp32_ms:.1f} ms: {precision} is {verdict}"


def _latency_ms(session: Any, x: np.ndarray, runs: int = 5) -> float:
    """Median of `runs` timed runs after one warm-up."""
    session.run([OUTPUT], {INPUT: x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([OUTPUT], {INPUT: x})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))
