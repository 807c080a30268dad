# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Small wrappers over ``torch.distributed`` that are no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from monai.utils import evenly_divisible_all_gather

__all__ = [
    "all_reduce_sum",
    "all_reduce_sum_differentiable",
    "gather_cat",
    "is_dist_ready",
    "is_main_rank",
]


def is_dist_ready() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over all ranks (returns a new tensor; ``x`` is untouched). Identity without DDP."""
    if not is_dist_ready():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def is_main_rank() -> bool:
    """True on rank 0, and in a single process: the rank that writes files and logs results."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_cat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor along dim 0 over all ranks, in rank order; identity without DDP.

    Shards may have different lengths (MONAI's ``evenly_divisible_all_gather`` pads and trims).
    Every rank must call it, with the same number of tensors.
    """
    if not is_dist_ready():
        return tensors
    return tuple(evenly_divisible_all_gather(t, concat=True) for t in tensors)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the upstream gradients over ranks as well."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = x.detach().clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


def all_reduce_sum_differentiable(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over all ranks inside the autograd graph; identity without DDP.

    Every rank's output is the global sum ``S = sum_r x_r``; in the backward pass the gradient of
    ``x_r`` is the sum over ranks of the gradients of ``S`` (every rank's loss depends on every
    rank's ``x``). So when each rank's loss uses ``S`` and ``DistributedDataParallel`` averages
    the parameter gradients, the step is the one of the mean over ranks of the losses, computed
    in one process. Both passes are collectives: every rank must call it, and must run the
    backward pass if one rank does.
    """
    if not is_dist_ready():
        return x
    return _AllReduceSum.apply(x)
