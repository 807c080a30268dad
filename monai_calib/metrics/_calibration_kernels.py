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

from monai_calib._utils.threads import single_intra_op_thread

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

# Values (classes x samples) per chunk of the CPU fast path: no sample-sized tensor is
# allocated (and page-faulted) per call, the chunk and its temporaries stay in cache (about the
# 2 MiB L2 of the VM measured), and per-op dispatch (~15 ops per chunk) is paid about 20 times
# per 10^7 values (2^19 was 5-10% faster than 2^18 and 2^20 at N = 1e6, K = 10).
_CHUNK_VALUES = 1 << 19
# With several intra-op threads the chunk loop runs on one thread (_PARALLEL_CHUNKS = False):
# with chunks of _CHUNK_VALUES_PER_THREAD values per thread every chunk op lies above ATen's
# grain and is split between the threads, which was 1.2x faster on an idle 2-core VM (21.9 vs
# 26.7 ms at N = 1e6, K = 10) but 30-70x slower as soon as another process kept a core busy
# (~100 parallel regions per call, each waiting for a descheduled worker; see
# monai_calib._utils.threads). Set it to True to use ATen's parallel kernels per chunk.
_PARALLEL_CHUNKS = False
_CHUNK_VALUES_PER_THREAD = 1 << 19
# (N, K) inputs are transposed chunk-wise by a product with [identity; ones] up to this K (exact,
# see _transpose_exact; the extra row gives the row sums of the check); above it by a strided
# copy.
_MM_TRANSPOSE_MAX_K = 64


def _chunk_values() -> int:
    """Values per chunk for the current number of intra-op threads."""
    threads = torch.get_num_threads()
    if threads == 1 or not _PARALLEL_CHUNKS:
        return _CHUNK_VALUES
    return _CHUNK_VALUES_PER_THREAD * threads


def fast_path_ok(y_pred: object) -> bool:
    """The chunked path is for CPU tensors (a GPU prefers few large kernels)."""
    return isinstance(y_pred, torch.Tensor) and y_pred.device.type == "cpu"


def _transpose_exact(c: torch.Tensor, weights: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out[:K] = c.T`` for a ``(n, K)`` chunk, and ``out[K] = c.sum(1)`` when ``out`` has
    ``K + 1`` rows.

    ``[eye; ones] @ c.T`` is several times faster than a strided copy for small ``K``, and its
    first ``K`` rows are exact for finite values: every output is ``1 * x`` plus products
    ``0 * y = 0`` (only the sign of a zero may change); the last row is the row sums that the
    probability check needs, for free. Only used on the CPU with the float32 matmul precision
    ``"highest"`` (no reduced-precision matmul); a non-finite input smears NaN over its column,
    which the range check on the output then rejects (NaN fails it).
    """
    if weights is None:
        out[: c.shape[1]].copy_(c.t())
        if out.shape[0] > c.shape[1]:
            torch.sum(c, 1, out=out[c.shape[1]])
    else:
        torch.mm(weights, c.t(), out=out)


def _chunks(
    probs: torch.Tensor, labels: torch.Tensor, row_sums: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Yield ``(x, sums, lab)``: ``x`` a ``(K, n)`` block of probabilities (class-major),
    ``sums`` its ``n`` column sums (the rows of the input; ``None`` unless ``row_sums``) and
    ``lab`` the ``(1, n)`` labels. ``x`` may be a buffer reused by the next chunk."""
    num_classes = probs.shape[1]
    step = max(1, _chunk_values() // num_classes)
    if probs.ndim == 2:
        n_rows = probs.shape[0]
        weights = None
        if num_classes <= _MM_TRANSPOSE_MAX_K and torch.get_float32_matmul_precision() == "highest":
            weights = torch.eye(num_classes, dtype=probs.dtype)
            if row_sums:
                weights = torch.cat([weights, torch.ones(1, num_classes, dtype=probs.dtype)])
        rows = num_classes + int(row_sums)
        buf = torch.empty(rows, min(step, n_rows), dtype=probs.dtype)
        for s0 in range(0, n_rows, step):
            c = probs[s0 : s0 + step]
            n = c.shape[0]
            out = buf if n == buf.shape[1] else torch.empty(rows, n, dtype=probs.dtype)
            _transpose_exact(c, weights, out)
            sums = out[num_classes] if row_sums else None
            yield out[:num_classes], sums, labels[s0 : s0 + step].unsqueeze(0)
    else:
        batch = probs.shape[0]
        p3 = probs.reshape(batch, num_classes, -1)
        l2 = labels.reshape(batch, -1)
        for b in range(batch):
            for s0 in range(0, p3.shape[2], step):
                x = p3[b, :, s0 : s0 + step]
                yield x, x.sum(0) if row_sums else None, l2[b : b + 1, s0 : s0 + step]


def chunked_equal_width_statistics(
    y_pred: torch.Tensor,
    probs: torch.Tensor,
    labels: torch.Tensor,
    target: str,
    num_bins: int,
    check: bool,
) -> torch.Tensor:
    """Equal-width statistics of softmax-type inputs in one chunked pass (CPU).

    Per chunk of ``K x n`` values, in cache: the probability checks (one ``aminmax`` over the
    values, one over the row sums, which the transposing product of ``(N, K)`` inputs yields for
    free), then the float bin slot ``ceil(q * M)`` of every (sample, group) pair.

    - ``"top_label"``: ``key = 2 * slot + correct``; one ``bincount`` of the keys gives the
      counts and hits, one weighted ``bincount`` (float64 weights) the confidence sums.
      Correctness avoids the slow ``max(dim)`` with indices and the slow comparison kernels:
      ``floor(p_k / max_j p_j)`` is 1 for a maximal class and 0 otherwise (division is
      monotone and ``m / m = 1`` exactly), except that a value just below the maximum may round
      to 1 too. When these indicators add up to exactly one per row the row maximum is unique
      and the indicator of the label is the correctness (``argmax == y``); otherwise (a tie,
      or such a rounding) the chunk takes the exact ``max(dim=0)`` index path (first maximal
      class, as documented).
    - ``"classwise"``: ``code = class * (M + 1) + slot``; ``bincount`` of the codes gives the
      counts, a weighted one the sums, and a ``bincount`` of the codes gathered at the labels
      the hits (exactly one class per sample is correct: no ``K x n`` comparison).

    Results equal those of :func:`binned_statistics` (counts are the same integers; sums are
    float64, added chunk-wise). With several intra-op threads the loop runs on one thread (see
    ``_PARALLEL_CHUNKS``); the thread count is restored afterwards, also on error.

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
    with single_intra_op_thread(not _PARALLEL_CHUNKS):
        return _chunked_statistics(y_pred, probs, labels, target, num_bins, check)


def _chunked_statistics(
    y_pred: torch.Tensor,
    probs: torch.Tensor,
    labels: torch.Tensor,
    target: str,
    num_bins: int,
    check: bool,
) -> torch.Tensor:
    """The body of :func:`chunked_equal_width_statistics` (at the thread count it chose)."""
    num_classes = probs.shape[1]
    top = target == "top_label"
    groups = 1 if top else num_classes
    width = num_bins + 1
    size = (2 if top else 1) * groups * width
    key_dtype = torch.int32 if size < 2**31 else torch.int64
    # slots (and keys assembled from them) are exact whole floats below 2**24 in float32
    slot_dtype = probs.dtype
    if num_bins >= 2**24 and slot_dtype != torch.float64:
        slot_dtype = torch.float64  # ceil(q * M) itself needs the wider type (see above)
    float_keys = size < (2**24 if slot_dtype == torch.float32 else 2**53)
    counts = torch.zeros(size, dtype=torch.int64)
    sums = torch.zeros(size, dtype=torch.float64)
    hits = None if top else torch.zeros(size, dtype=torch.int64)
    tol = sum_tolerance(y_pred.dtype, num_classes)  # the input's dtype: bf16 rows are coarser
    if not top:  # class * (M + 1) per row of a (K, n) block
        offsets = torch.arange(0, size, width, dtype=slot_dtype).unsqueeze(1)
    tmp = None
    for x, row_sums, lab in _chunks(probs, labels, row_sums=check):
        n = x.shape[1]
        conf = torch.amax(x, 0) if top else x
        if check:
            # aminmax copies a strided (dense) block first: amin + the cheap amax of conf there
            if x.is_contiguous():
                lo, hi = torch.aminmax(x)
            else:
                lo, hi = x.amin(), conf.amax()
            # one read-back per chunk; NaN fails every comparison below
            lo, hi, slo, shi = torch.stack([lo, hi, *torch.aminmax(row_sums)]).tolist()
            err = max(1.0 - slo, shi - 1.0)
            if not (lo >= 0 and hi <= 1) or err > tol:
                raise_probability_error(y_pred, err)
        if top:
            if tmp is None or tmp.shape != x.shape:
                tmp = torch.empty(x.shape, dtype=x.dtype)
            ind = torch.div(x, conf, out=tmp).floor_()  # 1 for the maximal class(es)
            if float(ind.sum()) == n:
                correct = ind.gather(0, lab)[0]  # 0./1.
            else:  # a tied (or nearly tied) row maximum: the exact first-index argmax
                correct = (x.max(0).indices == lab[0]).to(x.dtype)
            q = conf
        else:
            q = x
        slots = torch.mul(q, num_bins) if slot_dtype == q.dtype else q.to(slot_dtype)
        if slot_dtype != q.dtype:
            slots.mul_(num_bins)
        slots.ceil_()
        if float_keys:
            if top:
                key = torch.add(correct.to(slot_dtype), slots, alpha=2).to(key_dtype)
            else:
                key = slots.add_(offsets).to(key_dtype)
        else:  # integer arithmetic for very many bins
            key = slots.to(key_dtype)
            if top:
                key.mul_(2).add_(correct.to(key_dtype))
            else:
                key.add_(offsets.to(key_dtype))
        flat = key.reshape(-1)
        counts += torch.bincount(flat, minlength=size)
        sums += torch.bincount(flat, weights=q.double().reshape(-1), minlength=size)
        if not top:
            hits += torch.bincount(key.gather(0, lab).reshape(-1), minlength=size)
    if top:
        pairs = counts.view(groups, width, 2)
        stats = torch.stack(
            [pairs.sum(-1).double(), sums.view(groups, width, 2).sum(-1), pairs[..., 1].double()],
            dim=-1,
        )
    else:
        stats = torch.stack([counts.double(), sums, hits.double()], dim=-1).view(groups, width, 3)
    stats[:, 1] += stats[:, 0]  # a confidence of exactly 0 belongs to the first bin
    return stats[:, 1:].contiguous()
