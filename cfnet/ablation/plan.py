"""The ablation plan: the paper's variants as ordinary `TrainConfig`s, one run folder per variant and seed.

Every variant trains with one schedule (`Schedule`); they differ only in the model, the contrastive weight
and the InfoNCE temperature. `cfnet-pspnet` at tau 0.07 is the `full` variant itself (the paper's setting),
so the temperature sweep trains 0.03, 0.1, 0.2 and 0.5 and reads 0.07 from `full`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from cfnet.errors import UserError
from cfnet.train.config import TrainConfig

PAPER_TAU = 0.07
CONTRASTIVE = 0.1  # TrainConfig's default InfoNCE weight


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: what it trains and what the paper claims about it.

    `reference`: the variant it is compared with (the change is relative to its mIoU); `claim`: the paper's
    statement for the row in words; `claim_change`: the claimed relative mIoU change (-0.15 = 15% lower).
    """

    name: str
    model: str
    contrastive: float = CONTRASTIVE
    temperature: float = PAPER_TAU
    reference: str = "full"
    claim: str = ""
    claim_change: float | None = None


VARIANTS: tuple[Variant, ...] = (
    Variant("full", "cfnet-pspnet", claim="reference (the paper's model)"),
    Variant("no-contrastive", "cfnet-pspnet", contrastive=0.0,
            claim="-15% mIoU without the contrastive loss", claim_change=-0.15),
    Variant("segformer", "segformer", claim="-22% mIoU with a single encoder (SegFormer)", claim_change=-0.22),
    Variant("pspnet", "pspnet", claim="no ablation claim (single CNN encoder)"),
    *(
        Variant(f"tau-{tau:g}", "cfnet-pspnet", temperature=tau, claim="tau = 0.07 is the best temperature")
        for tau in (0.03, 0.1, 0.2, 0.5)
    ),
    Variant("hrnet-full", "cfnet-hrnet", reference="hrnet-full", claim="reference (fused with HRNet)"),
    Variant("hrnet-no-contrastive", "cfnet-hrnet", contrastive=0.0, reference="hrnet-full",
            claim="-15% mIoU without the contrastive loss", claim_change=-0.15),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
TAU_SWEEP = ("tau-0.03", "full", "tau-0.1", "tau-0.2", "tau-0.5")
"""The temperature rows in tau order (`full` is tau 0.07)."""


@dataclass(frozen=True)
class Schedule:
    """What every variant shares. Defaults: the demo's measured tiny schedule (batch 4, lr 2e-3, poly)."""

    data: str
    out: str
    preset: str = "tiny"
    iters: int = 400
    seeds: int = 2
    batch_size: int = 4
    crop: tuple[int, int] = (128, 256)
    lr: float = 2e-3
    workers: int = 0
    device: str = "cpu"
    aux_weight: float | None = None  # None: TrainConfig's measured default


QUICK = {"iters": 200, "seeds": 1}
"""`--quick`: one seed, a shorter schedule."""


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the plan: a variant at a seed, its config and run folder."""

    variant: Variant
    seed: int
    config: TrainConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.out)


def select(names: str | None) -> tuple[Variant, ...]:
    """The variants named in the comma-separated `names` (None or empty: all); unknown names are a `UserError`.
    The references the chosen ones are compared with are added (`no-contrastive` brings `full`)."""
    if not names:
        return VARIANTS
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise UserError(f"--variants '{names}' names no variant: nothing to run", ", ".join(VARIANT_NAMES))
    unknown = [n for n in wanted if n not in VARIANT_NAMES]
    if unknown:
        raise UserError(f"unknown variant '{unknown[0]}'", f"--variants: choose from {', '.join(VARIANT_NAMES)}")
    by_name = {v.name: v for v in VARIANTS}
    chosen = set(wanted) | {by_name[n].reference for n in wanted}
    return tuple(v for v in VARIANTS if v.name in chosen)


def build_plan(schedule: Schedule, variants: tuple[Variant, ...]) -> list[PlannedRun]:
    """Every variant at seeds 0 .. seeds-1, seed-major (a partial plan has all variants at seed 0 first)."""
    if schedule.seeds < 1 or schedule.iters < 1:
        raise UserError("--seeds and --iters must be at least 1", f"got {schedule.seeds} and {schedule.iters}")
    base = TrainConfig(
        model="",
        data=schedule.data,
        out="",
        preset=schedule.preset,
        iters=schedule.iters,
        batch_size=schedule.batch_size,
        crop=schedule.crop,
        lr=schedule.lr,
        poly=True,
        val_every=schedule.iters,
        save_every=max(1, schedule.iters // 4),
        log_every=max(1, schedule.iters // 20),
        workers=schedule.workers,
        device=schedule.device,
    )
    if schedule.aux_weight is not None:
        base = replace(base, aux_weight=schedule.aux_weight)
    return [
        PlannedRun(
            variant,
            seed,
            replace(
                base,
                model=variant.model,
                out=str(Path(schedule.out) / "runs" / variant.name / f"seed-{seed}"),
                seed=seed,
                loss_contrastive=variant.contrastive,
                temperature=variant.temperature,
            ),
        )
        for seed in range(schedule.seeds)
        for variant in variants
    ]
