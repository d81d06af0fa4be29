"""Data parallelism through ``torch.distributed`` (launched by ``torchrun`` or ``accelerate launch``).

Every rank takes the examples ``rank, rank + world, …`` of each global batch; token counts,
losses and gradients are summed over ranks, so a run on W processes follows the same loss
curve and reaches the same weights as one process with the same global batch (up to the
order of floating-point sums). Only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup() -> tuple[int, int]:
    """Join the process group when launched with WORLD_SIZE > 1; returns (rank, world)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (identity on one process)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def sum_gradients(parameters) -> None:
    """Sum every parameter's gradient over ranks, in one flat buffer."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
