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

from collections.abc import Callable, Iterator

import torch

from monai_calib._utils.threads import map_chunks, outer_intra_op_threads

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
# 2 MiB L2 of the VM measured), and per-op dispatch (~20 ops per chunk) is paid about 20 times
# per 10^7 values (2^19 was 5-10% faster than 2^18 and 2^20 at N = 1e6, K = 10). The chunks do
# not depend on the thread count, so neither do the float64 sums (added in chunk order).
_CHUNK_VALUES = 1 << 19
# With several intra-op threads the chunks are shared out between that many Python threads,
# each running its ops on one intra-op thread (_utils.threads.map_chunks): one join per call.
# Splitting every chunk op between ATen's threads instead (chunks above its grain size) was
# 1.2x faster on an idle 2-core VM but 30-70x slower as soon as another process kept a core
# busy (~100 parallel regions per call, each waiting for a descheduled worker).
# (N, K) inputs are transposed chunk-wise by a product with [identity; ones] up to this K (exact,
# see _transpose_exact; the extra row gives the row sums of the check); above it by a strided
# copy.
_MM_TRANSPOSE_MAX_K = 64


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


class _Chunks:
    """The chunks of a softmax-type input: ``(B, K)`` rows or ``(B, K, *spatial)`` voxels.

    Chunk ``i`` holds ``n`` samples (at most ``_CHUNK_VALUES // K``; dense chunks never cross
    an image). :meth:`reader` returns a per-thread function ``i -> (x, sums, lab)``: ``x`` a
    ``(K, n)`` block of probabilities (class-major, unit stride along samples), ``sums`` its
    ``n`` column sums (the rows of the input; ``None`` unless ``row_sums``) and ``lab`` the
    ``(n,)`` labels. ``x`` may be a buffer of that thread, reused by its next chunk.
    """

    def __init__(self, probs: torch.Tensor, labels: torch.Tensor, row_sums: bool) -> None:
        self.probs, self.row_sums = probs, row_sums
        num_classes = probs.shape[1]
        self.step = max(1, _CHUNK_VALUES // num_classes)
        if probs.ndim == 2:
            self.labels = labels
            self.starts = [(0, s0) for s0 in range(0, probs.shape[0], self.step)]
        else:
            batch = probs.shape[0]
            self.p3 = probs.reshape(batch, num_classes, -1)
            self.labels = labels.reshape(batch, -1)
            voxels = self.p3.shape[2]
            self.starts = [(b, s0) for b in range(batch) for s0 in range(0, voxels, self.step)]

    def __len__(self) -> int:
        return len(self.starts)

    def reader(self) -> Callable[[int], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """A function ``i -> (x, sums, lab)`` with its own transpose buffer (one per thread)."""
        probs, row_sums, step = self.probs, self.row_sums, self.step
        num_classes = probs.shape[1]
        if probs.ndim > 2:

            def dense(i: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
                b, s0 = self.starts[i]
                x = self.p3[b, :, s0 : s0 + step]
                return x, x.sum(0) if row_sums else None, self.labels[b, s0 : s0 + step]

            return dense
        weights = None
        if num_classes <= _MM_TRANSPOSE_MAX_K and torch.get_float32_matmul_precision() == "highest":
            weights = torch.eye(num_classes, dtype=probs.dtype)
            if row_sums:
                weights = torch.cat([weights, torch.ones(1, num_classes, dtype=probs.dtype)])
        rows = num_classes + int(row_sums)
        buf = torch.empty(rows, min(step, probs.shape[0]), dtype=probs.dtype)

        def rows_(i: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
            s0 = self.starts[i][1]
            c = probs[s0 : s0 + step]
            n = c.shape[0]
            out = buf if n == buf.shape[1] else torch.empty(rows, n, dtype=probs.dtype)
            _transpose_exact(c, weights, out)
            sums = out[num_classes] if row_sums else None
            return out[:num_classes], sums, self.labels[s0 : s0 + step]

        return rows_


def _chunks(
    probs: torch.Tensor, labels: torch.Tensor, row_sums: bool
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Yield the ``(x, sums, lab)`` of every chunk in order (see :class:`_Chunks`), one thread."""
    chunks = _Chunks(probs, labels, row_sums)
    read = chunks.reader()
    for i in range(len(chunks)):
        yield read(i)


def _label_entries(
    x: torch.Tensor, lab: torch.Tensor, cache: dict[object, torch.Tensor]
) -> torch.Tensor:
    """``x[lab[i], i]`` for a ``(K, n)`` block.

    ``index_select`` on the block's flat storage (index ``lab * stride + i``) is about twice as
    fast as ``gather`` along dim 0; int32 indices where they fit. ``cache`` keeps the
    ``arange(n)`` of a thread between its chunks.
    """
    if x.stride(1) != 1:
        x = x.contiguous()
    n, stride = x.shape[1], x.stride(0)
    span = stride * (x.shape[0] - 1) + n
    dtype = torch.int32 if span < 2**31 else torch.int64
    ramp = cache.get((n, dtype))
    if ramp is None:
        ramp = cache[n, dtype] = torch.arange(n, dtype=dtype)
    idx = torch.add(ramp, lab.to(dtype), alpha=stride)
    return x.as_strided((span,), (1,)).index_select(0, idx)


class _ChunkCheckFailed(Exception):
    """A chunk failed the probability checks; ``err`` is its largest ``|row sum - 1|``."""

    def __init__(self, err: float) -> None:
        super().__init__(err)
        self.err = err


def chunked_equal_width_statistics(
    y_pred: torch.Tensor,
    probs: torch.Tensor,
    labels: torch.Tensor,
    target: str,
    num_bins: int,
    check: bool,
) -> torch.Tensor:
    """Equal-width statistics of softmax-type inputs in one chunked pass (CPU).

    Per chunk of ``K x n`` values, in cache: the probability checks (the smallest value, the
    largest confidence and the range of the row sums, which the transposing product of
    ``(N, K)`` inputs yields for free; one read-back), then the float bin slot ``ceil(q * M)``
    of every (sample, group) pair.

    - ``"top_label"``: ``key = 2 * slot + correct``; one ``bincount`` of the keys gives the
      counts and hits, one ``scatter_add_`` of the float64 confidences the sums (the additions
      of a weighted ``bincount``, in the same order).
      Correctness avoids the slow ``max(dim)`` with indices and the slow comparison kernels:
      ``sign(p_k - max_j p_j)`` is 0 exactly for a maximal class and -1 otherwise, so the sum
      of these signs over the chunk is ``-(K - 1) n`` exactly when every row maximum is unique,
      and then the sample is correct when ``sign(p_y - max) + 1`` is 1 (``argmax == y``, the
      label's entry read with one ``index_select``); otherwise (a tie, or a difference flushed
      to zero) the chunk takes the exact ``max(dim=0)`` index path (first maximal class, as
      documented).
    - ``"classwise"``: ``code = class * (M + 1) + slot``; ``bincount`` of the codes gives the
      counts, a ``scatter_add_`` the sums, and a ``bincount`` of the codes read at the labels the
      hits (exactly one class per sample is correct: no ``K x n`` comparison).

    Results equal those of :func:`binned_statistics` (counts are the same integers; sums are
    float64, added chunk-wise in chunk order, so they are the same bits at any thread count).
    With several intra-op threads the chunks are shared out between that many Python threads,
    each on one intra-op thread (:func:`~monai_calib._utils.threads.map_chunks`); the thread
    count is restored afterwards, also on error.

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
    size = (2 if top else 1) * groups * width
    chunks = _Chunks(probs, labels, row_sums=check)
    tol = sum_tolerance(y_pred.dtype, num_classes)  # the input's dtype: bf16 rows are coarser

    def make_worker() -> Callable[[int], tuple[torch.Tensor, ...]]:
        read = chunks.reader()
        stats = _chunk_statistics(probs.dtype, top, num_classes, num_bins, size, check, tol)
        return lambda i: stats(*read(i))

    try:
        parts = map_chunks(len(chunks), make_worker, outer_intra_op_threads())
    except _ChunkCheckFailed as exc:
        raise_probability_error(y_pred, exc.err)
    counts = torch.zeros(size, dtype=torch.int64)
    sums = torch.zeros(size, dtype=torch.float64)
    for part in parts:  # in chunk order: the float64 sums do not depend on the thread count
        counts += part[0]
        sums += part[1]
    if top:
        pairs = counts.view(groups, width, 2)
        stats = torch.stack(
            [pairs.sum(-1).double(), sums.view(groups, width, 2).sum(-1), pairs[..., 1].double()],
            dim=-1,
        )
    else:
        hits = torch.zeros(size, dtype=torch.int64)
        for part in parts:
            hits += part[2]
        stats = torch.stack([counts.double(), sums, hits.double()], dim=-1).view(groups, width, 3)
    stats[:, 1] += stats[:, 0]  # a confidence of exactly 0 belongs to the first bin
    return stats[:, 1:].contiguous()


def _chunk_statistics(
    dtype: torch.dtype,
    top: bool,
    num_classes: int,
    num_bins: int,
    size: int,
    check: bool,
    tol: float,
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """The per-chunk step of :func:`chunked_equal_width_statistics` (one per thread).

    Returns ``f(x, row_sums, lab) -> (counts, sums[, hits])`` over the ``size`` keys; raises
    :class:`_ChunkCheckFailed` when ``check`` is on and the chunk fails the probability checks.
    """
    width = num_bins + 1
    key_dtype = torch.int32 if size < 2**31 else torch.int64
    # slots (and keys assembled from them) are exact whole floats below 2**24 in float32
    slot_dtype = dtype
    if num_bins >= 2**24 and slot_dtype != torch.float64:
        slot_dtype = torch.float64  # ceil(q * M) itself needs the wider type (see above)
    float_keys = size < (2**24 if slot_dtype == torch.float32 else 2**53)
    if not top:  # class * (M + 1) per row of a (K, n) block
        offsets = torch.arange(0, size, width, dtype=slot_dtype).unsqueeze(1)
    state: dict[object, torch.Tensor] = {}  # this thread's scratch block and aranges

    def step(
        x: torch.Tensor, row_sums: torch.Tensor | None, lab: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        n = x.shape[1]
        conf = torch.amax(x, 0) if top else x
        if check:
            # amin, not aminmax (which copies a strided dense block first); the largest value
            # is the largest row maximum. One read-back per chunk; NaN fails every comparison
            hi = conf.amax() if top else x.amax()
            lo, hi, slo, shi = torch.stack([x.amin(), hi, *torch.aminmax(row_sums)]).tolist()
            err = max(1.0 - slo, shi - 1.0)
            if not (lo >= 0 and hi <= 1) or err > tol:
                raise _ChunkCheckFailed(err)
        if top:
            tmp = state.get("tmp")
            if tmp is None or tmp.shape != x.shape:
                tmp = state["tmp"] = torch.empty(x.shape, dtype=x.dtype)
            # sign(p - max): 0 for the maximal class(es), -1 elsewhere (exact subtraction)
            if float(torch.sub(x, conf, out=tmp).sign_().sum()) == -(num_classes - 1) * n:
                delta = torch.sub(_label_entries(x, lab, state), conf).sign_()  # 0 correct, -1 not
            else:  # a tied row maximum (or a flushed difference): the exact first-index argmax
                delta = (x.max(0).indices == lab).to(x.dtype).sub_(1)
            q = conf
        else:
            q = x
        slots = torch.mul(q, num_bins) if slot_dtype == q.dtype else q.to(slot_dtype)
        if slot_dtype != q.dtype:
            slots.mul_(num_bins)
        slots.ceil_()
        if float_keys:
            if top:  # 2 * slot + correct = 2 * slot + delta + 1
                key = torch.add(delta.to(slot_dtype), slots, alpha=2).add_(1).to(key_dtype)
            else:
                key = slots.add_(offsets).to(key_dtype)
        else:  # integer arithmetic for very many bins
            key = slots.to(key_dtype)
            if top:
                key.mul_(2).add_(delta.to(key_dtype)).add_(1)
            else:
                key.add_(offsets.to(key_dtype))
        flat = key.reshape(-1)
        counts = torch.bincount(flat, minlength=size)
        # the float64 sums of a weighted bincount (the same additions in the same order), but
        # ~2x faster: scatter_add_ skips bincount's min / max passes and its slow weighted loop
        sums = torch.zeros(size, dtype=torch.float64).scatter_add_(
            0, flat.long(), q.double().reshape(-1)
        )
        if top:
            return counts, sums
        hits = torch.bincount(_label_entries(key, lab, state), minlength=size)
        return counts, sums, hits

    return step
