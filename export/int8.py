"""Static int8 QDQ quantisation with ONNX Runtime: per-channel int8 weights, uint8 activations.

By default only Conv, MatMul and Gemm are quantised (LayerNorm, Softmax, Resize and the rest stay fp32), after
`quant_pre_process` (shape inference and ORT's fusions, so BatchNorm is folded into its Conv first).
Calibration runs over real images preprocessed by the runtime's own preprocessing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from export.scratch import scratch_dir

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


class _Reader:
    """`onnxruntime.quantization.CalibrationDataReader`: one preprocessed batch per call."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.batches = list(batches)
        self.index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def rewind(self) -> None:
        self.index = 0


def quantize_int8(
    model: onnx.ModelProto,
    batches: Sequence[np.ndarray],
    *,
    method: str = "minmax",
    exclude_first_and_last: bool = True,
    op_types: Sequence[str] = QUANTIZED_OPS,
) -> onnx.ModelProto:
    """A QDQ int8 copy of fp32 `model`, calibrated on `batches` (each `1 x 3 x H x W`, preprocessed).

    `method`: `minmax` (streaming: the only one whose memory does not grow with the calibration set; ORT's
    histogram calibrators keep every activation of every image, 18 GB for cfnet-pspnet paper on 16 images),
    `entropy` or `percentile` (99.999th percentile of |activation|).
    `exclude_first_and_last`: keep the first convolution (reads raw pixels) and the classifier in fp32.
    `op_types`: the op types to quantise.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # ONNX Runtime's calibrators print progress on stdout, which belongs to `--json`
    with scratch_dir("int8") as tmp, contextlib.redirect_stdout(sys.stderr):
        fp32, prepared, int8 = Path(tmp, "fp32.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        onnx.save_model(model, str(fp32))
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        prepared_model = onnx.load(str(prepared))
        exclude = _ends(prepared_model) if exclude_first_and_last else []
        onnx.save_model(prepared_model, str(prepared))
        quantize_static(
            str(prepared),
            str(int8),
            _Reader(model.graph.input[0].name, batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types),
            nodes_to_exclude=exclude,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            extra_options={"CalibPercentile": 99.999, "CalibMovingAverage": False},
        )
        return onnx.load(str(int8))


def _ends(model: onnx.ModelProto) -> list[str]:
    """Names of the first and the last quantisable node (the stem convolution and the classifier).

    Unnamed nodes are given names in place, so that the names can be excluded.
    """
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    nodes = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS]
    return sorted({nodes[0].name, nodes[-1].name}) if nodes else []
