# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Kernels of the per-bin calibration statistics (private).

Every function here turns confidences and correctness into the ``(C, M, 3)`` float64
``[count, sum of confidences, sum of correctness]`` statistics of
:func:`monai_calib.metrics.calibration_statistics`, which owns the options, the input checks and
the documentation; the paired bootstrap reuses the same kernels for its resampled ECE.

Equal-width bin of a confidence :math:`q` (``M`` bins, right-closed, 0.0 in the first bin):
:math:`\\min(\\max(\\lceil qM\\rceil - 1, 0), M - 1)`, computed in the input's floating point
precision. The kernels work with the *slot* :math:`j = \\lceil qM\\rceil \\in [0, M]` (``M + 1``
slots per group) and fold slot 0 into the first bin after counting, which saves two elementwise
passes over the samples. A (sample, group) pair has the integer *code* ``group * (M + 1) + j``,
so one ``bincount`` over the codes counts every bin of every group.

Two implementations:

- :func:`binned_statistics` / :func:`accumulate_statistics`: a few whole-tensor passes (any
  device);
- :func:`chunked_equal_width_statistics`: the CPU fast path for softmax-type inputs, one pass over
  cache-sized blocks that also runs the probability checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ._inputs import raise_probability_error, sum_tolerance

__all__ = [
    "accumulate_statistics",
    "binned_statistics",
    "chunked_equal_width_statistics",
    "class_view",
    "correct_codes",
    "equal_mass_bins",
    "equal_width_codes",
    "fast_path_ok",
]


def _equal_width_slots(p: torch.Tensor, num_bins: int) -> torch.Tensor:
    """``ceil(p * M)`` in ``[0, M]`` as a float tensor (``M + 1`` slots; 0 and 1 merge later)."""
    if num_bins >= 2**24 and p.dtype != torch.float64:
        p = p.double()  # float32 represents whole numbers exactly only up to 2**24
    # inputs are validated to lie in [0, 1] (softmax/sigmoid outputs too), so no clamp is needed
    return torch.mul(p, num_bins).ceil_()


def equal_width_codes(
    values: torch.Tensor, num_bins: int, group_dim: int | None = None
) -> torch.Tensor:
    """Integer code ``g * (M + 1) + ceil(q * M)`` of every value ``q`` in ``[0, 1]``.

    ``g`` is the index along ``group_dim`` (one group when ``None``). Codes are int32 (half the
    memory traffic of int64) when every code fits.
    """
    slots = _equal_width_slots(values, num_bins)
    groups = 1 if group_dim is None else values.shape[group_dim]
    width = num_bins + 1
    size = groups * width
    codes = slots.to(torch.int32 if size < 2**31 else torch.int64)
    if group_dim is not None:
        shape = [1] * values.ndim
        shape[group_dim] = groups
        offsets = torch.arange(0, size, width, device=values.device, dtype=codes.dtype)
        codes.add_(offsets.view(shape))
    return codes


def accumulate_statistics(
    codes: torch.Tensor,
    conf: torch.Tensor,
    correct_codes: torch.Tensor,
    groups: int,
    num_bins: int,
) -> torch.Tensor:
    """``(groups, num_bins, 3)`` float64 ``[count, sum conf, sum correct]`` from slot codes.

    ``codes`` (integer, same layout as ``conf``) is ``group * (M + 1) + j`` with ``j`` in
    ``[0, M]``; ``correct_codes`` holds the codes of the correct (sample, group) pairs (others
    may hold the out-of-range code ``groups * (M + 1)``, which is dropped). One
    ``bincount`` over the flattened codes gives the counts, one weighted ``bincount`` the
    confidence sums (accumulated in float64), one over ``correct_codes`` the correctness sums;
    counts are exact integers. Slot 0 (a confidence of exactly 0) is then folded into the first
    bin.
    """
    width = num_bins + 1
    size = groups * width
    flat = codes.reshape(-1)
    counts = torch.bincount(flat, minlength=size).double()
    sums = torch.bincount(flat, weights=conf.reshape(-1).double(), minlength=size)
    hits = torch.bincount(correct_codes.reshape(-1), minlength=size + 1)[:size].double()
    stats = torch.stack([counts, sums, hits], dim=-1).view(groups, width, 3)
    stats[:, 1] += stats[:, 0]
    return stats[:, 1:].contiguous()


def correct_codes(
    codes: torch.Tensor, correct: torch.Tensor, groups: int, num_bins: int
) -> torch.Tensor:
    """``codes`` where the boolean ``correct`` holds, the dropped code ``groups * (M + 1)``
    elsewhere (the ``correct_codes`` of :func:`accumulate_statistics`)."""
    dropped = torch.tensor(groups * (num_bins + 1), dtype=codes.dtype, device=codes.device)
    return torch.where(correct, codes, dropped)


def binned_statistics(
    conf: torch.Tensor, correct: torch.Tensor, num_bins: int, group_dim: int | None = None
) -> torch.Tensor:
    """Equal-width statistics of confidences ``conf`` and a boolean ``correct`` of its shape.

    Groups lie along ``group_dim`` (one group when ``None``); returns ``(groups, num_bins, 3)``.
    """
    codes = equal_width_codes(conf, num_bins, group_dim)
    groups = 1 if group_dim is None else conf.shape[group_dim]
    hits = correct_codes(codes, correct, groups, num_bins)
    return accumulate_statistics(codes, conf, hits, groups, num_bins)


def class_view(x: torch.Tensor) -> torch.Tensor:
    """``(B, K, *spatial)`` -> ``(K, N)`` with every voxel a column (a view for ``(B, K)``)."""
    return x.movedim(1, 0).reshape(x.shape[1], -1)


def equal_mass_bins(values: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Equal-mass bin index for each row of ``values`` ``(G, N)``.

    A value's bin is ``floor(r * M / N)``, where ``r`` is the number of values in its row that
    are *strictly smaller* (its rank, ties sharing the lowest rank). Without ties bin ``b``
    therefore holds the ranks ``[ceil(bN/M), ceil((b+1)N/M))``: sizes differ by at most one and
    the remainder is spread evenly over the bins. Tied values always share a bin (the result does
    not depend on sample order); a bin that a large tie swallows leaves later bins empty.
    """
    n = values.shape[-1]
    values = values.contiguous()
    sorted_values = torch.sort(values, dim=-1).values.contiguous()
    rank = torch.searchsorted(sorted_values, values, right=False)
    return torch.div(rank * num_bins, max(n, 1), rounding_mode="floor")


# ----------------------------------------------------------------------------- CPU fast path

# Values (classes x samples) per chunk of the CPU fast path: the chunk and its temporaries stay in
# the core's L2 cache, so no sample-sized tensor is allocated (and page-faulted) per call. With
# several intra-op threads the chunks stay below ATen's parallel grain size (32768 elements):
# a parallel region per small op costs more in synchronisation (a lot more on a busy machine,
# where every region waits for a descheduled worker) than it saves.
_CHUNK_VALUES = 1 << 16
_CHUNK_VALUES_THREADED = (1 << 15) - 1
# (N, K) inputs are transposed chunk-wise by a product with the identity up to this K (exact,
# see _transpose_exact); above it by a strided copy.
_MM_TRANSPOSE_MAX_K = 64


def fast_path_ok(y_pred: object) -> bool:
    """The chunked path is for CPU tensors (a GPU prefers few large kernels)."""
    return isinstance(y_pred, torch.Tensor) and y_pred.device.type == "cpu"


def _transpose_exact(c: torch.Tensor, eye: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out = c.T`` for a ``(n, K)`` chunk.

    ``eye @ c.T`` is several times faster than a strided copy for small ``K`` and exact for
    finite values: every output is ``1 * x`` plus products ``0 * y = 0`` (only the sign of a zero
    may change). Only used on the CPU with the float32 matmul precision ``"highest"``
    (no reduced-precision matmul); non-finite inputs, which could smear NaN over a row, are
    rejected by the range check on the untransposed chunk.
    """
    if eye is None:
        out.copy_(c.t())
    else:
        torch.mm(eye, c.t(), out=out)


def _chunks(
    probs: torch.Tensor, labels: torch.Tensor
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(x, lab, src)``: ``x`` a ``(K, n)`` block of probabilities (class-major),
    ``lab`` the ``(1, n)`` labels and ``src`` the same values in the input layout."""
    num_classes = probs.shape[1]
    values = _CHUNK_VALUES if torch.get_num_threads() == 1 else _CHUNK_VALUES_THREADED
    step = max(1, values // num_classes)
    if probs.ndim == 2:
        n_rows = probs.shape[0]
        eye = None
        if (
            num_classes <= _MM_TRANSPOSE_MAX_K
            and torch.get_num_threads() == 1  # a threaded BLAS call per chunk costs more
            and torch.get_float32_matmul_precision() == "highest"
        ):
            eye = torch.eye(num_classes, dtype=probs.dtype)
        buf = torch.empty(num_classes, min(step, n_rows), dtype=probs.dtype)
        for s0 in range(0, n_rows, step):
            c = probs[s0 : s0 + step]
            n = c.shape[0]
            x = buf if n == buf.shape[1] else torch.empty(num_classes, n, dtype=probs.dtype)
            _transpose_exact(c, eye, x)
            yield x, labels[s0 : s0 + step].unsqueeze(0), c
    else:
        batch = probs.shape[0]
        p3 = probs.reshape(batch, num_classes, -1)
        l2 = labels.reshape(batch, -1)
        for b in range(batch):
            for s0 in range(0, p3.shape[2], step):
                x = p3[b, :, s0 : s0 + step]
                yield x, l2[b : b + 1, s0 : s0 + step], x


def chunked_equal_width_statistics(
    y_pred: torch.Tensor,
    probs: torch.Tensor,
    labels: torch.Tensor,
    target: str,
    num_bins: int,
    check: bool,
) -> torch.Tensor:
    """Equal-width statistics of softmax-type inputs in one chunked pass (CPU).

    Per chunk of ``K x n`` values, in cache: the probability checks (minimum over all values,
    maximum via the row maxima, row sums ``sum(0)``), then one integer key per (sample, group)
    ``key = 2 * (group * (M + 1) + ceil(q * M)) + correct`` so that one ``bincount`` gives the
    counts and hits and one weighted ``bincount`` (float64 weights) the confidence sums.
    Top-label correctness avoids the slow ``max(dim)`` with indices: ``argmax == y`` iff
    ``p_y == max_k p_k`` when the row maximum is attained once; a chunk holding a tied row
    (detected by counting ``p == max`` entries) takes the exact ``max(dim=0)`` index path
    (first maximal class, as documented). Results equal those of :func:`binned_statistics`
    (counts are the same integers; sums are float64, added chunk-wise).

    With several intra-op threads the chunks are smaller and ``ceil`` is replaced by an exact
    serial equivalent (see the comments), so that no small op opens a parallel region.

    Args:
        y_pred: the caller's input (its dtype sets the row-sum tolerance; it is re-checked to
            raise the same error as :func:`~monai_calib.metrics._inputs.prepare_multiclass`).
        probs: ``y_pred`` as float (``(B, K)`` or ``(B, K, *spatial)``), not yet range-checked.
        labels: class indices ``(B, *spatial)`` (long).
        target: ``"top_label"`` or ``"classwise"``.
        num_bins: number of bins ``M``.
        check: run the probability checks (range and row sums).

    Returns:
        float64 ``(C, num_bins, 3)`` with ``C = 1`` for ``"top_label"``, ``K`` otherwise.
    """
    num_classes = probs.shape[1]
    top = target == "top_label"
    groups = 1 if top else num_classes
    width = num_bins + 1
    size = 2 * groups * width
    key_dtype = torch.int32 if size < 2**31 else torch.int64
    slot_dtype = torch.float64 if num_bins >= 2**24 else probs.dtype
    counts = torch.zeros(size, dtype=torch.int64)
    sums = torch.zeros(size, dtype=torch.float64)
    tol = sum_tolerance(y_pred.dtype, num_classes)  # the input's dtype: bf16 rows are coarser
    threaded = torch.get_num_threads() > 1
    offsets = None
    if not top:  # 2 * class * (M + 1) per row of a (K, n) block
        offsets = torch.arange(0, size, 2 * width, dtype=key_dtype).unsqueeze(1)
        classes = torch.arange(num_classes).unsqueeze(1)
    for x, lab, src in _chunks(probs, labels):
        n = x.shape[1]
        conf = torch.amax(x, 0) if top else x
        if check:
            if top:
                lo, hi = src.amin(), conf.amax()
            else:
                lo, hi = torch.aminmax(src)
            row_sums = x.sum(0)
            slo, shi = torch.aminmax(row_sums)
            err = max(1.0 - float(slo), float(shi) - 1.0)
            if not (bool(lo >= 0) and bool(hi <= 1)) or err > tol:
                raise_probability_error(y_pred, err)
        slots = torch.mul(conf, num_bins) if slot_dtype == conf.dtype else conf.to(slot_dtype)
        if slot_dtype != conf.dtype:
            slots.mul_(num_bins)
        if threaded:
            # ceil(q M) for q M >= 0 as trunc + (trunc < q M): exact, and unlike ``ceil`` (a
            # VML kernel that opens a parallel region from 2048 elements) serial on a chunk
            key = slots.to(key_dtype)
            key.add_(torch.lt(key, slots))
        else:
            key = slots.ceil_().to(key_dtype)
        if top:
            ties = torch.eq(x, conf, out=torch.empty_like(x, memory_format=torch.contiguous_format))
            if float(ties.sum()) != n:  # a row maximum is attained twice: exact argmax
                correct = x.max(0).indices == lab[0]
            else:
                correct = x.gather(0, lab)[0] == conf
            key.mul_(2).add_(correct)
        else:
            correct = torch.eq(lab, classes).to(key_dtype)
            key = torch.add(correct, key, alpha=2).add_(offsets)
        flat = key.reshape(-1)
        counts += torch.bincount(flat, minlength=size)
        sums += torch.bincount(flat, weights=conf.reshape(-1).double(), minlength=size)
    pairs = counts.view(groups, width, 2)
    stats = torch.stack(
        [pairs.sum(-1).double(), sums.view(groups, width, 2).sum(-1), pairs[..., 1].double()],
        dim=-1,
    )
    stats[:, 1] += stats[:, 0]  # a confidence of exactly 0 belongs to the first bin
    return stats[:, 1:].contiguous()
