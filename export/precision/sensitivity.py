"""Per-node sensitivity of a reduced-precision graph (int8 QDQ, mixed fp16) against its fp32 original.

Every measuring session sums int8 products exactly (`runtime.cpu.EXACT_SUMS`), whichever CPU runs it: an AVX2 CPU's
u8 x s8 kernels would otherwise saturate and judge the int8 weights of `cpu-vnni` and `tensorrt` by sums neither
VNNI/AMX nor TensorRT compute.

Both graphs are run image by image with the tensors of interest exposed as extra outputs, at most
`TENSORS_PER_RUN` at a time (one image's share of the activations is held at once). Tensors are matched by
name: ORT's QDQ quantiser and `export.precision.fp16` keep the names of the tensors that nodes produce. For a node,
`local error = r(output) - max r(activation inputs)`, where `r = ||candidate - fp32||² / ||fp32||²` pooled
over the images: the error the node adds itself, not the error it inherits from upstream (an accumulated
measure would blame every node after the first bad one). `macs`: what the node computes per image
(multiply-accumulates of a Conv, MatMul or Gemm, from the shapes seen on the images), the price of keeping it
in fp32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from runtime.cpu import EXACT_SUMS

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
TENSORS_PER_RUN = 48  # exposed outputs per run: bounds the activations held (and the float64 copies made)


@dataclass(frozen=True)
class NodeError:
    """One node's error on the calibration images: `local` (see the module docstring), `overflow`, the
    largest |value| of its fp32 output (above fp16's 65504 the fp16 node overflows), and `macs` per image
    (0 for ops other than Conv, MatMul and Gemm)."""

    name: str
    local: float
    overflow: float
    macs: float = 0.0


def float_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element types of the float (fp32/fp16) tensors of `model` that nodes produce or the graph takes in."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    return {name: kind for name, kind in types.items() if kind in FLOATS}


def session_with_outputs(
    model: onnx.ModelProto, names: Sequence[str], types: dict[str, int] | None = None
) -> tuple[Any, list[str]]:
    """An ONNX Runtime CPU session of `model` returning the tensors in `names` it has (floats only), and those
    names; `types`: `float_types(model)` when already known."""
    import onnxruntime as ort

    types = float_types(model) if types is None else types
    exposed = [name for name in dict.fromkeys(names) if name in types]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    copy.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, types[name], None) for name in exposed if name not in present
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = False  # measuring sessions come in pairs: an arena each would keep a whole run
    options.add_session_config_entry(*EXACT_SUMS)  # int8 sums as TensorRT and VNNI compute them, on any CPU
    session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, exposed


def node_errors(
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    nodes: Iterable[str],
    batches: Sequence[np.ndarray],
    *,
    group: int = TENSORS_PER_RUN,
) -> list[NodeError]:
    """`NodeError` of each node of `reference` named in `nodes` (as it runs in `candidate`), most local error
    first. At most `group` tensors are exposed per run (one image at a time), which bounds the memory."""
    wanted = set(nodes)
    initializers = {init.name for init in reference.graph.initializer}
    picked = [n for n in reference.graph.node if n.name in wanted]
    io = {n.name: ([i for i in n.input if i and i not in initializers], list(n.output[:1])) for n in picked}
    names = list(dict.fromkeys(t for inputs, outputs in io.values() for t in [*inputs, *outputs]))
    ref_types, cand_types = float_types(reference), float_types(candidate)
    input_name = reference.graph.input[0].name
    relative: dict[str, float] = {}
    peak: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for start in range(0, len(names), group):
        ref_session, ref_names = session_with_outputs(reference, names[start : start + group], ref_types)
        cand_session, cand_names = session_with_outputs(candidate, names[start : start + group], cand_types)
        common = [name for name in ref_names if name in set(cand_names)]
        diff_sq, ref_sq = dict.fromkeys(common, 0.0), dict.fromkeys(common, 0.0)
        peak.update(dict.fromkeys(common, 0.0))
        for x in batches:
            ref = dict(zip(ref_names, ref_session.run(ref_names, {input_name: x}), strict=True))
            cand = dict(zip(cand_names, cand_session.run(cand_names, {input_name: x}), strict=True))
            shapes.update((name, ref[name].shape) for name in common)
            for name in common:
                r = ref[name].astype(np.float64)
                diff_sq[name] += float(((cand[name].astype(np.float64) - r) ** 2).sum())
                ref_sq[name] += float((r**2).sum())
                peak[name] = max(peak[name], float(np.abs(r).max(initial=0.0)))
            del ref, cand
        relative.update({name: diff_sq[name] / max(ref_sq[name], 1e-30) for name in common})
    shapes.update((init.name, tuple(init.dims)) for init in reference.graph.initializer)
    errors = []
    for node in picked:
        inputs, outputs = io[node.name]
        if not outputs or outputs[0] not in relative:
            continue
        inherited = max((relative.get(i, 0.0) for i in inputs), default=0.0)
        out = relative[outputs[0]]
        per_image = macs(node, shapes) / batches[0].shape[0]
        errors.append(NodeError(node.name, out - inherited, peak[outputs[0]], per_image))
    return sorted(errors, key=lambda e: -e.local)


def macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float:
    """Multiply-accumulates of a Conv, MatMul or Gemm for the tensor shapes in `shapes` (0 for other ops or
    unknown shapes): output elements times the length of the reduction each one sums over."""
    out = shapes.get(node.output[0])
    first, second = (shapes.get(name) for name in [*node.input, "", ""][:2])
    if not out:
        return 0.0
    if node.op_type == "Conv" and second:
        reduction = int(np.prod(second[1:]))  # weight O x I/groups x kH x kW
    elif node.op_type == "MatMul" and first:
        reduction = first[-1]
    elif node.op_type == "Gemm" and first:
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        reduction = first[0] if trans_a else first[-1]
    else:
        return 0.0
    return float(np.prod(out)) * reduction
