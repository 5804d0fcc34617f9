"""What a benchmark ran on: CPU, cores, memory, GPU, OS, Python and the versions of the packages that matter."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from runtime.cpu import describe as describe_int8
from runtime.cpu import int8_path

PACKAGES = (
    "cfnet",
    "torch",
    "torchvision",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxslim",
    "opencv-python-headless",
    "tensorrt",
    "pycuda",
)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total memory in GB (Linux), or None where unknown."""
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    return None


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a benchmark depends on; absent packages are left out."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def gpu_name() -> str | None:
    """The first CUDA device's name as torch sees it, or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def load_average() -> float | None:
    """The 1-minute load average (runnable processes; above the core count, others compete for the CPU)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """Everything needed to read a result later: machine, OS, Python, packages, thread count, load at start."""
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gb": memory_gb(),
        "gpu": gpu_name(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "threads": threads,
        "cpu_int8_path": int8_path(),
        "load_average_start": load_average(),
        "packages": package_versions(),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for report headers: `AMD EPYC, 2 cores, 23.4 GB, no GPU, 2 threads, load 0.3 -> 0.5`."""
    gpu = info.get("gpu") or "no GPU"
    memory = f"{info['memory_gb']} GB, " if info.get("memory_gb") else ""
    text = f"{info['cpu']}, {info['logical_cores']} cores, {memory}{gpu}, {info['threads']} threads"
    if info.get("cpu_int8_path"):
        text += f", int8 path {describe_int8(info['cpu_int8_path'])}"
    if info.get("load_average_start") is not None:
        text += f", 1-min load average {info['load_average_start']} at start"
        if info.get("load_average_end") is not None:
            text += f", {info['load_average_end']} at end"
    return text
