"""Model metadata of a deployable artifact: an ONNX file's `cfnet.*` metadata_props or an engine's sidecar."""

from __future__ import annotations

import colorsys
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import UserError
from runtime.results.reference import Reference

PREFIX = "cfnet."
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelMetadata:
    """What the runtime needs to feed a model and read its output.

    `mean`/`std` are RGB on the 0..1 scale; `input_size` is (H, W), the box frames are resized into
    (aspect kept); inputs are padded bottom/right to a multiple of `size_divisor`. `reference`: what the export
    saw on its calibration images (`cfnet.reference`, for the drift score); None in files exported without.
    """

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int]
    size_divisor: int = 32
    model: str = "unknown"
    preset: str = "unknown"
    precision: str = "fp32"
    version: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    reference: Reference | None = field(default=None, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Overrides:
    """User-supplied metadata (CLI `--classes/--mean/--std/--input-size`); replaces what the artifact says."""

    classes: tuple[str, ...] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: tuple[int, int] | None = None
    size_divisor: int | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.classes, self.mean, self.std, self.input_size, self.size_divisor))


def sidecar_path(engine: Path) -> Path:
    """`model.engine` -> `model.engine.json`."""
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: Path) -> dict[str, Any]:
    """The engine's JSON sidecar as a dict (refused when missing or malformed)."""
    side = sidecar_path(engine)
    if not side.is_file():
        raise UserError("engine sidecar not found (it holds the model metadata)", str(side))
    try:
        data = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"malformed engine sidecar: {exc}", str(side)) from None
    if not isinstance(data, dict):
        raise UserError("malformed engine sidecar: expected a JSON object", str(side))
    nested = data.get("metadata")
    return {**data, **nested} if isinstance(nested, dict) else data


def metadata_from_props(
    props: Mapping[str, Any], where: str, overrides: Overrides | None = None, static_size: tuple[int, int] | None = None
) -> ModelMetadata:
    """Build `ModelMetadata` from `cfnet.*` properties (JSON strings, or decoded values from a sidecar).

    Without cfnet metadata the artifact is refused unless `overrides` name at least the classes;
    `static_size` (a model with fixed H and W) then serves as the input size.
    """
    overrides = overrides or Overrides()
    if not any(str(k).startswith(PREFIX) for k in props):
        return _from_overrides(props, where, overrides, static_size)
    try:
        classes = tuple(str(c) for c in _value(props, "classes"))
        raw_palette = _value(props, "palette", None)
        meta = ModelMetadata(
            classes=classes,
            palette=_palette(raw_palette, len(classes)),
            mean=_triple(_value(props, "mean")),
            std=_triple(_value(props, "std")),
            input_size=parse_size(str(_value(props, "input_size"))),
            size_divisor=int(_value(props, "size_divisor", 32)),
            model=str(_value(props, "model", "unknown")),
            preset=str(_value(props, "preset", "unknown")),
            precision=str(_value(props, "precision", "fp32")),
            version=str(_value(props, "version", "unknown")),
            extra={k: v for k, v in props.items() if not str(k).startswith(PREFIX)},
            reference=_reference(props, len(classes)),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"malformed cfnet metadata: {exc}", where) from None
    return _checked(_apply(meta, overrides), where)


MAX_SIDE = 8192  # the largest height or width any command accepts (cfnet/sizes.py holds the same limit)


def check_size(size: tuple[int, int], what: str = "size") -> tuple[int, int]:
    """`size` (H, W) if each side is within `MAX_SIDE` (a 100000x100000 float32 batch alone is 120 GB)."""
    if max(size) > MAX_SIDE:
        raise ValueError(f"{what} {size[0]}x{size[1]} is too large: at most {MAX_SIDE} per side (height and width)")
    return size


def parse_size(text: str) -> tuple[int, int]:
    """`512x1024` -> (512, 1024), height first; each side within `MAX_SIDE`."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"malformed size '{text}': expected HxW like 512x1024")
    return check_size((int(parts[0]), int(parts[1])))


def parse_triple(text: str) -> tuple[float, float, float]:
    """`0.485,0.456,0.406` -> three floats (RGB)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ValueError(f"malformed value '{text}': expected three comma-separated numbers (R,G,B)")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"'{text}' holds a value that is not a finite number")
    return values[0], values[1], values[2]


def parse_mean(text: str) -> tuple[float, float, float]:
    """`--mean`: three floats on the 0..1 scale (values above 1 are warned about: the 0..255 scale?)."""
    return _warn_255(parse_triple(text), "--mean", "0.485,0.456,0.406")


def parse_std(text: str) -> tuple[float, float, float]:
    """`--std`: three positive floats on the 0..1 scale (values above 1 are warned about)."""
    values = parse_triple(text)
    if min(values) <= 0:
        raise ValueError(f"std {text} must be positive (it divides the pixels)")
    return _warn_255(values, "--std", "0.229,0.224,0.225")


def _warn_255(values: tuple[float, float, float], option: str, example: str) -> tuple[float, float, float]:
    if max(values) > 1:
        print(
            f"warning: {option} {','.join(f'{v:g}' for v in values)} looks like the 0..255 scale; "
            f"cfnet divides pixels by 255 first, so give it on the 0..1 scale (e.g. {example})",
            file=sys.stderr,
        )
    return values


def parse_classes(text: str) -> tuple[str, ...]:
    """`--classes`: a count (`19`, names `class0..`), an inline JSON list of names, or a JSON file holding one."""
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise ValueError("--classes needs at least 1 class")
        return tuple(f"class{i}" for i in range(int(text)))
    try:
        names = json.loads(text if text.startswith("[") else Path(text).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--classes takes a count, a JSON list of names or a file holding one: {exc}") from None
    if not isinstance(names, list) or not names:
        raise ValueError(f"--classes needs a non-empty JSON list of names ({text})")
    return tuple(str(n) for n in names)


def check_io_shapes(
    inputs: Sequence[Any], outputs: Sequence[Any], meta: ModelMetadata, where: str, *, mask: bool = False
) -> None:
    """Refuse a model whose input is not `N x 3 x H x W` or whose output is not `N x C x H x W` logits with C the
    metadata's class count (`mask`: the output is the model's own argmax, `N x H x W`). Dimensions that are not
    known numbers (dynamic: a name, None or -1) pass; the backends check again on the first output."""
    if len(inputs) != 4 or _known(inputs[1]) not in (None, 3):
        raise UserError(f"the model's input is {_shape_text(inputs)}: cfnet feeds N x 3 x H x W RGB images", where)
    if mask:
        if len(outputs) != 3:
            raise UserError(f"the model's mask output is {_shape_text(outputs)}: cfnet reads N x H x W ids", where)
        return
    if len(outputs) != 4:
        raise UserError(
            f"the model's output is {_shape_text(outputs)}: cfnet reads N x C x H x W logits (class scores)", where
        )
    channels = _known(outputs[1])
    if channels is not None and channels != meta.num_classes:
        raise UserError(
            f"the model outputs {channels} classes but {meta.num_classes} are named (--classes or its metadata)",
            where,
        )


def _known(dim: Any) -> int | None:
    return int(dim) if isinstance(dim, int | np.integer) and dim >= 0 else None


def _shape_text(shape: Sequence[Any]) -> str:
    return f"{len(shape)}-D [{', '.join(str(d) for d in shape)}]"


def default_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct RGB colours for `count` classes (golden-ratio hues), for artifacts without a palette."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * (i % 3) / 2)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


def _value(props: Mapping[str, Any], key: str, default: Any = KeyError) -> Any:
    if PREFIX + key in props:
        raw = props[PREFIX + key]
    elif key in props:
        raw = props[key]
    elif default is KeyError:
        raise KeyError(f"{PREFIX}{key} missing")
    else:
        return default
    if isinstance(raw, str) and key in ("classes", "palette", "mean", "std"):
        return json.loads(raw)
    if key == "input_size" and isinstance(raw, list | tuple):
        return "x".join(str(v) for v in raw)
    return raw


def _reference(props: Mapping[str, Any], count: int) -> Reference | None:
    """`cfnet.reference` parsed and checked against the class count (None when absent)."""
    raw = _value(props, "reference", None)
    return None if raw is None else Reference.from_json(raw, count)


def _triple(value: Any) -> tuple[float, float, float]:
    values = [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"expected 3 values, got {len(values)}")
    return values[0], values[1], values[2]


def _palette(value: Any, count: int) -> tuple[tuple[int, int, int], ...]:
    if value is None:
        return default_palette(count)
    colours = tuple((int(c[0]), int(c[1]), int(c[2])) for c in value)
    if len(colours) < count:
        raise ValueError(f"palette has {len(colours)} colours for {count} classes")
    return colours


def _from_overrides(
    props: Mapping[str, Any], where: str, overrides: Overrides, static_size: tuple[int, int] | None
) -> ModelMetadata:
    hint = "pass --classes N|names.json (and --mean, --std, --input-size)"
    if overrides.classes is None:
        raise UserError(f"the model has no cfnet metadata; {hint}", where)
    input_size = overrides.input_size or static_size
    if input_size is None:
        raise UserError("the model has no cfnet metadata and a dynamic input size; pass --input-size HxW", where)
    return _checked(
        ModelMetadata(
            classes=overrides.classes,
            palette=default_palette(len(overrides.classes)),
            mean=overrides.mean or IMAGENET_MEAN,
            std=overrides.std or IMAGENET_STD,
            input_size=input_size,
            size_divisor=overrides.size_divisor or 32,
            extra=dict(props),
        ),
        where,
    )


def _checked(meta: ModelMetadata, where: str) -> ModelMetadata:
    if not meta.classes:
        raise UserError("malformed cfnet metadata: no classes", where)
    if meta.size_divisor <= 0:
        raise UserError(f"malformed cfnet metadata: size divisor {meta.size_divisor} must be positive", where)
    if not all(math.isfinite(v) for v in (*meta.mean, *meta.std)):
        raise UserError(f"malformed cfnet metadata: mean {list(meta.mean)}, std {list(meta.std)} must be finite", where)
    if min(meta.std) <= 0:
        raise UserError(f"malformed cfnet metadata: std {list(meta.std)} must be positive", where)
    return meta


def _apply(meta: ModelMetadata, overrides: Overrides) -> ModelMetadata:
    if not overrides:
        return meta
    palette = meta.palette
    if overrides.classes is not None and len(overrides.classes) > len(palette):
        palette = default_palette(len(overrides.classes))
    classes = overrides.classes or meta.classes
    return replace(
        meta,
        classes=classes,
        palette=palette,
        mean=overrides.mean or meta.mean,
        std=overrides.std or meta.std,
        input_size=overrides.input_size or meta.input_size,
        size_divisor=overrides.size_divisor or meta.size_divisor,
        reference=meta.reference if len(classes) == meta.num_classes else None,  # its shares name the old classes
    )
