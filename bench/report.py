"""The bench report: a Markdown table (stdout and `report.md`), CSV, JSON and PNG charts, written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.paper import PAPER_SETUP
from bench.streaming import multistream_lines
from cfnet.atomic import atomic_path, write_bytes

CONV_HEAVY = ("unet", "deeplabv3", "pspnet", "cfnet-pspnet")
COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (key, heading, format)
    ("model", "Model", "s"),
    ("backend", "Backend", "s"),
    ("params_m", "Params (M)", ".4g"),
    ("paper_params_m", "Paper params (M)", ".2f"),
    ("gflops", "GFLOPs", ".4g"),
    ("median_ms", "Median (ms)", ".2f"),
    ("p90_ms", "p90 (ms)", ".2f"),
    ("frame_ms", "Frame (ms)", ".2f"),
    ("bytes_per_frame", "Returned (B/frame)", ",d"),
    ("images_per_s", "Images/s", ".2f"),
    ("speedup", "Speed-up", ".2f"),
    ("gflop_per_s", "GFLOP/s", ".4g"),
    ("paper_time_s", "Paper time (s)", ".3f"),
)
FP16_COLUMNS = (("speedup_fp16", "Speed-up vs torch-fp16", ".2f"),)
INT8_COLUMNS = (("int8", "int8 export", "s"),)
ACCURACY_COLUMNS = (("miou", "mIoU", ".3f"), ("agreement", "Agreement", ".4f"), ("paper_miou", "Paper mIoU", ".3f"))
STREAM_COLUMNS = (("stream_fps", "Stream FPS", ".2f"), ("backend_fps", "Backend FPS", ".2f"))
SERVING_COLUMNS = (  # the triton row: frames -> masks through the server's ensemble
    ("serve_p50_ms", "Serve p50 (ms)", ".2f"),
    ("serve_p90_ms", "Serve p90 (ms)", ".2f"),
    ("serve_fps_1", "Serve FPS 1 stream", ".2f"),
    ("serve_fps_n", "Serve FPS N streams", ".2f"),
    ("serve_streams", "N", "d"),
    ("serve_avg_batch", "Avg batch", ".2f"),
    ("serve_bytes_sent", "Bytes/frame sent", ".0f"),
    ("serve_bytes_received", "Bytes/frame received", ".0f"),
)


def columns(rows: list[dict[str, Any]]) -> tuple[tuple[str, str, str], ...]:
    """The table's columns: fp16-against-fp16, int8, accuracy and stream columns only when the run has them."""
    cols = COLUMNS
    if any(row.get("speedup_fp16") is not None for row in rows):
        cols += FP16_COLUMNS
    if any(row.get("int8") for row in rows):
        cols += INT8_COLUMNS
    if any("miou" in row for row in rows):
        cols += ACCURACY_COLUMNS
    if any("stream_fps" in row for row in rows):
        cols += STREAM_COLUMNS
    if any(row.get("serve_fps_1") is not None for row in rows):
        cols += SERVING_COLUMNS
    return (*cols, ("status", "Status", "s"))


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "—"
    return format(value, fmt) if fmt != "s" else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as one Markdown table, a row per model and backend."""
    cols = columns(rows)
    lines = ["| " + " | ".join(heading for _, heading, _ in cols) + " |",
             "|" + "|".join("---" if fmt == "s" else "---:" for _, _, fmt in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key), fmt) for key, _, fmt in cols) + " |")
    return "\n".join(lines)


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """The project's speed targets, measured: ORT fp32/int8 vs eager for cfnet-pspnet, best fp32 GFLOP/s."""
    lines = []
    by = {(row["model"], row["backend"]): row for row in rows}
    for backend, target in (("onnxruntime", 0.70), ("onnxruntime-int8", 0.30)):
        row = by.get(("cfnet-pspnet", backend))
        if row and row.get("speedup"):
            ratio = 1.0 / row["speedup"]
            verdict = "met" if ratio <= target else "not met"
            lines.append(f"- cfnet-pspnet {backend} latency = {ratio:.2f}x PyTorch eager (target <= {target:.2f}x): "
                         f"**{verdict}**")
    lines += mask_checks(rows)
    for model in CONV_HEAVY:
        fp32 = [by[(model, b)] for b in ("torch", "onnxruntime", "tensorrt") if (model, b) in by]
        speeds = [(r["gflop_per_s"], r["backend"]) for r in fp32 if r.get("gflop_per_s") is not None]
        if speeds:
            best, backend = max(speeds)
            verdict = "met" if best >= 200 else "not met"
            lines.append(f"- {model}: best fp32 backend {backend} at {best:.1f} GFLOP/s (target >= 200): **{verdict}**")
    return lines + autopilot_checks(by)


def autopilot_checks(by: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Per model with both int8 rows: the share of plain int8's speed-up over ORT fp32 that the autopilot's
    int8 keeps (target >= 80%) and its agreement with PyTorch (target >= 99.5%)."""
    lines = []
    for model in sorted({m for m, backend in by if backend == "onnxruntime-int8-auto"}):
        fp32, plain, auto = (by.get((model, b), {}).get("median_ms") for b in
                             ("onnxruntime", "onnxruntime-int8", "onnxruntime-int8-auto"))
        if fp32 and plain and auto:
            if fp32 / plain <= 1:
                lines.append(f"- {model} onnxruntime-int8-auto: plain int8 is no faster than fp32 here "
                             f"({plain:.1f} vs {fp32:.1f} ms): no speed-up to keep")
            else:
                kept = (fp32 / auto - 1) / (fp32 / plain - 1)
                verdict = "met" if kept >= 0.8 else "not met"
                lines.append(f"- {model} onnxruntime-int8-auto keeps {100 * kept:.0f}% of plain int8's speed-up "
                             f"over fp32 (target >= 80%): **{verdict}**")
        agreement = by[(model, "onnxruntime-int8-auto")].get("agreement")
        if agreement is not None:
            verdict = "met" if agreement >= 0.995 else "not met"
            lines.append(f"- {model} onnxruntime-int8-auto agreement with PyTorch {100 * agreement:.2f}% "
                         f"(target >= 99.5%): **{verdict}**")
    return lines


def mask_checks(rows: list[dict[str, Any]]) -> list[str]:
    """`+mask` rows against their logits rows: bytes returned (target 76x fewer for 19 classes in fp32) and
    end-to-end frame cost (target <= 1.05x)."""
    lines = []
    by = {(row["model"], row["backend"]): row for row in rows}
    for (model, backend), masked in by.items():
        logits = by.get((model, backend.removesuffix("+mask"))) if backend.endswith("+mask") else None
        if logits is None or not masked.get("bytes_per_frame") or not logits.get("bytes_per_frame"):
            continue
        fewer = logits["bytes_per_frame"] / masked["bytes_per_frame"]
        line = f"- {model} {backend}: {fewer:.0f}x fewer bytes returned per frame than {logits['backend']}"
        if masked.get("frame_ms") and logits.get("frame_ms"):
            ratio = masked["frame_ms"] / logits["frame_ms"]
            verdict = "met" if ratio <= 1.05 else "not met"
            line += f"; frame cost {ratio:.3f}x (target <= 1.05x): **{verdict}**"
        lines.append(line)
    return lines


def render_markdown(result: dict[str, Any], charts: dict[str, str] | None = None) -> str:
    """The full report: setup, table, targets, notes and (when written) the charts."""
    config, machine = result["config"], result["machine"]
    size = "x".join(str(d) for d in config["size"])
    lines = [
        "# cfnet bench",
        "",
        f"- Date: {result['date']}",
        f"- Command: `{result['command']}`",
        f"- Machine: {describe(machine)}; {machine['os']}, Python {machine['python']}",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        f"- Input: 1x3x{size}, preset `{config['preset']}`, device `{config['device']}`, "
        f"{config['warmup']} warm-up + {config['iters']} timed rounds, backends interleaved round by round",
        "",
        markdown_table(result["rows"]),
        "",
        f"Speed-up is PyTorch eager's median latency over the backend's; GFLOP/s is the model's GFLOPs "
        f"(torch.utils.flop_counter, batch 1) over the median latency; the fp16 backends' speed-up over PyTorch's "
        f"fp16 autocast (`torch-fp16`, CUDA only) is beside it when that row ran. Paper figures: {PAPER_SETUP} "
        f"(a GPU: compare ratios, not absolute times). Frame is the end-to-end cost of one {size} BGR frame: the "
        f"runtime's preprocess, the backend, and postprocess to the mask at the frame's size (argmax on the host "
        f"for logits; `+mask` backends take the argmax in the graph). Returned is what the model hands back per "
        f"frame (logits: 4 x classes x H x W bytes; mask: H x W).",
    ]
    if any(row.get("status") != "ok" for row in result["rows"]):
        lines += ["", "Rows with a status other than `ok` could not run here, or not all of it; the status says why."]
    multistream = multistream_lines(result["rows"])
    if multistream:
        lines += ["", *multistream]
    target_lines = checks(result["rows"])
    if target_lines:
        lines += ["", "## Targets", "", *target_lines]
    if charts:
        lines += ["", "## Charts", ""]
        lines += [f"![{title}]({path})" for title, path in charts.items()]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Every row with every field, at full precision."""
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def latency_chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """Grouped bars of median latency, models x backends, on a log scale; False when nothing ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in rows if row.get("median_ms") is not None]
    if not measured:
        return False
    models = list(dict.fromkeys(row["model"] for row in rows))
    backends = list(dict.fromkeys(row["backend"] for row in measured))
    width = 0.8 / len(backends)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(models) + 2), 4.5))
    for i, backend in enumerate(backends):
        values = {row["model"]: row["median_ms"] for row in measured if row["backend"] == backend}
        xs = [m + i * width - 0.4 + width / 2 for m, name in enumerate(models) if name in values]
        ax.bar(xs, [values[name] for name in models if name in values], width, label=backend)
    ax.set_yscale("log")
    ax.set_xticks(range(len(models)), models, rotation=20)
    ax.set_ylabel("median latency (ms, log scale)")
    ax.set_title("Latency per model and backend (batch 1)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True


def accuracy_chart(rows: list[dict[str, Any]], path: Path) -> bool:
    """Speed against mIoU, a point per model and backend; False without accuracy figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [row for row in rows if row.get("miou") is not None and row.get("median_ms") is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in dict.fromkeys(row["backend"] for row in points):
        mine = [row for row in points if row["backend"] == backend]
        ax.scatter([r["median_ms"] for r in mine], [r["miou"] for r in mine], label=backend)
        for r in mine:
            ax.annotate(r["model"], (r["median_ms"], r["miou"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("median latency (ms, log scale)")
    ax.set_ylabel("mIoU")
    ax.set_title("Speed against accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(result: dict[str, Any], out: Path, markdown: Path | None = None) -> dict[str, Path]:
    """Write `report.md`, `results.csv`, `results.json`, `latency.png` and (with accuracy) `accuracy.png`.

    `markdown`: also write the report there (e.g. `docs/BENCHMARKS.md`), its charts copied beside it.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "json": out / "results.json"}
    charts: dict[str, str] = {}
    if latency_chart(result["rows"], out / "latency.png"):
        paths["latency_chart"] = out / "latency.png"
        charts["Latency per model and backend"] = "latency.png"
    if accuracy_chart(result["rows"], out / "accuracy.png"):
        paths["accuracy_chart"] = out / "accuracy.png"
        charts["Speed against accuracy"] = "accuracy.png"
    _write_text(paths["csv"], csv_text(result["rows"]))
    _write_text(paths["json"], json.dumps(result, indent=2) + "\n")
    paths["markdown"] = out / "report.md"
    _write_text(paths["markdown"], render_markdown(result, charts))
    if markdown is not None:
        markdown.parent.mkdir(parents=True, exist_ok=True)
        copies = {}
        for title, name in charts.items():
            copy = markdown.with_name(f"{markdown.stem}-{name}")
            write_bytes(copy, (out / name).read_bytes())
            copies[title] = copy.name
        _write_text(markdown, render_markdown(result, copies))
        paths["extra_markdown"] = markdown
    return paths


