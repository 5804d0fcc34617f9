"""How many frames a batch holds and how many inference calls run at once: defaults from the backend, checks."""

from __future__ import annotations

import os

from runtime.backends import Backend
from runtime.errors import UserError

CPU_WORKERS = 2  # inference calls in flight for several sources on a CPU (docs/BENCHMARKS.md, Multi-stream)
THREADS_PER_CORE = 4  # the most threads (or inference workers) asked for per core before it is refused as a typo


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_thread_count(count: int, option: str) -> int:
    """Refuse a thread or worker count beyond `THREADS_PER_CORE` per core: ten thousand spinning threads froze
    a 2-core machine and ignored SIGTERM for 40 s. Returns `count`."""
    limit = THREADS_PER_CORE * cores()
    if count > limit:
        raise UserError(
            f"{option} {count} is more than {THREADS_PER_CORE} per core of this machine's {cores()} (at most {limit})",
            option,
        )
    return count


def default_batch(backend: Backend, sources: int) -> int:
    """The number of sources capped by the model's largest batch; 1 where the model runs on the CPU.

    On a CPU a batch does not run faster per frame than single frames (ONNX Runtime parallelises inside each
    operator, and a batch's larger activations leave the caches: measured 5.4-6.2 frames/s at batch 4 against
    7.3 at batch 1 for 4 streams of cfnet-pspnet tiny at 256x512 on 2 cores, docs/BENCHMARKS.md); one
    pipeline at batch 1 already keeps the cores busy. A GPU is what batching feeds.
    """
    if backend.device == "cpu":
        return 1
    limit = backend.max_batch
    return min(sources, limit or sources)


def default_workers(backend: Backend, sources: int) -> int:
    """Inference threads: `CPU_WORKERS` for several sources on a CPU backend whose `infer` may run concurrently
    (ONNX Runtime), else one.

    One call at a time leaves cores idle in each call's serial stretches (small operators, the pyramid's
    pooling, the hand-over to the writers); a second call in flight fills them. Measured on 2 cores, 4 streams
    of 256x512 through tiny cfnet-pspnet: 41-43 frames/s with one worker (two intra-op threads), 58-61 with
    two workers of one intra-op thread each (`worker_threads`), 58-63 with three, against 50-56 for 4
    separate processes. A single source keeps one call at a time (its latency, not its throughput, first).
    """
    if sources > 1 and backend.concurrent and backend.device == "cpu":
        return CPU_WORKERS
    return 1


def worker_threads(workers: int) -> int:
    """ONNX Runtime intra-op threads for each of `workers` concurrent calls: this process's cores shared out."""
    return max(1, cores() // workers)


def check_workers(backend: Backend, workers: int) -> None:
    """Refuse inference threads a backend cannot serve (one whose `infer` is not safe to call concurrently)."""
    if workers < 1:
        raise UserError(f"inference workers must be >= 1, got {workers}", "--infer-workers")
    if workers > 1 and not backend.concurrent:
        raise UserError(f"{backend.name} runs one inference at a time; use --infer-workers 1", backend.path)


def check_batch(backend: Backend, batch: int) -> None:
    """Refuse a batch the model cannot take, naming the fix."""
    limit = backend.max_batch
    if limit is None or batch <= limit:
        return
    where = backend.path
    if where.startswith("grpc://"):  # a Triton model (runtime.backends.triton): its repository sets the limit
        raise UserError(
            f"the Triton model takes batches of at most {limit} (its max_batch_size), asked for {batch}; use "
            f"--batch {limit} or write the repository again with `cfnet export triton --max-batch {batch}`",
            where,
        )
    if where.endswith((".engine", ".plan")):
        raise UserError(
            f"the engine's profile takes batches of at most {limit}, asked for {batch}; use --batch {limit} or "
            f"rebuild it with `cfnet build-engine --max-shape {batch}x3xHxW`",
            where,
        )
    raise UserError(
        f"the model takes batches of at most {limit} (static batch dimension), asked for {batch}; use --batch "
        f"{limit} or export it with a dynamic batch (`cfnet export onnx`)",
        where,
    )
