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


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
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


def hardware(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {"platform": platform.platform(), "processor": platform.machine(),
                               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                               "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max allocated by torch. CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
