"""Where and with what a run was produced: package versions, git commit, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import subprocess
from pathlib import Path

import torch

PACKAGES = ("torch", "transformers", "peft", "datasets", "hydra-core", "numpy", "scikit-learn", "scipy", "wandb")


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None where it is not installed)."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path = Path(__file__).resolve().parent.parent) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() + ("-dirty" if dirty else "")) if out.returncode == 0 else None


def cpu_info() -> dict[str, object]:
    """Which CPU a figure came from: its model name (/proc/cpuinfo), the vector ISA torch's kernels use (AVX2,
    AVX512, ...) and whether it computes bf16 natively (AVX512_BF16 or AMX), which decides bf16's speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_bf16": sorted(flags & {"avx512_bf16", "amx_bf16"})}


def hardware(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"platform": platform.platform(), "processor": platform.machine(),
                               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "device": str(device), **cpu_info()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device) -> int:
    """Start a new peak window and return the memory in use now. On Linux, writing 5 to clear_refs resets the
    process's high-water mark, so the peak excludes imports and model loading; elsewhere the peak is lifetime."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    rss = _proc_status_kb("VmRSS")
    return rss * 1024 if rss is not None else peak_memory_bytes(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak since `reset_peak_memory` (a run resets it at its start, so each run of a multirun in one process has
    its own): torch's max allocated on CUDA, the resident-set high-water mark (VmHWM) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm, rss = _proc_status_kb("VmHWM"), _proc_status_kb("VmRSS")
    if hwm is None:
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    # the kernel syncs per-thread RSS counters lazily, so VmHWM can trail VmRSS by a few pages: a peak is never below
    # the memory in use now
    return max(hwm, rss or 0) * 1024
