# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Small wrappers over ``torch.distributed`` that are no-ops in a single process.

Every rank takes part in every collective, also a rank that has seen no data: the gathers agree
on what each rank holds before moving it (:func:`gather_rows`), so a rank without data joins
with empty tensors instead of skipping the call (which would block the others forever).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from monai.utils import evenly_divisible_all_gather

__all__ = [
    "all_reduce_sum",
    "all_reduce_sum_differentiable",
    "gather_cat",
    "gather_rows",
    "get_rank",
    "is_dist_ready",
    "is_main_rank",
]

# dtype <-> code of the metadata exchanged by gather_rows
_DTYPES = (
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
    torch.complex64,
    torch.complex128,
)


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


def get_rank() -> int:
    """This process's rank; 0 in a single process."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_rank() -> bool:
    """True on rank 0, and in a single process: the rank that writes files and logs results."""
    return get_rank() == 0


def _collective_device() -> torch.device:
    """Where tensors must be for the process group's collectives: NCCL moves CUDA tensors only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _describe(tensors: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """This rank's ``[n, (rows, dtype code, ndim - 1, *trailing shape) * n]``, ``[-1]`` for None."""
    if tensors is None:
        return torch.tensor([-1], dtype=torch.int64)
    meta = [len(tensors)]
    for t in tensors:
        # an unknown dtype is reported after the exchange, on every rank alike
        code = _DTYPES.index(t.dtype) if t.dtype in _DTYPES else -1
        meta += [t.shape[0], code, t.ndim - 1, *t.shape[1:]]
    return torch.tensor(meta, dtype=torch.int64)


def _parse(meta: torch.Tensor) -> list[tuple[int, torch.dtype, tuple[int, ...]]] | None:
    """Inverse of :func:`_describe`: ``[(rows, dtype, trailing shape), ...]`` or None.

    Raises:
        TypeError: a dtype that cannot be gathered.
    """
    m = [int(v) for v in meta.tolist()]
    if m[0] < 0:
        return None
    out, i = [], 1
    for _ in range(m[0]):
        rows, code, nd = m[i : i + 3]
        if code < 0:
            raise TypeError(f"cannot gather tensors of dtype other than {_DTYPES} across ranks.")
        out.append((rows, _DTYPES[code], tuple(m[i + 3 : i + 3 + nd])))
        i += 3 + nd
    return out


def gather_rows(tensors: Sequence[torch.Tensor] | None) -> list[torch.Tensor] | None:
    """Concatenate each tensor along dim 0 over all ranks, in rank order; every rank calls it.

    A rank without data passes ``None`` (it does not know how many tensors the others hold) or
    tensors with 0 rows (whose trailing shape and dtype need not be known: ``torch.zeros(0)``
    will do). The ranks first all-gather a small description of their tensors (number, rows,
    dtype, trailing shape), then each tensor: ranks without rows contribute empty tensors of the
    trailing shape of the ranks with rows, and every shard is cast to the promoted dtype of the
    shards with rows. Every rank reaches the same decision from the same descriptions, so an
    error is raised on all ranks alike (no rank is left blocked in a collective).

    Args:
        tensors: this rank's batch-first tensors (0-d ones are treated as one row), or None.

    Returns:
        The gathered tensors (the local ones without a process group), or None when every rank
        passed None.

    Raises:
        ValueError: ranks hold different numbers of tensors, or rows of different trailing
            shapes.
        TypeError: a dtype that cannot be gathered (e.g. quantized).
    """
    if tensors is not None:
        tensors = [torch.as_tensor(t) for t in tensors]
        tensors = [t.unsqueeze(0) if t.ndim == 0 else t for t in tensors]
    if not is_dist_ready():
        return tensors
    comm = _collective_device()
    meta = _describe(tensors).to(comm)
    metas = [_parse(m) for m in evenly_divisible_all_gather(meta, concat=False)]
    present = [m for m in metas if m is not None]
    if not present:
        return None
    counts = {len(m) for m in present}
    if len(counts) > 1:
        raise ValueError(
            f"every rank must gather the same number of tensors, got {[len(m) for m in present]}."
        )
    out = []
    for i in range(counts.pop()):
        shards = [m[i] for m in present]
        full = [s for s in shards if s[0] > 0]
        shapes = {s[2] for s in full}
        if len(shapes) > 1:
            raise ValueError(
                f"tensor {i} has rows of different shapes on different ranks: "
                f"{[s[2] for s in shards]} (trailing dims after the batch dim)."
            )
        local = None if tensors is None else tensors[i]
        # empty shards: NCCL moves CUDA tensors only; otherwise they stay on the caller's device
        device = comm if comm.type == "cuda" or local is None else local.device
        if not full:  # no rank has rows: nothing to move, the same empty tensor everywhere
            out.append(torch.zeros((0, *shards[0][2]), dtype=shards[0][1], device=device))
            continue
        dtype = full[0][1]
        for s in full[1:]:
            dtype = torch.promote_types(dtype, s[1])
        if local is None or local.shape[0] == 0:
            local = torch.zeros((0, *shapes.pop()), dtype=dtype, device=device)
        out.append(evenly_divisible_all_gather(local.to(dtype), concat=True))
    return out


def gather_cat(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Concatenate each tensor along dim 0 over all ranks, in rank order; identity without DDP.

    Shards may have different lengths (MONAI's ``evenly_divisible_all_gather`` pads and trims),
    and a rank without data passes tensors with 0 rows, of any trailing shape (see
    :func:`gather_rows`). Every rank must call it, with the same number of tensors.
    """
    if not is_dist_ready():
        return tensors
    return tuple(gather_rows(tensors))  # type: ignore[arg-type]


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
