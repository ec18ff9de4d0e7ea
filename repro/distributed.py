"""Multi-process data parallelism with the same config: launch with `torchrun --nproc_per_node N -m
repro.train ...`. Each process trains on its shard of every epoch (DistributedSampler) with
`train.batch_size` examples per step (the effective batch is N times that, as in the paper's 8-GPU scripts);
gradients are averaged by DDP; every process evaluates the full dev set; rank 0 alone writes results."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: torch.device) -> World:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); a single process needs nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def resolve_device(name: str) -> torch.device:
    """`train.device`: cpu, cuda[:i], or auto (cuda when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process (LOCAL_RANK) when training on CUDA."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard_sampler(items, world: World, seed: int) -> DistributedSampler | None:
    """This process's shuffled shard of `items` under torchrun (reshuffled per epoch by the loop's `set_epoch`);
    None in a single process, where the kind shuffles with the loop's generator."""
    if not world.distributed:
        return None
    return DistributedSampler(items, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)


def sum_over_world(world: World, *values: float) -> list[float]:
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()
