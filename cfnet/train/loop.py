"""The training loop: `train(config) -> Path`, on CPU, one GPU or several processes (DDP).

Iteration-based: Adam (optionally poly-decayed lr), CE + Dice (+ InfoNCE for the fused models), AMP on
CUDA, validation and checkpoints every K iterations, `last.pt` / `best.pt` (by val mIoU), exact `--resume`.
Only rank 0 writes files and shows the progress bar.
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from cfnet.atomic import sweep_stale
from cfnet.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from cfnet.errors import UserError
from cfnet.train.batches import EpochOrder, SeededSamples, SeededTransform, batches_per_epoch
from cfnet.train.config import TrainConfig
from cfnet.train.curves import LossWindow, RunLog
from cfnet.train.distributed import DistContext, in_launched_env, launch, setup, teardown
from cfnet.train.syncbn import convert_sync_batchnorm

LAST, BEST = "last.pt", "best.pt"
_NUMBERED = re.compile(r"iter_(\d+)\.pt")


class TrainForward(nn.Module):
    """Routes `forward` to the model's `forward_train`, so DDP's hooks see the training forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.model.forward_train(images)  # type: ignore[operator]


def notice(message: str) -> None:
    """A one-line `warning: ...` on stderr (the progress bar's stream)."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


def seed_all(seed: int) -> None:
    """Seed python `random`, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Move to the device; with several processes synchronise BatchNorm across them and wrap in DDP."""
    if ctx.distributed:
        model = convert_sync_batchnorm(model, ctx.device)
    net: nn.Module = TrainForward(model).to(ctx.device)
    if ctx.distributed:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=device_ids)
    return net


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside `wrap_model`'s wrappers."""
    inner = net.module if isinstance(net, DistributedDataParallel) else net
    return inner.model if isinstance(inner, TrainForward) else inner


def poly_lr(base: float, iteration: int, total: int, power: float) -> float:
    """`base * (1 - iteration / total) ** power`."""
    return base * (1.0 - iteration / total) ** power


@dataclass
class Amp:
    """Mixed precision of a run: autocast dtype (None = off) and the GradScaler (fp16 only)."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))

    @classmethod
    def for_run(cls, config: TrainConfig, device: torch.device, main: bool = True) -> Amp:
        """fp16 with a GradScaler, or bf16, on CUDA; on the CPU `--amp` is ignored with a notice (rank 0)."""
        if not config.amp:
            return cls(None)
        if device.type != "cuda":
            if main:
                notice("--amp needs CUDA: training in fp32 on the CPU")
            return cls(None)
        if config.amp_dtype == "bf16":
            return cls(torch.bfloat16)
        return cls(torch.float16, torch.amp.GradScaler("cuda"))


def train_step(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    amp: Amp,
    ctx: DistContext,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimisation step; returns the loss and its parts. A non-finite loss on any rank skips the update
    and is returned on every rank (NaN where the local loss was finite), so all ranks stop together with
    the weights of the previous step intact instead of the healthy ones waiting in the next collective."""
    device_type = images.device.type
    with torch.autocast(device_type, dtype=amp.dtype or torch.float32, enabled=amp.dtype is not None):
        outputs = net(images)
    loss, parts = criterion({k: v.float() for k, v in outputs.items()}, labels)
    finite = torch.isfinite(loss.detach()).float()
    if ctx.distributed:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        optimizer.zero_grad(set_to_none=True)
        local = loss.detach()
        return (local if not torch.isfinite(local) else torch.full_like(local, float("nan"))), parts
    amp.scaler.scale(loss).backward()
    amp.scaler.step(optimizer)
    amp.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), parts


def _datasets(config: TrainConfig) -> tuple[Any, SeededTransform, Any]:
    from cfnet.data.cityscapes import CityscapesDataset
    from cfnet.data.transforms import EvalTransform, TrainTransform

    root = Path(config.data)
    if not root.is_dir():
        raise UserError("data folder not found", str(root))
    augment = SeededTransform(TrainTransform(crop=config.crop))
    train_set = CityscapesDataset(root, "train", transform=augment)
    val_set = CityscapesDataset(root, "val", transform=EvalTransform())
    return train_set, augment, val_set


def _gather_rng(ctx: DistContext) -> list[dict[str, Any]]:
    state = capture_rng()
    if not ctx.distributed:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, state)
    return states


def _total_iterations(config: TrainConfig, per_epoch: int) -> int:
    if config.iters is not None:
        return config.iters
    if config.epochs is not None:
        return config.epochs * per_epoch
    raise UserError("give the length of the run", "--iters I or --epochs E")


class _Run:
    """State of one process of a run (the loop is `run`)."""

    def __init__(self, config: TrainConfig, ctx: DistContext, resume: bool) -> None:
        from cfnet.losses import SegmentationLoss
        from cfnet.models import build_model

        self.config, self.ctx = config, ctx
        self.out = Path(config.out)
        self.train_set, self.augment, self.val_set = _datasets(config)
        self.per_epoch = batches_per_epoch(len(self.train_set), ctx.world_size, config.batch_size)
        if self.per_epoch == 0:
            raise UserError(
                f"{len(self.train_set)} training images are fewer than one batch per process "
                f"({config.batch_size} x {ctx.world_size})",
                str(config.data),
            )
        self.total = _total_iterations(config, self.per_epoch)
        self.val_every = config.val_every or self.per_epoch
        self.save_every = config.save_every or self.per_epoch
        seed_all(config.seed)
        self.criterion = SegmentationLoss(
            ce=config.loss_ce,
            dice=config.loss_dice,
            contrastive=config.loss_contrastive,
            temperature=config.temperature,
            aux=config.aux_weight,
        )
        model = build_model(config.model, config.num_classes, config.preset, config.backbone_weights)
        model.drop_training_modules(self.criterion.parts())
        self.model_config = dict(model.config)
        self.net = wrap_model(model, ctx)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.amp = Amp.for_run(config, ctx.device, ctx.is_main)
        self.iteration = 0
        self.best = -math.inf
        self.window = LossWindow()  # the losses since metrics.csv's last train row, saved for an exact resume
        self.clock_start = 0.0  # seconds of training before this process: a resumed run continues the clock
        last = self.out / LAST
        if resume:
            self._resume(last)
        else:
            if last.exists():
                raise UserError("the run folder already holds a run", f"{self.out}: pass --resume or another --out")
            seed_all(config.seed + ctx.rank)
        if ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out, self.iteration if resume else None) if ctx.is_main else None

    def _resume(self, last: Path) -> None:
        payload = load_checkpoint(last)
        try:
            unwrap(self.net).load_state_dict(payload["model"])
            if payload["optimizer"] is not None:
                self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError("the checkpoint does not fit this run's model", str(last)) from exc
        if payload["scaler"] is not None:
            self.amp.scaler.load_state_dict(payload["scaler"])
        self.iteration = int(payload["iteration"])
        self.best = max(float(payload["metrics"].get("best_miou", -math.inf)), self._best_on_disk())
        self.window = LossWindow.from_dict(payload["metrics"].get("log_window"))
        self.clock_start = float(payload["metrics"].get("seconds", 0.0))
        states = payload["rng"]
        if len(states) == self.ctx.world_size:
            restore_rng(states[self.ctx.rank])
        else:
            if self.ctx.is_main:
                notice(
                    f"checkpoint saved by {len(states)} processes, resuming with {self.ctx.world_size}: "
                    "random draws are re-seeded, so the run is not bit-identical"
                )
            seed_all(self.config.seed + self.ctx.rank + self.iteration)

    def _best_on_disk(self) -> float:
        """The val mIoU of best.pt: it may be newer than last.pt (a run killed between writing the two), and
        later improvements must beat the model it holds, whatever a non-bit-identical replay scores."""
        best = self.out / BEST
        if not best.exists():
            return -math.inf
        return float(load_checkpoint(best)["metrics"].get("best_miou", -math.inf))

    def _checkpoint_config(self) -> dict[str, Any]:
        absolute = {"data": str(Path(self.config.data).resolve())}  # resumable from another directory
        return {**self.config.to_dict(), **absolute, **self.model_config, "world_size": self.ctx.world_size}

    def _save(self, names: list[str], metrics: dict[str, Any]) -> None:
        rng = _gather_rng(self.ctx)
        if not self.ctx.is_main:
            return
        for name in names:
            save_checkpoint(
                self.out / name,
                model=unwrap(self.net),
                optimizer=self.optimizer,
                scaler=self.amp.scaler,
                iteration=self.iteration,
                config=self._checkpoint_config(),
                metrics=metrics,
                rng=rng,
            )

    def _validate(self) -> dict[str, Any]:
        """Every rank scores its share of the val split; the confusion matrices are summed over ranks."""
        from cfnet.evaluate import confusion, summarize

        size = len(self.val_set)
        share = range(self.ctx.rank, size, self.ctx.world_size)
        matrix = confusion(unwrap(self.net), self.val_set, device=self.ctx.device, indices=share)
        if self.ctx.distributed:
            total = torch.from_numpy(matrix).to(self.ctx.device)
            dist.all_reduce(total)
            matrix = total.cpu().numpy()
        return summarize(matrix, size)

    def _loader(self, epoch: int, start_batch: int) -> DataLoader:
        config, ctx = self.config, self.ctx
        order = EpochOrder(
            len(self.train_set),
            epoch=epoch,
            seed=config.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            batch_size=config.batch_size,
            start_batch=start_batch,
        )
        return DataLoader(
            SeededSamples(self.train_set, self.augment, config.seed),
            batch_size=config.batch_size,
            sampler=order,
            num_workers=config.workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
            generator=torch.Generator().manual_seed(config.seed),
        )

    def _stop_on(self, loss: Tensor) -> None:
        kind = "nan" if torch.isnan(loss) else "inf"
        last = self.out / LAST
        where = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet"
        raise UserError(f"loss became {kind} at iteration {self.iteration + 1}", f"{where}; try a lower --lr")

    def run(self) -> Path:
        """Train from `self.iteration` to `self.total`; returns the path of best.pt (or last.pt)."""
        config, ctx = self.config, self.ctx
        self.net.train()
        bar = tqdm(total=self.total, initial=self.iteration, desc="train", unit="it", disable=not ctx.is_main)
        self.started = time.perf_counter() - self.clock_start
        try:
            while self.iteration < self.total:
                epoch, start_batch = divmod(self.iteration, self.per_epoch)
                for images, labels in self._loader(epoch, start_batch):
                    if config.poly:
                        lr = poly_lr(config.lr, self.iteration, self.total, config.poly_power)
                        for group in self.optimizer.param_groups:
                            group["lr"] = lr
                    images = images.to(ctx.device, non_blocking=True)
                    labels = labels.to(ctx.device, non_blocking=True)
                    loss, parts = train_step(self.net, images, labels, self.criterion, self.optimizer, self.amp, ctx)
                    if not torch.isfinite(loss):
                        self._stop_on(loss)
                    self.iteration += 1
                    values = {"loss": float(loss), **{f"loss_{k}": float(v) for k, v in parts.items()}}
                    self.window.add(values)
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", epoch=epoch)
                    row = {"iteration": self.iteration, "epoch": epoch, "seconds": self.seconds()}
                    due = self.iteration % config.log_every == 0 or self.iteration == self.total
                    if self.log is not None and due:
                        lr_now = self.optimizer.param_groups[0]["lr"]
                        self.log.add({**row, "lr": lr_now, **self.window.take()})
                    self._after_step(row)
                    if self.iteration >= self.total:
                        break
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
        best = self.out / BEST
        return best if best.exists() else self.out / LAST

    def seconds(self) -> float:
        """Seconds of training so far, those before a resume included (metrics.csv's `seconds`)."""
        return time.perf_counter() - self.started

    def _after_step(self, row: dict[str, Any]) -> None:
        end = self.iteration == self.total
        metrics: dict[str, Any] = {"best_miou": self.best} if math.isfinite(self.best) else {}
        names: list[str] = []
        if self.iteration % self.val_every == 0 or end:
            scores = self._validate()
            val = {f"val_{k}": scores[k] for k in ("miou", "mdice", "pixel_accuracy")}
            if self.log is not None:
                self.log.add({**row, **val})
                self.log.plot()
            metrics.update(val)
            if scores["miou"] > self.best:
                self.best = float(scores["miou"])
                metrics["best_miou"] = self.best
                names.append(BEST)
        if self.iteration % self.save_every == 0 or end:
            names += [f"iter_{self.iteration:06d}.pt", LAST]  # last.pt last: a run killed before it replays the step
        if names:
            self._save(names, {**metrics, "seconds": self.seconds(), "log_window": self.window.to_dict()})
            if self.ctx.is_main:
                prune_checkpoints(self.out, self.config.keep_checkpoints)


def prune_checkpoints(run: Path, keep: int) -> list[Path]:
    """Remove all but the `keep` newest numbered checkpoints (`iter_N.pt`) of `run` (0: keep all)."""
    numbered = sorted((int(m[1]), p) for p in run.glob("iter_*.pt") if (m := _NUMBERED.fullmatch(p.name)))
    doomed = [path for _, path in numbered[:-keep]] if keep else []
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def run_process(config: TrainConfig, resume: bool) -> Path | None:
    """Train as one process of the run the environment describes (single, our launcher's, or torchrun's)."""
    ctx = setup(config.device)
    if ctx.distributed and ctx.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    try:
        path = _Run(config, ctx, resume).run()
    finally:
        teardown()
    return path if ctx.is_main else None


def launched_worker(config: TrainConfig, resume: bool) -> dict[str, Any]:
    """Entry of a worker started by `train`'s launcher: expected failures come back as values."""
    try:
        path = run_process(config, resume)
    except UserError as exc:
        return {"error": (exc.what, exc.where)}
    return {"path": str(path) if path is not None else None}


def train(config: TrainConfig, *, resume: bool = False) -> Path:
    """Run training as `config` says; with `nproc > 1` (and no launcher around) start the workers.

    Returns the path of `best.pt` (by val mIoU) in the run folder, or `last.pt` when no validation improved.
    """
    if config.nproc > 1 and not in_launched_env():
        sweep_stale(config.out)  # the workers write the run; this process holds the command line's sweep
        results = launch(launched_worker, config.nproc, config, resume)
        for rank in sorted(results):
            if "error" in results[rank]:
                what, where = results[rank]["error"]
                raise UserError(what, where)
        return Path(results[0]["path"])
    path = run_process(config, resume)
    return path if path is not None else Path(config.out) / LAST
