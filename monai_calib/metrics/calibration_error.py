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

from monai_calib._utils.threads import single_intra_op_thread
from monai_calib._utils.validation import check_num_bins, look_up_argument
from monai_calib.enums import Binning, CalibrationNorm, CalibrationReduction, CalibrationTarget

from ._calibration_kernels import (
    accumulate_statistics,
    binned_statistics,
    chunked_equal_width_statistics,
    class_view,
    correct_codes,
    equal_mass_bins,
    equal_width_codes,
    fast_path_ok,
)
from ._inputs import (
    detach,
    prepare_multiclass,
    prepare_multilabel,
)

__all__ = [
    "calibration_error",
    "calibration_error_from_statistics",
    "calibration_statistics",
]


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
    that also runs the input checks (see ``_calibration_kernels``); counts are the same integers.
    Not differentiable: inputs with ``requires_grad=True`` are detached (the result holds no
    autograd graph), at any number of intra-op threads.

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
    target = look_up_argument(target, CalibrationTarget, "target")
    binning = look_up_argument(binning, Binning, "binning")
    num_bins = check_num_bins(num_bins)
    y_pred, y = detach(y_pred), detach(y)  # not differentiable; the fast path uses out= kernels

    if target == "marginal":
        probs, truth = prepare_multilabel(y_pred, y, logits=logits)
        if binning == "equal_width":
            return binned_statistics(probs, truth.bool(), num_bins, group_dim=1)
    else:
        fast = binning == "equal_width" and fast_path_ok(y_pred)
        # the label checks too run their ops on one intra-op thread (see _utils.threads); the
        # chunk loop shares its chunks between as many Python threads as there were
        with single_intra_op_thread(fast):
            probs, labels = prepare_multiclass(y_pred, y, logits=logits, check_probs=not fast)
            if fast and probs.numel() > 0:
                return chunked_equal_width_statistics(
                    y_pred, probs, labels, target, num_bins, check=not logits
                )

    if target == "top_label":
        conf, pred = probs.max(dim=1)
        if binning == "equal_width":
            return binned_statistics(conf, pred == labels, num_bins)
        codes = equal_mass_bins(conf.reshape(1, -1), num_bins).add_(1).view(conf.shape)
        hits = correct_codes(codes, pred == labels, 1, num_bins)
        return accumulate_statistics(codes, conf, hits, 1, num_bins)

    num_classes = probs.shape[1]
    if binning == "equal_width":  # classwise (marginal returned above)
        conf, class_dim = probs, 1
        codes = equal_width_codes(probs, num_bins, group_dim=1)
    else:
        conf, class_dim = class_view(probs), 0
        size = num_classes * (num_bins + 1)
        offsets = torch.arange(1, size, num_bins + 1, device=probs.device).unsqueeze(1)
        codes = equal_mass_bins(conf, num_bins).add_(offsets)
    if target == "classwise":
        # exactly one class per sample is "correct": its code is gathered, not searched for
        true = labels.unsqueeze(1) if class_dim == 1 else labels.reshape(1, -1)
        hits = codes.gather(class_dim, true)
    else:
        hits = correct_codes(codes, class_view(truth).bool(), num_classes, num_bins)
    return accumulate_statistics(codes, conf, hits, num_classes, num_bins)


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
    reduction = look_up_argument(reduction, CalibrationReduction, "reduction")
    norm = look_up_argument(norm, CalibrationNorm, "norm")
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
    ``calibration_error_from_statistics(calibration_statistics(...))``. Not differentiable:
    inputs with ``requires_grad=True`` are detached (use a calibration loss to train).

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
    binning = look_up_argument(binning, Binning, "binning")
    reduction = look_up_argument(reduction, CalibrationReduction, "reduction")
    norm = look_up_argument(norm, CalibrationNorm, "norm")
    stats = calibration_statistics(
        y_pred, y, num_bins=num_bins, target=target, logits=logits, binning=binning
    )
    return calibration_error_from_statistics(stats, reduction=reduction, norm=norm)
