"""The ablation report: `ablations.json`, `.csv`, `.md` and `ablations.png` from the finished runs of a plan.

Each variant's scores are those of its final validation (mIoU, mean Dice, pixel accuracy of `last.pt` on the
val split, by `cfnet.evaluate`), averaged over seeds with their spread (sample standard deviation). The
change is relative to the row's reference (`full`, or `hrnet-full` for the HRNet rows). The `full` runs'
transformer branch (MiT + auxiliary decoder) is scored too, and set against `segformer` trained alone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from cfnet.ablation.plan import TAU_SWEEP, PlannedRun, Schedule
from cfnet.ablation.runner import checkpoint_of
from cfnet.atomic import write_bytes

METRICS = ("miou", "mdice", "pixel_accuracy")
LABELS = {"miou": "mIoU", "mdice": "mean Dice", "pixel_accuracy": "pixel accuracy"}
BRANCH_ROW = "full: transformer branch"
FILES = ("ablations.json", "ablations.csv", "ablations.md", "ablations.png")
CSV_COLUMNS = (
    "variant", "model", "contrastive", "temperature", "seeds",
    "miou_mean", "miou_std", "mdice_mean", "mdice_std", "pixel_accuracy_mean", "pixel_accuracy_std",
    "reference", "miou_change", "paper_claim", "verdict",
)


def _spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _final_scores(run: PlannedRun) -> dict[str, float]:
    from cfnet.checkpoint import load_checkpoint

    metrics = load_checkpoint(checkpoint_of(run))["metrics"]
    return {key: float(metrics[f"val_{key}"]) for key in METRICS}


def _branch_scores(run: PlannedRun) -> dict[str, float] | None:
    """The transformer branch of a fused run on its val split (None: trained without the auxiliary decoder)."""
    from cfnet.checkpoint import load_checkpoint, load_model
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import EvalTransform
    from cfnet.evaluate import evaluate

    path = checkpoint_of(run)
    if not load_checkpoint(path)["config"].get("aux_weight"):
        return None
    val = CityscapesDataset(run.config.data, "val", transform=EvalTransform())
    scores = evaluate(load_model(path, branch="transformer"), val)
    return {key: float(scores[key]) for key in METRICS}


def _row(name: str, runs: list[PlannedRun], scores: list[dict[str, float]]) -> dict[str, Any]:
    from cfnet.models.contrafusion import CNN_ENCODERS

    variant = runs[0].variant
    fused = variant.model in CNN_ENCODERS  # single encoders have no contrastive term: None, not its default
    row: dict[str, Any] = {
        "variant": name,
        "model": variant.model,
        "contrastive": variant.contrastive if fused else None,
        "temperature": variant.temperature if fused else None,
        "seeds": [run.seed for run in runs],
        "reference": variant.reference,
        "paper_claim": variant.claim,
        "claim_change": variant.claim_change,
    }
    for key in METRICS:
        values = [s[key] for s in scores]
        row[key] = {"values": values, "mean": statistics.fmean(values), "std": _spread(values)}
    return row


def _verdict(row: dict[str, Any], reference: dict[str, Any]) -> str:
    """Does the measured change agree with the paper's claimed change of this row? Same sign and at least half
    the claimed size: agrees; same sign, smaller: the direction only; opposite sign: disagrees."""
    claim = row["claim_change"]
    if claim is None:
        return ""
    ours, ref = row["miou"], reference["miou"]
    change = row["miou_change"]
    noise = None if ours["std"] is None or ref["std"] is None else ours["std"] + ref["std"]
    said = f"{change:+.1%} here vs {claim:+.0%} in the paper"
    if noise is not None and abs(ours["mean"] - ref["mean"]) <= noise:
        return f"inconclusive: {said}, within the seed spread ({noise:.3f} mIoU)"
    one_seed = "" if noise is not None else " (one seed: no spread to judge it by)"
    if (change < 0) != (claim < 0):
        return f"disagrees: {said}{one_seed}"
    if abs(change) >= abs(claim) / 2:
        return f"agrees: {said}{one_seed}"
    return f"same direction, much smaller: {said}{one_seed}"


def _tau_finding(rows: dict[str, dict[str, Any]]) -> str | None:
    present = [name for name in TAU_SWEEP if name in rows]
    if len(present) < 2:
        return None
    best = max(present, key=lambda name: rows[name]["miou"]["mean"])
    taus = ", ".join(f"{rows[n]['temperature']:g}: {rows[n]['miou']['mean']:.3f}" for n in present)
    if best == "full":
        return f"Temperature: agrees, tau = 0.07 scores the best mIoU of the sweep ({taus})."
    top, paper, tau = rows[best]["miou"], rows["full"]["miou"], rows[best]["temperature"]
    if top["std"] is None or paper["std"] is None:
        caveat = f"; one seed: no spread to judge a margin of {top['mean'] - paper['mean']:.3f} by"
    elif top["mean"] - paper["mean"] <= top["std"] + paper["std"]:
        return f"Temperature: inconclusive, tau = {tau:g} leads 0.07 within the seed spread ({taus})."
    else:
        caveat = ""
    return f"Temperature: disagrees, tau = {tau:g} scores best, not 0.07 ({taus}{caveat})."


def _cost(schedule: Schedule) -> dict[str, dict[str, float]]:
    """Parameters (M) and GFLOPs at the crop size of the full model, its transformer branch and segformer."""
    import torch

    from cfnet.models import build_model
    from cfnet.models.contrafusion import ContraFusionNet, TransformerBranch
    from cfnet.models.profile import count_gflops, count_parameters

    with torch.device("meta"):
        fused = build_model("cfnet-pspnet", preset=schedule.preset)
        assert isinstance(fused, ContraFusionNet)
        branch = TransformerBranch(fused)
        fused.drop_training_modules(())  # the inference graph: no projection heads, no auxiliary decoder
        single = build_model("segformer", preset=schedule.preset)
    models = {"full": fused, BRANCH_ROW: branch, "segformer": single}
    return {
        name: {"params_m": count_parameters(m) / 1e6, "gflops": count_gflops(m, schedule.crop)}
        for name, m in models.items()
    }


def _branch_finding(rows: dict[str, dict[str, Any]], cost: dict[str, dict[str, float]]) -> str | None:
    if BRANCH_ROW not in rows or "full" not in rows:
        return None
    branch, full = rows[BRANCH_ROW]["miou"]["mean"], rows["full"]["miou"]["mean"]
    fraction = cost[BRANCH_ROW]["gflops"] / cost["full"]["gflops"]
    text = (
        f"Transformer branch of the fused model: mIoU {branch:.3f} vs {full:.3f} for the full model "
        f"({(branch - full) / full:+.1%}) at {fraction:.0%} of its GFLOPs "
        f"({cost[BRANCH_ROW]['params_m']:.2f} M parameters, segformer's count)"
    )
    if "segformer" in rows:
        ours, single = rows[BRANCH_ROW]["miou"], rows["segformer"]["miou"]
        alone = single["mean"]
        spread = None if ours["std"] is None or single["std"] is None else ours["std"] + single["std"]
        if spread is not None and abs(branch - alone) <= spread:
            better = "no different, within the seed spread, from"
        else:
            better = ("better" if branch > alone else "not better") + " than"
        text += f"; {better} segformer trained alone ({alone:.3f}, {(branch - alone) / alone:+.1%}"
        text += ")" if spread is not None else "; one seed)"
    return text + "."


def collect(plan: list[PlannedRun], schedule: Schedule, seconds: float | None = None) -> dict[str, Any]:
    """The report's figures from the finished runs of `plan` (missing runs are listed, not scored)."""
    import torch

    from cfnet.ablation.runner import finished_runs

    finished = finished_runs(plan)
    names = list(dict.fromkeys(run.variant.name for run in plan))
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = [run for run in finished if run.variant.name == name]
        if runs:
            rows[name] = _row(name, runs, [_final_scores(run) for run in runs])
        if name == "full" and runs:
            branch = [s for s in (_branch_scores(run) for run in runs) if s is not None]
            if branch:
                rows[BRANCH_ROW] = _row(BRANCH_ROW, runs[: len(branch)], branch)
                rows[BRANCH_ROW].update(model="cfnet-pspnet (MiT + aux decoder)", paper_claim="", claim_change=None)
    for row in rows.values():
        reference = rows.get(row["reference"])
        row["miou_change"] = (
            (row["miou"]["mean"] - reference["miou"]["mean"]) / reference["miou"]["mean"]
            if reference is not None and row["variant"] != row["reference"] and reference["miou"]["mean"] > 0
            else None
        )
        row["verdict"] = _verdict(row, reference) if reference is not None and row["miou_change"] is not None else ""
    cost = _cost(schedule)
    findings = [row["variant"] + ": " + row["verdict"] for row in rows.values() if row["verdict"]]
    findings += [f for f in (_tau_finding(rows), _branch_finding(rows, cost)) if f]
    missing = [f"{run.variant.name} seed {run.seed}" for run in plan if run not in finished]
    return {
        "schedule": {**schedule.__dict__, "crop": list(schedule.crop)},
        "rows": list(rows.values()),
        "cost": cost,
        "findings": findings,
        "missing": missing,
        "seconds": seconds,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_end": round(os.getloadavg()[0], 2), "platform": platform.platform()},
    }


def _fmt(stat: dict[str, Any]) -> str:
    return f"{stat['mean']:.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def _csv(report: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        flat = {k: row[k] for k in ("variant", "model", "contrastive", "temperature", "reference", "verdict")}
        flat.update(seeds=len(row["seeds"]), paper_claim=row["paper_claim"], miou_change=row["miou_change"])
        for key in METRICS:
            flat[f"{key}_mean"], flat[f"{key}_std"] = row[key]["mean"], row[key]["std"]
        writer.writerow(flat)
    return buffer.getvalue()


def markdown(report: dict[str, Any], chart: str = "ablations.png") -> str:
    """The report as Markdown: settings, the table, the chart, the findings in words, what is missing."""
    s = report["schedule"]
    lines = [
        "# Ablations",
        "",
        f"Preset `{s['preset']}`, {s['iters']} iterations, batch {s['batch_size']}, "
        f"crop {s['crop'][0]}x{s['crop'][1]}, lr {s['lr']:g} (poly), seeds 0..{s['seeds'] - 1}, "
        f"data `{s['data']}` (val split). Scores: mean ± sample standard deviation "
        "over seeds; change: relative mIoU change against the row's reference.",
        "",
        "| variant | model | contrastive | tau | seeds | mIoU | mean Dice | pixel acc. | change vs reference "
        "| paper's claim | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        change = "" if row["miou_change"] is None else f"{row['miou_change']:+.1%} vs {row['reference']}"
        weight, tau = ("-" if row[k] is None else f"{row[k]:g}" for k in ("contrastive", "temperature"))
        lines.append(
            f"| {row['variant']} | {row['model']} | {weight} | {tau} | "
            f"{len(row['seeds'])} | {_fmt(row['miou'])} | {_fmt(row['mdice'])} | {_fmt(row['pixel_accuracy'])} | "
            f"{change} | {row['paper_claim']} | {row['verdict']} |"
        )
    lines += ["", f"![ablations]({chart})", "", "## Where the synthetic data agrees with the paper", ""]
    lines += [f"- {finding}" for finding in report["findings"]] or ["- nothing to compare yet"]
    cost = report["cost"]
    lines += ["", "Size at the crop (inference graphs): " + "; ".join(
        f"{name} {c['params_m']:.2f} M parameters, {c['gflops']:.2f} GFLOPs" for name, c in cost.items()) + "."]
    if report["missing"]:
        lines += ["", "Not run yet: " + ", ".join(report["missing"]) + "."]
    if report["seconds"] is not None:
        m = report["machine"]
        lines += ["", f"Training time of this invocation: {report['seconds'] / 60:.1f} min on {m['cpus']} CPUs, "
                  f"torch threads {m['torch_threads']}, 1-min load average {m['load_average_end']} at the end "
                  f"({m['platform']})."]
    return "\n".join(lines) + "\n"


def chart(report: dict[str, Any], out: Path) -> Path:
    """Horizontal bars of mIoU, mean Dice and pixel accuracy per variant, seed spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = report["rows"]
    names = [row["variant"] for row in rows]
    figure = Figure(figsize=(12, 0.45 * len(rows) + 1.5), layout="constrained")
    for axis, key in zip(figure.subplots(1, 3, sharey=True), METRICS, strict=True):
        means = [row[key]["mean"] for row in rows]
        spreads = [row[key]["std"] or 0.0 for row in rows]
        axis.barh(names, means, xerr=spreads, color="#4c72b0")
        axis.set_title(LABELS[key])
        axis.invert_yaxis()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes(out, buffer.getvalue())
    return out


def write_report(report: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the four files of `FILES` into `out` (each atomically); returns their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [
        write_bytes(folder / "ablations.json", (json.dumps(report, indent=2) + "\n").encode()),
        write_bytes(folder / "ablations.csv", _csv(report).encode()),
        write_bytes(folder / "ablations.md", markdown(report).encode()),
    ]
    if report["rows"]:
        paths.append(chart(report, folder / "ablations.png"))
    return paths
