# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Binned calibration errors (ECE, ACE, SCE, MCE, RMSCE) as functions and sufficient statistics.

Everything here is built on one object, the per-bin *sufficient statistics*
``stats[c, b] = [n_cb, sum of confidences, sum of correctness]`` of shape ``(C, M, 3)``
(float64). Statistics of different batches, images or ranks simply add, so a pooled
(dataset-level) calibration error over millions of voxels is exact at fixed memory:

.. code-block:: python

    stats = sum(calibration_statistics(p, y) for p, y in loader)
    ece = calibration_error_from_statistics(stats)

Bin convention (equal-width, ``M`` bins): right-closed bins :math:`(l_b, u_b]` with
:math:`u_b = (b+1)/M`, except that a confidence of exactly 0 belongs to the first bin. The bin
index of a confidence :math:`c` is :math:`\\min(\\max(\\lceil cM\\rceil - 1, 0), M - 1)`,
computed in the input's floating point precision; 0.0 falls in bin 0 and 1.0 in bin ``M - 1``;
there is never an extra bin (unlike torchmetrics 1.9, issue #3510). This matches the right-closed
bins of the LS+ reference code (spec §6.4).
"""

from __future__ import annotations

import warnings

import torch
from monai.utils import look_up_option

from monai_calib._utils.validation import check_num_bins
from monai_calib.enums import Binning, CalibrationNorm, CalibrationReduction, CalibrationTarget

from ._inputs import (
    prepare_multiclass,
    prepare_multilabel,
    raise_probability_error,
    sum_tolerance,
)

__all__ = [
    "calibration_error",
    "calibration_error_from_statistics",
    "calibration_statistics",
]


def _equal_width_codes(p: torch.Tensor, num_bins: int) -> torch.Tensor:
    """``ceil(p * M)`` in ``[0, M]`` as a float tensor (``M + 1`` slots; 0 and 1 merge later).

    Slot ``j = ceil(pM)`` holds the confidences in ``((j-1)/M, j/M]``; a confidence of exactly 0
    lands in slot 0, which :func:`_accumulate` folds into the first bin, so bin ``b`` is slot
    ``max(j, 1) - 1``, i.e. ``clamp(ceil(pM) - 1, 0, M - 1)``. Folding after the ``bincount``
    saves two elementwise passes over the samples.
    """
    if num_bins >= 2**24 and p.dtype != torch.float64:
        p = p.double()  # float32 represents whole numbers exactly only up to 2**24
    # inputs are validated to lie in [0, 1] (softmax/sigmoid outputs too), so no clamp is needed
    return torch.mul(p, num_bins).ceil_()


def _int_codes(slots: torch.Tensor, size: int) -> torch.Tensor:
    """Whole-number slot codes as int32 (half the memory traffic of int64) when they fit."""
    return slots.to(torch.int32 if size < 2**31 else torch.int64)


def _accumulate(
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


def _chunks(probs: torch.Tensor, labels: torch.Tensor):
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


def _fast_equal_width(
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
    (first maximal class, as documented). Results equal those of the unchunked path (counts
    are the same integers; sums are float64, added chunk-wise).
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


def _class_view(x: torch.Tensor) -> torch.Tensor:
    """``(B, K, *spatial)`` -> ``(K, N)`` with every voxel a column (a view for ``(B, K)``)."""
    return x.movedim(1, 0).reshape(x.shape[1], -1)


def _equal_mass_bins(values: torch.Tensor, num_bins: int) -> torch.Tensor:
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


def _fast_path_ok(y_pred: object) -> bool:
    """The chunked path is for CPU tensors (a GPU prefers few large kernels)."""
    return isinstance(y_pred, torch.Tensor) and y_pred.device.type == "cpu"


def calibration_statistics(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    num_bins: int = 15,
    target: CalibrationTarget | str = "top_label",
    logits: bool = False,
    binning: Binning | str = "equal_width",
) -> torch.Tensor:
    """Per-bin sufficient statistics ``[count, sum of confidences, sum of correctness]``.

    For group :math:`c` and bin :math:`b` (set of samples :math:`B_{cb}`):

    .. math::

        S_{cb} = \\Big[\\, |B_{cb}|,\\ \\sum_{i \\in B_{cb}} q_{ic},\\
        \\sum_{i \\in B_{cb}} a_{ic} \\,\\Big]

    where, per ``target``:

    - ``"top_label"`` (``C = 1``): :math:`q_i = \\max_k p_{ik}` and
      :math:`a_i = 1[\\arg\\max_k p_{ik} = y_i]` (argmax ties: the first maximal class);
    - ``"classwise"`` (``C = K``, one-vs-rest of a softmax): :math:`q_{ik} = p_{ik}`,
      :math:`a_{ik} = 1[y_i = k]`;
    - ``"marginal"`` (``C = K``, multi-label sigmoid outputs): :math:`q_{ik} = p_{ik}`,
      :math:`a_{ik} = y_{ik}`.

    Equal-width statistics are additive: the statistics of a concatenation of batches are the sum
    of the batches' statistics, which is how the metric streams and reduces over DDP ranks.
    Computed from one flattened ``(c, bin)`` index per (sample, group) pair, binned in the
    input's precision (float32 for float32/half inputs): ``bincount`` for the counts and the
    correctness sums, weighted ``bincount`` for the confidence sums (float64 accumulation),
    without any Python loop over bins or classes and without materialising a one-hot. On the
    CPU, softmax-type equal-width statistics are computed in one pass over cache-sized blocks
    that also runs the input checks (see ``_fast_equal_width``); counts are the same integers.

    Args:
        y_pred: probabilities (or logits with ``logits=True``), class axis at dim 1.
        y: labels, see Inputs.
        num_bins: number of bins ``M``. Defaults to 15.
        target: ``"top_label"`` (default), ``"classwise"`` or ``"marginal"``.
        logits: ``y_pred`` holds logits: softmax over dim 1 (sigmoid for ``"marginal"``).
        binning: ``"equal_width"`` (default; bins :math:`(b/M, (b+1)/M]`, 0.0 in the first bin,
            additive across batches) or ``"equal_mass"`` (see :func:`calibration_error`; these
            statistics describe one fixed set of samples and must **not** be summed across
            batches).

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)``; every voxel is a sample. ``K >= 2``
          for ``"top_label"``/``"classwise"`` (rows sum to 1), ``K >= 1`` for ``"marginal"``.
        - ``y``: for ``"top_label"``/``"classwise"`` class indices ``(B, *spatial)`` or
          ``(B, 1, *spatial)``, or one-hot of ``y_pred``'s shape; for ``"marginal"`` multi-hot of
          ``y_pred``'s shape.

    Returns:
        float64 tensor of shape ``(C, num_bins, 3)`` on ``y_pred``'s device.

    Raises:
        ValueError: invalid option, shapes, labels or probabilities (see
            :func:`calibration_error`).
        TypeError: non-tensor inputs, non-floating ``y_pred``, boolean class indices.
    """
    target = look_up_option(target, CalibrationTarget)
    binning = look_up_option(binning, Binning)
    num_bins = check_num_bins(num_bins)

    if target == "marginal":
        probs, truth = prepare_multilabel(y_pred, y, logits=logits)
    else:
        fast = binning == "equal_width" and _fast_path_ok(y_pred)
        probs, labels = prepare_multiclass(y_pred, y, logits=logits, check_probs=not fast)
        if fast and probs.numel() > 0:
            return _fast_equal_width(y_pred, probs, labels, target, num_bins, check=not logits)

    width = num_bins + 1
    if target == "top_label":
        conf, pred = probs.max(dim=1)
        if binning == "equal_width":
            codes = _int_codes(_equal_width_codes(conf, num_bins), width)
        else:
            codes = _equal_mass_bins(conf.reshape(1, -1), num_bins).add_(1).view(conf.shape)
        wrong = torch.tensor(width, dtype=codes.dtype, device=codes.device)  # out-of-range slot
        return _accumulate(codes, conf, torch.where(pred == labels, codes, wrong), 1, num_bins)

    num_classes = probs.shape[1]
    size = num_classes * width
    if binning == "equal_width":
        conf, class_dim = probs, 1
        slots = _equal_width_codes(probs, num_bins)
        if size >= 2**24:
            slots = slots.double()  # keep the class offsets exact
        offset_shape = (1, num_classes) + (1,) * (probs.ndim - 2)
        offsets = torch.arange(0, size, width, device=probs.device, dtype=slots.dtype)
        codes = _int_codes(slots.add_(offsets.view(offset_shape)), size)
    else:
        conf, class_dim = _class_view(probs), 0
        offsets = torch.arange(1, size, width, device=probs.device).unsqueeze(1)
        codes = _equal_mass_bins(conf, num_bins).add_(offsets)
    if target == "classwise":
        # exactly one class per sample is "correct": its code is gathered, not searched for
        true = labels.unsqueeze(1) if class_dim == 1 else labels.reshape(1, -1)
        correct_codes = codes.gather(class_dim, true)
    else:
        truth = truth if class_dim == 1 else _class_view(truth)
        wrong = torch.tensor(size, dtype=codes.dtype, device=codes.device)  # out-of-range slot
        correct_codes = torch.where(truth.bool(), codes, wrong)
    return _accumulate(codes, conf, correct_codes, num_classes, num_bins)


def calibration_error_from_statistics(
    stats: torch.Tensor,
    *,
    reduction: CalibrationReduction | str = "expected",
    norm: CalibrationNorm | str = "l1",
    average: bool = True,
) -> torch.Tensor:
    """Calibration error from per-bin sufficient statistics (see :func:`calibration_statistics`).

    With :math:`n_{cb}` samples in bin :math:`b` of group :math:`c`,
    :math:`N_c = \\sum_b n_{cb}`, bin accuracy :math:`\\mathrm{acc}_{cb}` and mean confidence
    :math:`\\mathrm{conf}_{cb}`, :math:`g_{cb} = |\\mathrm{acc}_{cb} - \\mathrm{conf}_{cb}|`, and
    :math:`\\mathcal{B}_c` the non-empty bins:

    .. math::

        \\text{expected, l1 (ECE)}:\\ \\sum_b \\frac{n_{cb}}{N_c} g_{cb} \\qquad
        \\text{expected, l2 (RMSCE)}:\\ \\sqrt{\\sum_b \\frac{n_{cb}}{N_c} g_{cb}^2}

        \\text{average, l1}:\\ \\frac{1}{|\\mathcal{B}_c|}\\sum_{b\\in\\mathcal{B}_c} g_{cb} \\qquad
        \\text{average, l2}:\\ \\sqrt{\\frac{1}{|\\mathcal{B}_c|}
        \\sum_{b\\in\\mathcal{B}_c} g_{cb}^2}

        \\text{maximum (MCE)}:\\ \\max_{b\\in\\mathcal{B}_c} g_{cb}
        \\quad(\\text{the same for l1 and l2, } \\max_b \\sqrt{g^2} = \\max_b g)

    Empty bins are excluded (their weight is 0 for ``"expected"``; they are skipped by
    ``"average"`` and ``"maximum"``). A group without any sample gives NaN. ``expected``/``l2``
    is torchmetrics' ``norm="l2"`` (without debiasing); ``maximum`` is torchmetrics'
    ``norm="max"``.

    Multi-label reductions built on these statistics: *macro* = the mean of the per-label errors
    (``average=True``); *micro* = pool the statistics over labels first,
    ``calibration_error_from_statistics(stats.sum(0, keepdim=True))``, i.e. every
    (sample, label) pair is one sample of a single reliability diagram; *prevalence-weighted* =
    weight the per-label errors of ``average=False`` by label prevalence.

    Args:
        stats: ``(C, M, 3)`` statistics (``(M, 3)`` is read as ``C = 1``); they may be the sum of
            the statistics of many batches.
        reduction: bin reduction ``"expected"`` (default), ``"average"`` or ``"maximum"``.
        norm: ``"l1"`` (default) or ``"l2"``.
        average: return the mean over the ``C`` groups (default; for ``C = 1`` the top-label
            value, for ``"classwise"`` the static calibration error SCE) or, if False, the
            per-group errors of shape ``(C,)``.

    Returns:
        float64 tensor: 0-d if ``average`` else ``(C,)``. NaN when a group has no sample (with
        ``average=True`` a NaN group makes the mean NaN).

    Raises:
        ValueError: bad ``stats`` shape, negative counts, or an invalid option.
        TypeError: ``stats`` is not a tensor.
    """
    reduction = look_up_option(reduction, CalibrationReduction)
    norm = look_up_option(norm, CalibrationNorm)
    if not isinstance(stats, torch.Tensor):
        raise TypeError(f"stats must be a torch.Tensor, got {type(stats).__name__}.")
    if stats.ndim == 2:
        stats = stats.unsqueeze(0)
    if stats.ndim != 3 or stats.shape[-1] != 3 or stats.shape[1] < 1:
        raise ValueError(
            "stats must have shape (C, num_bins, 3) holding [count, sum of confidences, sum of "
            f"correctness] per bin, got shape {tuple(stats.shape)}."
        )
    stats = stats.double()
    count, sum_conf, sum_correct = stats.unbind(-1)
    if bool((count < 0).any()):
        raise ValueError("stats holds negative bin counts; expected counts >= 0.")
    nonempty = count > 0
    total = count.sum(-1)
    diff = sum_correct - sum_conf  # n_b * (acc_b - conf_b)
    safe = torch.where(nonempty, count, torch.ones_like(count))
    gap = torch.where(nonempty, diff.abs() / safe, torch.zeros_like(count))
    nan = torch.full_like(total, float("nan"))
    if reduction == "expected":
        if norm == "l1":
            per = diff.abs().sum(-1) / total
        else:
            per = torch.sqrt((gap * gap * count).sum(-1) / total)
    elif reduction == "average":
        n_nonempty = nonempty.sum(-1).double()
        if norm == "l1":
            per = gap.sum(-1) / n_nonempty
        else:
            per = torch.sqrt((gap * gap).sum(-1) / n_nonempty)
    else:
        per = torch.where(nonempty, gap, torch.full_like(gap, -1.0)).amax(-1)
    if not bool((total > 0).any()):
        warnings.warn("calibration error: no samples in any bin; the result is NaN.", stacklevel=2)
    per = torch.where(total > 0, per, nan)
    return per.mean() if average else per


def calibration_error(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    num_bins: int = 15,
    binning: Binning | str = "equal_width",
    target: CalibrationTarget | str = "top_label",
    reduction: CalibrationReduction | str = "expected",
    norm: CalibrationNorm | str = "l1",
    logits: bool = False,
) -> torch.Tensor:
    """Pooled binned calibration error (ECE / ACE / SCE / MCE / RMSCE) over all samples.

    Three independent axes name the estimator (the name "ACE" is ambiguous in the literature:
    *adaptive* = ``binning="equal_mass"``, *average* = ``reduction="average"``):

    - ``binning``: ``"equal_width"`` bins :math:`(b/M, (b+1)/M]` (0.0 in the first bin, 1.0 in
      the last, no extra bin) or ``"equal_mass"`` (adaptive, Nixon et al. 2019): per group, the
      samples are ranked by confidence and sample of rank :math:`r` goes to bin
      :math:`\\lfloor rM/N \\rfloor`, so bins hold :math:`\\lfloor N/M\\rfloor` or
      :math:`\\lceil N/M\\rceil` samples with the remainder spread evenly; tied confidences share
      the bin of their lowest rank, which keeps every sample in exactly one bin and makes the
      result independent of sample order (a large tie can leave later bins empty).
    - ``target``: ``"top_label"`` (max probability vs correctness of the argmax),
      ``"classwise"`` (static calibration error SCE: per class :math:`k`, :math:`p_k` vs
      :math:`1[y=k]`, then the mean over classes) or ``"marginal"`` (multi-label: each label's
      sigmoid probability vs its binary label, then the mean over labels).
    - ``reduction`` over bins and ``norm``: see :func:`calibration_error_from_statistics`.

    .. math::

        \\mathrm{ECE} = \\sum_{b=1}^{M} \\frac{n_b}{N}\\,
        \\big|\\mathrm{acc}_b - \\mathrm{conf}_b\\big|

    With ``binning="equal_width"`` this equals
    ``calibration_error_from_statistics(calibration_statistics(...))``.

    Args:
        y_pred: probabilities (rows summing to 1 over dim 1 for ``"top_label"`` /
            ``"classwise"``; independent per-label probabilities for ``"marginal"``), or logits
            with ``logits=True``.
        y: labels, see Inputs.
        num_bins: number of bins ``M``. Defaults to 15 (LS+ reference).
        binning: ``"equal_width"`` (default) or ``"equal_mass"``.
        target: ``"top_label"`` (default), ``"classwise"`` or ``"marginal"``.
        reduction: ``"expected"`` (default), ``"average"`` or ``"maximum"``.
        norm: ``"l1"`` (default) or ``"l2"``.
        logits: ``y_pred`` holds logits; softmax over dim 1 is applied (sigmoid for
            ``"marginal"``). Use it rather than passing unnormalised scores as probabilities.

    Inputs:
        - ``y_pred``: ``(B, K)`` classification or ``(B, K, *spatial)`` dense (every voxel is a
          sample; the result is pooled over all of them, unlike MONAI's per-image
          ``CalibrationErrorMetric``). ``K >= 2`` except for ``"marginal"`` (``K >= 1``).
        - ``y``: ``"top_label"``/``"classwise"``: class indices ``(B, *spatial)`` or
          ``(B, 1, *spatial)`` (integer or whole-number float) or one-hot of ``y_pred``'s shape;
          ``"marginal"``: multi-hot (0/1) of ``y_pred``'s shape.

    Returns:
        0-d float64 tensor; NaN when there is no sample (all bins empty).

    Raises:
        ValueError: an invalid option or ``num_bins``; ``y_pred`` with fewer than 2 dims or too
            few classes; ``y`` of the wrong shape, class indices outside ``[0, K)``, non-binary
            one-hot/multi-hot values; NaN/Inf; probabilities outside [0, 1]; softmax
            probabilities whose rows do not sum to 1 within ``max(1e-3, K * eps(dtype))``.
        TypeError: non-tensor inputs, non-floating ``y_pred``, boolean class indices.

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
        Nixon et al., "Measuring Calibration in Deep Learning", CVPR Workshops 2019.
        Kumar et al., "Verified Uncertainty Calibration", NeurIPS 2019 (l2 / RMSCE).
    """
    binning = look_up_option(binning, Binning)
    reduction = look_up_option(reduction, CalibrationReduction)
    norm = look_up_option(norm, CalibrationNorm)
    stats = calibration_statistics(
        y_pred, y, num_bins=num_bins, target=target, logits=logits, binning=binning
    )
    return calibration_error_from_statistics(stats, reduction=reduction, norm=norm)
