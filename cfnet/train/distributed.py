"""Distributed plumbing: the process context read from the environment, and the `--nproc` launcher.

The workers are started through torch.distributed's elastic launcher (what `torchrun` uses), so the same
entry runs under `torchrun` (multi-node included): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT come from the environment either way. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cfnet.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank among `world_size`, its local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def in_launched_env() -> bool:
    """True when a launcher (ours or `torchrun`) has set RANK and WORLD_SIZE."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA when available else CPU; `cuda` without a GPU is a `UserError`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("CUDA requested but no GPU is available", "--device cuda")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_name: str) -> DistContext:
    """Join the process group described by the environment (if any) and pick this process's device."""
    if not in_launched_env() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=resolve_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        local_world, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
        if local_world > gpus:
            raise UserError(f"{local_world} processes on this machine need one GPU each, found {gpus}", "--nproc")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, **kwargs)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(entry: Callable[..., Any], nproc: int, *args: Any) -> dict[int, Any]:
    """Run `entry(*args)` in `nproc` local workers through the elastic launcher; returns each rank's result.

    Worker failures other than expected ones surface as torch's `ChildFailedError` with each rank's traceback.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # the launcher's own log folder (else a `torchelastic_*` folder left in /tmp by every run), removed after
    with tempfile.TemporaryDirectory(prefix="cfnet-elastic-") as logs:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=f"cfnet-{uuid.uuid4().hex[:8]}",
            rdzv_backend="c10d",
            rdzv_endpoint="localhost:0",
            max_restarts=0,
            monitor_interval=0.5,
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs),
        )
        return dict(elastic_launch(config, entry)(*args))
