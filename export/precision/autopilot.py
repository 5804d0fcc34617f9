"""The int8 precision autopilot: keep the fewest, most sensitive nodes in fp32 until a target agreement.

1. Quantise every Conv/MatMul/Gemm (but the stem and the classifier) and rank the quantised nodes by the error
   each adds on the calibration images (`export.precision.sensitivity.node_errors`).
2. Keep the top 1, 2, 4, ... of that ranking in fp32 until the argmax agreement with fp32 on held-out images
   (never the calibration ones) reaches the target, then bisect down to the fewest that reach it.
3. Prune what the target does not need, by cost: the `PRUNE_TRIES` kept nodes that compute the most
   (multiply-accumulates) go back to int8 one at a time, largest first, wherever the target still holds.
   The ranking says which nodes matter; the pruning spends the fp32 compute where it is needed (ranking by
   error per MAC instead was tried: the cheap nodes came first and 25% of the nodes did not reach the target
   on a paper preset, docs/DESIGN.md).
4. At most `MAX_FP32_FRACTION` of the quantised nodes are kept in fp32 (beyond that int8 loses most of its
   speed-up): a target not reached by then ends the search with the best model found and `reached=False`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from export.parity import compare
from export.precision.calibration import HeldOut
from export.precision.int8 import WEIGHT_TYPES, Quantizer, check_int8
from export.precision.sensitivity import node_errors, session_with_outputs
from runtime.cpu import int8_path

MAX_FP32_FRACTION = 0.25
PRUNE_TRIES = 16


@dataclass(frozen=True)
class KeptNode:
    """A node kept in fp32: its ONNX name, the PyTorch module it came from, and the error it added in int8."""

    onnx: str
    module: str
    local_error: float

    def as_dict(self) -> dict[str, Any]:
        return {"onnx": self.onnx, "module": self.module, "local_error": self.local_error}


@dataclass
class AutopilotResult:
    """The chosen int8 model and how it was chosen; `tried` maps nodes kept fp32 -> held-out agreement."""

    model: onnx.ModelProto
    kept: list[KeptNode]
    agreement: float
    target: float
    reached: bool
    tried: dict[int, float] = field(default_factory=dict)
    limit: int = 0
    fp32_macs: float = 0.0  # the fraction of the quantisable nodes' multiply-accumulates kept in fp32

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "reached": self.reached,
            "agreement": self.agreement,
            "plain_int8_agreement": self.tried.get(0),
            "fp32_nodes": [k.as_dict() for k in self.kept],
            "tried": {str(k): v for k, v in sorted(self.tried.items())},
            "limit": self.limit,
            "fp32_macs_fraction": self.fp32_macs,
        }

    def line(self) -> str:
        kept = ", ".join(f"{k.onnx} ({k.module})" for k in self.kept) or "none"
        verdict = "reached" if self.reached else f"NOT reached (at most {self.limit} nodes kept fp32)"
        return (
            f"int8 autopilot: target agreement {100 * self.target:.2f}% {verdict}: held-out agreement "
            f"{100 * self.agreement:.3f}% (plain int8 {100 * self.tried.get(0, float('nan')):.3f}%), "
            f"{len(self.kept)} nodes kept fp32 ({100 * self.fp32_macs:.1f}% of the quantisable MACs): {kept}"
        )


def check_options(precision: str, method: str, target: str, min_agreement: float | None) -> None:
    """`UserError` for int8 options that cannot apply (before anything is traced)."""
    from cfnet.errors import UserError

    check_int8(method, target)
    if min_agreement is not None:
        if precision != "int8":
            raise UserError("--min-agreement applies to int8 exports", "add --precision int8")
        if not 0 < min_agreement <= 1:
            raise UserError(f"--min-agreement {min_agreement} must lie in (0, 1]", "e.g. 0.995 for 99.5%")


def module_of(node_name: str, modules: Collection[str]) -> str:
    """The PyTorch module an exported node came from, `?` when none matches.

    The exporter's scope path names only the modules that were called, each by its name relative to the
    called parent (`/cnn/layer2/shortcut/shortcut.0/Conv` for `cnn.backbone.layer2.shortcut.0`): each step
    picks the module named like it that shares the most of the path found so far (the shortest on ties)."""
    current = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        matches = [m for m in modules if m == part or m.endswith("." + part)]
        if not matches:
            break
        current = max(matches, key=lambda m: (_shared(m, current), -len(m)))
    return current or "?"


def _shared(a: str, b: str) -> int:
    """How many leading dotted segments `a` and `b` share."""
    count = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        count += 1
    return count


def int8_autopilot(
    quantizer: Quantizer,
    heldout: Sequence[np.ndarray],
    min_agreement: float,
    *,
    modules: Collection[str] = (),
    say: Callable[[str], None] = lambda line: None,
) -> AutopilotResult:
    """Search as the module docstring says; `heldout`: preprocessed images disjoint from the calibration ones."""
    if not heldout:
        raise ValueError("the autopilot needs held-out images")
    ends = quantizer.ends()
    reference = logits(quantizer.prepared, heldout)
    models: dict[frozenset[str], tuple[onnx.ModelProto, float]] = {}

    def agreement(fp32: Sequence[str], label: str) -> float:
        key = frozenset(fp32)
        if key not in models:
            model = quantizer.quantize([*ends, *fp32])
            score = compare(zip(reference, logits(model, heldout), strict=True)).agreement
            models[key] = model, score
            say(f"int8 autopilot: {label} -> held-out agreement {100 * score:.3f}%")
        return models[key][1]

    plain = quantizer.quantize(ends)
    candidates = [name for name in quantizer.quantizable() if name not in ends]
    ranked = node_errors(quantizer.prepared, plain, candidates, quantizer.batches)
    order = [e.name for e in ranked]
    errors = {e.name: e.local for e in ranked}
    cost = {e.name: e.macs for e in ranked}
    limit = max(1, int(MAX_FP32_FRACTION * len(order))) if order else 0
    tried: dict[int, float] = {}

    def prefix(keep: int) -> float:
        tried[keep] = agreement(order[:keep], f"{keep} nodes fp32")
        return tried[keep]

    low, high = -1, None  # the largest count known to miss, the smallest known to reach
    keep = 0
    while True:
        if prefix(keep) >= min_agreement:
            high = keep
            break
        low = keep
        if keep >= limit:
            break
        keep = min(limit, max(1, 2 * keep))
    if high is not None:
        while high - low > 1:
            middle = (low + high) // 2
            if prefix(middle) >= min_agreement:
                high = middle
            else:
                low = middle
        fp32 = prune(order[:high], cost, lambda names, name: agreement(names, f"{name} back to int8") >= min_agreement)
    else:
        fp32 = order[: max(tried, key=lambda k: (tried[k], -k))]
    model, score = models[frozenset(fp32)]
    kept = [KeptNode(name, module_of(name, modules), errors[name]) for name in fp32]
    fp32_macs = sum(cost[name] for name in fp32) / max(sum(cost.values()), 1.0)
    return AutopilotResult(model, kept, score, min_agreement, high is not None, tried, limit, fp32_macs)


def prune(
    fp32: Sequence[str], cost: dict[str, float], reaches: Callable[[list[str], str], bool], tries: int = PRUNE_TRIES
) -> list[str]:
    """`fp32` without the costliest nodes that the target does not need: the `tries` nodes with the most
    multiply-accumulates are returned to int8 one at a time, largest first, each kept out of fp32 when
    `reaches(remaining, node)` says the target still holds."""
    kept = list(fp32)
    for name in sorted(fp32, key=lambda n: -cost[n])[:tries]:
        remaining = [n for n in kept if n != name]
        if reaches(remaining, name):
            kept = remaining
    return kept


def logits(model: onnx.ModelProto, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The first output of `model` in ONNX Runtime (CPU) for each batch."""
    session, _ = session_with_outputs(model, [])
    name = model.graph.input[0].name
    return [session.run(None, {name: x})[0] for x in batches]


def quantize_for_export(
    proto: onnx.ModelProto,
    calib: Sequence[np.ndarray],
    heldout: HeldOut | None,
    *,
    method: str,
    target: str,
    min_agreement: float | None,
    modules: Collection[str],
    num_classes: int,
    say: Callable[[str], None],
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The int8 model of an export and its precision plan (for the report and the `cfnet.precision_plan`
    metadata): plain int8, or the autopilot's choice when `min_agreement` is given (judged on `heldout`,
    with fp32's and int8's mIoU when the held-out images have labels)."""
    with Quantizer(proto, calib, method=method, target=target) as quantizer:
        plan: dict[str, Any] = {
            "int8_target": target,
            "int8_weights": WEIGHT_TYPES[target],
            "cpu_int8_path": int8_path(),  # the CPU that measured the agreement, with exact sums
            "calib_method": method,
            "calib_images": len(calib),
        }
        if min_agreement is None:
            return quantizer.quantize(quantizer.ends()), plan
        if heldout is None:
            raise ValueError("the autopilot needs held-out images")
        result = int8_autopilot(quantizer, heldout.batches, min_agreement, modules=modules, say=say)
        plan.update(result.as_dict(), heldout_images=len(heldout.batches))
        if heldout.labelled:
            plan["miou"] = {
                name: heldout_miou(model, heldout, num_classes)
                for name, model in (("fp32", quantizer.prepared), ("int8", result.model))
            }
            say(f"int8 autopilot: held-out mIoU int8 {plan['miou']['int8']:.4f} vs fp32 {plan['miou']['fp32']:.4f}")
        say(result.line())
        return result.model, plan


def heldout_miou(model: onnx.ModelProto, heldout: HeldOut, num_classes: int) -> float:
    """mIoU of `model` on the labelled held-out images (masks post-processed by the runtime, at the image size)."""
    from cfnet.metrics import ConfusionMatrix
    from runtime.postprocess import postprocess

    matrix = ConfusionMatrix(num_classes)
    for scores, info, label in zip(logits(model, heldout.batches), heldout.infos, heldout.labels, strict=True):
        assert label is not None
        matrix.update(postprocess(scores, [info])[0], label)
    miou = matrix.scores()["miou"]
    assert isinstance(miou, float)
    return miou
