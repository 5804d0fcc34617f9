"""fp16 checked on calibration images: the nodes whose fp16 execution overflows or loses accuracy stay fp32.

Every node that runs in fp16 in the mixed graph (`export.precision.fp16`) is compared with fp32 on the images
(`export.precision.sensitivity.node_errors`, one image's activations at a time). A node is kept in fp32 when its fp32
output exceeds fp16's range (65504) or its fp16 output overflows, or when it adds more than
`MAX_LOCAL_ERROR` relative error energy itself (fp16 rounding alone adds about 1e-7; 1e-4 is a 1% RMS error).
ONNX Runtime's CPU runs most fp16 ops through fp32 (it inserts casts, then drops the redundant pairs), so on a
CPU the error criterion sees little beyond fp16 weights; the overflow criterion comes from the fp32 range and
holds on any device. The list is reported and stored as `cfnet.fp32_nodes`: in an fp16 export those nodes are
fp32 by type; an fp32 export with calibration images records the list too, and `build-engine` on TensorRT 10
(FP16 flag) pins them to FP32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from export.precision.autopilot import module_of
from export.precision.fp16 import FP16_MAX, convert_to_mixed_fp16
from export.precision.sensitivity import float_types, node_errors

MAX_LOCAL_ERROR = 1e-4
REPORTED = 5


def fp16_with_checks(
    proto: onnx.ModelProto,
    batches: Sequence[np.ndarray],
    *,
    modules: Collection[str],
    say: Callable[[str], None],
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The mixed fp16 model of fp32 `proto` with the failing nodes kept fp32, and the plan (for the report and
    the `cfnet.precision_plan` metadata): the kept nodes and the largest per-node errors seen."""
    half = convert_to_mixed_fp16(proto)
    types = float_types(half)
    fp16_nodes = [
        n.name for n in half.graph.node if n.op_type != "Cast" and types.get(n.output[0]) == TensorProto.FLOAT16
    ]
    errors = node_errors(proto, half, fp16_nodes, batches)
    # a node fed non-finite inputs has a NaN local error: only the node where overflow starts is flagged
    failing = sorted(
        (e for e in errors if e.overflow > FP16_MAX or e.local > MAX_LOCAL_ERROR),
        key=lambda e: fp16_nodes.index(e.name),
    )

    def entry(name: str, local: float, peak: float) -> dict[str, Any]:
        reason = "overflow" if peak > FP16_MAX or local == math.inf else "error"
        return {
            "onnx": name,
            "module": module_of(name, modules),
            "reason": reason,
            "local_error": local if math.isfinite(local) else None,  # strict JSON: no Infinity/NaN
            "max_abs": peak,
        }

    plan: dict[str, Any] = {
        "calib_images": len(batches),
        "fp32_nodes": [entry(e.name, e.local, e.overflow) for e in failing],
        "largest_errors": [entry(e.name, e.local, e.overflow) for e in errors[:REPORTED]],
    }
    for node in plan["fp32_nodes"]:
        say(
            f"fp16 check: {node['onnx']} ({node['module']}) stays fp32: {node['reason']}, "
            f"max |fp32 output| {node['max_abs']:.4g}, added relative error {node['local_error'] or 'inf'}"
        )
    say(f"fp16 check: {len(failing)} of {len(fp16_nodes)} fp16 nodes kept fp32 on {len(batches)} images")
    if failing:
        half = convert_to_mixed_fp16(proto, {e.name for e in failing})
    return half, plan
