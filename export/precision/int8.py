"""Static int8 QDQ quantisation with ONNX Runtime, for a target: `cpu`, `cpu-vnni` or `tensorrt`.

- `cpu` (ONNX Runtime on any x86 CPU): uint8 activations and per-channel uint8 weights, both asymmetric. ORT's
  u8 x u8 kernels widen both to 16 bits before multiplying, so the integer sums are exact on every x86 int8
  path (AVX2, AVX-512, VNNI, AMX): the agreement measured at export holds wherever the file runs.
- `cpu-vnni`: uint8 activations, per-channel int8 weights (symmetric): ORT's u8 x s8 kernels, fastest with VNNI
  or AMX (exact sums there); without VNNI they add pairs of products in saturating int16 (`VPMADDUBSW`), which
  lowers the agreement in plain ONNX Runtime (cfnet's runtime makes them exact there, slower: runtime/cpu.py).
- `tensorrt`: int8 activations and weights, symmetric (every zero point 0): TensorRT accepts nothing else;
  biases stay float (TensorRT quantises them itself).

Agreement is measured with exact int8 sums on every CPU (`EXACT_SUMS`, ONNX Runtime's
`session.x64quantprecision`: int8 weights run as uint8, in the u8 x u8 kernels): what TensorRT and VNNI/AMX
compute, and what the `cpu` target computes everywhere, whichever CPU exports (docs/DESIGN.md).

By default only Conv, MatMul and Gemm are quantised (LayerNorm, Softmax, Resize and the rest stay fp32), after
`quant_pre_process` (shape inference and ORT's fusions, so BatchNorm is folded into its Conv first).
Calibration (`minmax`, `percentile`, `entropy`) streams over the images in chunks of `CALIB_CHUNK`: ORT's
calibrators then hold the activations of one chunk at a time (histograms are merged between chunks), not of
every image. The calibrated ranges are cached where ONNX Runtime can (`calibration_cache_path`, recent versions),
so re-quantising with other nodes excluded (the precision autopilot) does not calibrate again. ONNX Runtime's
calibrators' prints are dropped; calibration shows one progress bar on stderr. The calibrators'
sessions run in priority-based node order and without a memory arena (`_lean_calibration_sessions`): in ONNX
Runtime's default order the ReduceMin/Max nodes MinMax appends run last and every activation stays alive until then.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from unittest import mock

import numpy as np
import onnx
from tqdm import tqdm

from cfnet.errors import UserError
from export.scratch import scratch_dir

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
CALIB_METHODS = ("minmax", "percentile", "entropy")
INT8_TARGETS = ("cpu", "cpu-vnni", "tensorrt")
TARGET_TYPES = {  # target: (activation type, weight type, symmetric activations, symmetric weights)
    "cpu": ("QUInt8", "QUInt8", False, False),
    "cpu-vnni": ("QUInt8", "QInt8", False, True),
    "tensorrt": ("QInt8", "QInt8", True, True),
}
WEIGHT_TYPES = {target: types[1].removeprefix("Q").lower() for target, types in TARGET_TYPES.items()}
"""`cfnet.int8_weights` of each target's files: `uint8` or `int8`."""
CALIB_CHUNK = 1
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
UNSIGNED = (onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT4)


def check_int8(method: str, target: str) -> None:
    """`UserError` for an unknown calibration method or int8 target."""
    if method not in CALIB_METHODS:
        raise UserError(f"unknown calibration method '{method}'", f"choose from {', '.join(CALIB_METHODS)}")
    if target not in INT8_TARGETS:
        raise UserError(f"unknown int8 target '{target}'", f"choose from {', '.join(INT8_TARGETS)}")


class _Reader:
    """`onnxruntime.quantization.CalibrationDataReader` with ranges: one preprocessed batch per call; `on_read`
    is called after each batch handed out (the calibration's progress)."""

    def __init__(
        self, input_name: str, batches: Sequence[np.ndarray], on_read: Callable[[], object] = lambda: None
    ) -> None:
        self.input_name = input_name
        self.batches = list(batches)
        self.index, self.end = 0, len(self.batches)
        self.on_read = on_read

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.index, self.end = start_index, min(end_index, len(self.batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= self.end:
            return None
        self.index += 1
        self.on_read()
        return {self.input_name: self.batches[self.index - 1]}


class Quantizer:
    """Quantises one fp32 model for one target and calibration, any number of times with different exclusions.

    `prepared` is the model after `quant_pre_process` (its node names are the ones `exclude` refers to);
    the first `quantize` calibrates, later ones reuse the cached ranges. Use as a context manager.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        batches: Sequence[np.ndarray],
        *,
        method: str = "minmax",
        target: str = "cpu",
        chunk: int = CALIB_CHUNK,
        op_types: Sequence[str] = QUANTIZED_OPS,
    ) -> None:
        check_int8(method, target)
        if not batches:
            raise UserError("int8 calibration needs at least one image", "--calib-images")
        self.batches, self.method, self.target, self.op_types = list(batches), method, target, list(op_types)
        # ORT's calibrators strides must divide the image count: the largest chunk <= `chunk` that does
        self.chunk = max(c for c in range(1, max(1, chunk) + 1) if len(self.batches) % c == 0)
        self.input_name = model.graph.input[0].name
        self._scratch = contextlib.ExitStack()
        self.folder = self._scratch.enter_context(scratch_dir("int8"))
        from onnxruntime.quantization.shape_inference import quant_pre_process

        fp32, prepared = self.folder / "fp32.onnx", self.folder / "prepared.onnx"
        onnx.save_model(model, str(fp32))
        with contextlib.redirect_stdout(sys.stderr):
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        self.prepared = onnx.load(str(prepared))
        for i, node in enumerate(self.prepared.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{i}"
        onnx.save_model(self.prepared, str(prepared))
        self._prepared_path = prepared

    def quantizable(self) -> list[str]:
        """Names of the nodes of the quantised op types, in graph order."""
        return [n.name for n in self.prepared.graph.node if n.op_type in self.op_types]

    def ends(self) -> list[str]:
        """The first and the last quantisable node (the stem convolution, reading raw pixels, and the classifier)."""
        nodes = self.quantizable()
        return sorted({nodes[0], nodes[-1]}) if nodes else []

    def quantize(self, exclude: Sequence[str] = ()) -> onnx.ModelProto:
        """A QDQ int8 copy of the prepared model with the nodes named in `exclude` left in fp32."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        methods = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }
        activations, weights, symmetric, symmetric_weights = TARGET_TYPES[self.target]
        out = self.folder / "int8.onnx"
        cache = {}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            cache["calibration_cache_path"] = self.folder / "ranges.json"
        # ONNX Runtime's calibrators print a line per chunk (and their settings) on stdout, which belongs to
        # `--json`: they are dropped, the images read show on one progress bar instead (none when ranges are cached)
        bar = tqdm(total=len(self.batches), desc="int8 calibration", unit="image", file=sys.stderr, leave=False,
                   delay=0.5)
        with bar, open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), _lean_calibration_sessions():
            quantize_static(
                str(self._prepared_path),
                str(out),
                _Reader(self.input_name, self.batches, lambda: bar.update()),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=self.op_types,
                nodes_to_exclude=list(exclude),
                per_channel=True,
                activation_type=getattr(QuantType, activations),
                weight_type=getattr(QuantType, weights),
                calibrate_method=methods[self.method],
                **cache,
                extra_options={
                    "CalibPercentile": 99.999,
                    "CalibMovingAverage": False,
                    "CalibStridedMinMax": self.chunk,  # despite its name: chunks for every calibrator
                    "ActivationSymmetric": symmetric,
                    "WeightSymmetric": symmetric_weights,
                    "CalibTensorRangeSymmetric": symmetric,
                    "QuantizeBias": not symmetric,  # TensorRT takes float biases and quantises them itself
                },
            )
        return drop_unused_domains(onnx.load(str(out)))

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._scratch.close()


@contextlib.contextmanager
def _lean_calibration_sessions() -> Iterator[None]:
    """ONNX Runtime's calibrators, within the block, with sessions in priority-based node order and no arena.

    Their own `create_inference_session` uses the default order, in which the ReduceMin/ReduceMax pairs MinMax
    appends run after the whole model, so every calibrated activation is held at once (MinMax on the paper
    preset at 512x1024: 10.8 GB peak, 2.0 GB in priority-based order). Without the arena, the histogram
    calibrators' outputs are not kept twice (percentile there: 6.8 -> 6.2 GB). Same nodes, same ranges; ORT
    offers no other way to set the calibrators' session options.
    """
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibraterBase

    def create_inference_session(self: CalibraterBase) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.enable_cpu_mem_arena = False
        self.infer_session = ort.InferenceSession(
            self.augmented_model_path, sess_options=options, providers=self.execution_providers
        )

    with mock.patch.object(CalibraterBase, "create_inference_session", create_inference_session):
        yield


def quantize_int8(model: onnx.ModelProto, batches: Sequence[np.ndarray], **options: Any) -> onnx.ModelProto:
    """A QDQ int8 copy of fp32 `model` calibrated on `batches` (each `1 x 3 x H x W`, preprocessed), the stem
    convolution and the classifier kept fp32; `options` are `Quantizer`'s (`method`, `target`, `chunk`...)."""
    with Quantizer(model, batches, **options) as quantizer:
        return quantizer.quantize(quantizer.ends())


def drop_unused_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the opset imports of domains no node uses (the default domain is always kept)."""
    used = {node.domain for node in _all_nodes(model.graph)} | {"", "ai.onnx"}
    kept = [op for op in model.opset_import if op.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _all_nodes(sub)


def asymmetric_qdq(model: onnx.ModelProto) -> list[str]:
    """The Q/DQ nodes TensorRT refuses: an unsigned or a non-zero zero point (none in a TensorRT int8 export)."""
    inits = {init.name: init for init in model.graph.initializer}
    refused = []
    for node in model.graph.node:
        if node.op_type not in QDQ_OPS or len(node.input) < 3 or node.input[2] not in inits:
            continue
        zero = inits[node.input[2]]
        if zero.data_type in UNSIGNED or np.any(onnx.numpy_helper.to_array(zero) != 0):
            refused.append(node.name or node.output[0])
    return refused


def require_tensorrt_int8(onnx_path: str | Path) -> None:
    """Refuse (`UserError`) a Q/DQ model TensorRT cannot build: uint8 activations or non-zero zero points."""
    from export.metadata import load_onnx

    refused = asymmetric_qdq(load_onnx(onnx_path, weights=False))
    if refused:
        raise UserError(
            f"{len(refused)} Q/DQ nodes have uint8 or non-zero zero points (first: {refused[0]}); TensorRT needs "
            "symmetric int8: re-export with `cfnet export onnx --precision int8 --int8-target tensorrt`",
            str(onnx_path),
        )
