"""Data parallelism through ``torch.distributed`` (launched by ``torchrun`` or ``accelerate launch``).

Every rank takes the examples ``rank, rank + world, …`` of each global batch; token counts,
losses and gradients are summed over ranks, so a run on W processes follows the same loss
curve and reaches the same weights as one process with the same global batch (up to the
order of floating-point sums). Only rank 0 writes files.

With ``train.parallel=fsdp`` the parameters, gradients and optimizer states are sharded over
ranks instead (PyTorch FSDP2, one unit per decoder layer plus the rest): each rank holds 1/W of
them, gradients are summed by reduce-scatter, and checkpoints are gathered into full,
unsharded Hugging Face weights.
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


def shard(backbone: torch.nn.Module) -> None:
    """FSDP: shard a decoder-only backbone over all ranks, one unit per decoder layer.

    Gradients are summed over ranks (not averaged), as :func:`sum_gradients` does.
    """
    from torch.distributed.fsdp import fully_shard

    layer_names = set(getattr(backbone.model, "_no_split_modules", None) or ())
    layers = [m for m in backbone.model.modules() if type(m).__name__ in layer_names]
    units = [*(fully_shard(layer) for layer in layers), fully_shard(backbone)]
    for unit in units:
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """All parameters gathered unsharded on the CPU (a collective: call it on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer state gathered unsharded, keyed by parameter name (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True))


def load_sharded(model: torch.nn.Module, optimizer, weights: dict, optim_state: dict) -> None:
    """Load full (unsharded) weights and optimizer state into a sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
