"""The processes of a torchrun job (``torchrun --nproc_per_node N -m ciiv train|eval|experiment``):
training (DDP), the batch loop of evaluation and certification, and the experiment runner.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs in one process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "current", "init_distributed", "is_main_process"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its machine. The
    collectives are no-ops (or the identity) in a single process: callers never branch on it."""

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

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all processes (the tensor itself when running alone)."""
        if self.enabled:
            tensor = tensor.clone()
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather(self, obj: Any) -> list[Any]:
        """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def shutdown(self) -> None:
        """Destroy the process group if :func:`init_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group of torchrun's environment, or run alone: NCCL with one device per
    local rank if ``use_cuda``, else gloo."""
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


def current() -> DistContext:
    """This process's place in the process group already initialised (by anyone), else a single
    process; the library's functions split their batches by it and never create a group."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)
    return DistContext()


def is_main_process() -> bool:
    """Whether this is rank 0 of a torchrun job (or no job at all), from the environment: it holds
    before any process group exists (the commands decide early who prints)."""
    return int(os.environ.get("RANK", "0")) == 0
