"""Data parallelism inside one training process group (``torch.distributed``), if any.

Ray Train starts the process group on each worker (``workers.distributed_training``);
without one every helper is the identity, so single-process training takes the same path.
Each worker reads its own slice of every global batch, DDP averages the gradients, and the
masked step then runs on identical gradients everywhere, so every worker's weights stay the
same bit for bit and rank 0's outcome is the task's.
"""

from __future__ import annotations

import torch
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def world() -> tuple[int, int]:
    """(rank, size) of the process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DDP in a group of several processes, else ``model`` itself.

    Call after the phase has set ``requires_grad``: DDP all-reduces exactly the parameters
    that need a gradient when it is built.
    """
    if world()[1] == 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module) -> None:
    """Give every worker rank 0's buffers (BatchNorm statistics).

    DDP sends them at the start of each forward, so after a worker's last step its own
    statistics lag; evaluation and the outcome must not depend on which worker runs them.
    """
    if world()[1] == 1:
        return
    with torch.no_grad():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
