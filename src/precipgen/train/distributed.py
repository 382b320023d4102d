"""Devices, seeding and DistributedDataParallel under ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def dist_info() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process otherwise)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> bool:
    rank, world, _ = dist_info()
    if world <= 1 or dist.is_initialized():
        return dist.is_initialized()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return True


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        _, _, local = dist_info()
        return torch.device("cuda", local)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def average_gradients(params: list[nn.Parameter], world: int) -> None:
    """What DDP does in its backward hooks, for tasks that bypass ``forward``."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def broadcast_value(value: float, distributed: bool) -> float:
    """Rank 0 decides (early stopping, a learning-rate decay); every rank learns it."""
    t = torch.tensor([float(value)], dtype=torch.float64)
    if distributed:
        dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_stop(stop: bool, distributed: bool) -> bool:
    return bool(broadcast_value(1.0 if stop else 0.0, distributed))


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
