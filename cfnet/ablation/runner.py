"""Running an ablation plan with the ordinary training loop: finished runs are skipped, interrupted ones resumed.

A run is finished when its `last.pt` has reached the planned iterations; a `last.pt` short of them is resumed
exactly (`train --resume`); a folder without one starts afresh. A run folder trained with other settings
than the plan's is refused rather than mixed into the table. One progress bar covers the whole plan.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from cfnet.ablation.plan import PlannedRun
from cfnet.errors import UserError

COMPARED = ("model", "preset", "seed", "loss_contrastive", "temperature", "aux_weight", "batch_size", "crop", "lr")
"""Settings a run folder must share with the plan to be reused (the rest may differ, e.g. workers)."""


@dataclass
class RunState:
    """Where a planned run stands: `done` iterations of its `last.pt` (0: none)."""

    done: int

    def finished(self, iters: int) -> bool:
        return self.done >= iters


def run_state(run: PlannedRun) -> RunState:
    """The iterations `run`'s folder holds; a `UserError` when its checkpoint was trained with other settings."""
    from cfnet.checkpoint import load_checkpoint

    last = run.folder / "last.pt"
    if not last.is_file():
        return RunState(0)
    saved = load_checkpoint(last)
    planned = run.config.to_dict()
    for key in COMPARED:
        if saved["config"].get(key) != planned[key]:
            raise UserError(
                f"run folder was trained with {key}={saved['config'].get(key)}, the plan says {planned[key]}",
                f"{run.folder}: use another --out or remove the folder",
            )
    return RunState(int(saved["iteration"]))


def execute(
    plan: list[PlannedRun], echo: Callable[[str], None] | None = None, progress: bool = True
) -> dict[str, float]:
    """Train every run of `plan` that is not finished; returns the seconds spent per run folder (trained now)."""
    from cfnet.train import train
    from cfnet.train.config import resumed_config

    say = echo or (lambda line: tqdm.write(line, file=sys.stderr))
    states = [run_state(run) for run in plan]  # every folder checked before hours of training
    total = sum(int(run.config.iters or 0) for run in plan)
    done = sum(min(s.done, int(run.config.iters or 0)) for run, s in zip(plan, states, strict=True))
    seconds: dict[str, float] = {}
    bar = tqdm(total=total, initial=done, desc="ablation", unit="it", disable=not progress, position=0)
    try:
        for index, (run, state) in enumerate(zip(plan, states, strict=True), 1):
            iters = int(run.config.iters or 0)
            label = f"[ablate {index}/{len(plan)}] {run.variant.name} seed {run.seed}"
            if state.finished(iters):
                say(f"{label}: finished earlier, skipped")
                continue
            started = time.perf_counter()
            if state.done:
                say(f"{label}: resuming at iteration {state.done}")
                config = resumed_config(run.folder, {"data": run.config.data, "iters": iters})
                train(config, resume=True)
            else:
                say(f"{label}: training {iters} iterations")
                train(run.config)
            seconds[str(run.folder)] = time.perf_counter() - started
            bar.update(iters - state.done)
    finally:
        bar.close()
    return seconds


def finished_runs(plan: list[PlannedRun]) -> list[PlannedRun]:
    """The runs of `plan` whose folders hold their planned iterations."""
    return [run for run in plan if run_state(run).finished(int(run.config.iters or 0))]


def checkpoint_of(run: PlannedRun) -> Path:
    """The checkpoint a finished run is scored by: its `last.pt` (the end of the shared schedule)."""
    return run.folder / "last.pt"
