"""DDP: two gloo workers on the CPU step exactly like one process that sees both ranks' images at once.

The model (tiny U-Net) has BatchNorm, so the workers synchronise it (`CpuSyncBatchNorm` on gloo): batch
statistics over both ranks' images, which is what one process with batch 2 computes. The loss is
cross-entropy on fully labelled images of equal size: its batch mean is the mean of the per-rank means,
which DDP's gradient averaging reproduces. (Dice pooled over a batch is not such a mean: under DDP each
rank's Dice covers its own images.) The optimiser is SGD: Adam's first steps are ~lr * sign(gradient),
which turns float rounding in near-zero gradient entries (summation order differs between the two
set-ups) into lr-sized differences.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from cfnet.losses import SegmentationLoss
from cfnet.models import build_model
from cfnet.train.distributed import DistContext, setup, teardown
from cfnet.train.loop import Amp, train_step, unwrap, wrap_model
from cfnet.train.syncbn import CpuSyncBatchNorm

STEPS = 3
WORLD = 2
SIZE = 32
CLASSES = 4


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(123)
    return [
        (
            torch.randn(WORLD, 3, SIZE, SIZE, generator=generator),
            torch.randint(0, CLASSES, (WORLD, SIZE, SIZE), generator=generator),
        )
        for _ in range(STEPS)
    ]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", num_classes=CLASSES, preset="tiny")


def _snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unwrap(net).state_dict().items()}


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    ctx = setup("cpu")
    try:
        net = wrap_model(_model(), ctx)
        assert any(isinstance(m, CpuSyncBatchNorm) for m in net.modules())
        assert not any(type(m) is torch.nn.BatchNorm2d for m in net.modules())
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        criterion = SegmentationLoss(ce=1.0, dice=0.0, contrastive=0.0)
        snapshots = []
        for images, labels in _batches():
            train_step(net, images[rank : rank + 1], labels[rank : rank + 1], criterion, optimizer, Amp(None), ctx)
            snapshots.append(_snapshot(net))
        torch.save(snapshots, Path(out) / f"rank{rank}.pt")
    finally:
        teardown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_gloo_workers_match_one_process_on_the_joint_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    net = wrap_model(_model(), DistContext())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    criterion = SegmentationLoss(ce=1.0, dice=0.0, contrastive=0.0)
    initial = _snapshot(net)
    for step, (images, labels) in enumerate(_batches()):
        train_step(net, images, labels, criterion, optimizer, Amp(None), DistContext())
        reference = _snapshot(net)
        for key, value in reference.items():
            assert torch.equal(ranks[0][step][key], ranks[1][step][key]), f"ranks differ in {key} at step {step}"
            assert torch.allclose(ranks[0][step][key].double(), value.double(), atol=1e-5, rtol=0), (
                f"{key} at step {step} differs from one process on the joint batch"
            )
    moved = [k for k in initial if initial[k].is_floating_point() and not torch.equal(initial[k], reference[k])]
    assert len(moved) > len(initial) // 2  # the comparison is not vacuous: training changed the weights
