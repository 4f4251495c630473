"""Data-parallel training across processes (``torchrun --nproc_per_node N -m ciiv train ...``).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process.
NCCL is used when the processes train on CUDA devices, gloo on the CPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "all_gather_objects", "all_reduce_sum", "init_distributed"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, reports progress and writes files."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group described by torchrun's environment, or run alone.

    Args:
        use_cuda: the processes train on CUDA (NCCL backend, one device per local rank);
            otherwise gloo.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logger.debug("joined process group: rank %d of %d", rank, world_size)
    return DistContext(rank, world_size, local_rank, owns_group)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of ``tensor`` over all processes (the tensor itself when running alone)."""
    if ctx.enabled:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj, ctx: DistContext) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not ctx.enabled:
        return [obj]
    gathered: list = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
