# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Metric-specific input preparation (private): probabilities from ``y_pred``, and row sums.

The rules themselves (what a class-score tensor, a class target or a multi-hot target may look
like) live in :mod:`monai_calib._utils.validation`; this module adds what only the metrics need:
``logits=True`` (softmax / sigmoid applied here), the float32 promotion of half inputs, and the
check that softmax rows sum to 1 within a dtype-dependent tolerance.

Metrics are not differentiable: :func:`detach` drops the autograd history of the inputs at the
entry of every metric (binning and counting have no gradient, and a graph kept alive by a
streamed statistic would hold the network's activations).

Two layouts are accepted, with the class (or label) axis at dim 1: ``(B, K)`` and
``(B, K, *spatial)``, where every voxel is one sample. The inputs are never permuted or copied
more than needed: the metrics bin every voxel in its native layout and only flatten at the end.
"""

from __future__ import annotations

import torch

from monai_calib._utils.validation import (
    accumulation_dtype,
    check_class_scores,
    check_finite,
    check_multilabel_target,
    check_probabilities,
    normalize_dense_class_target,
)

__all__ = [
    "detach",
    "prepare_multiclass",
    "prepare_multilabel",
    "raise_probability_error",
    "sum_tolerance",
]


def sum_tolerance(dtype: torch.dtype, num_classes: int) -> float:
    """Absolute tolerance on ``|sum_k p_k - 1|`` for probability rows of the given dtype.

    ``max(1e-3, K * eps(dtype))``: 1e-3 for float32/float64 (softmax rounding is far below it),
    larger for half precision, where each of the ``K`` terms carries its own rounding error.
    """
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return max(1e-3, num_classes * eps)


def detach(x: object) -> object:
    """``x.detach()`` for a tensor (the metrics take no gradient), ``x`` unchanged otherwise.

    Without it an input with ``requires_grad=True`` would build a graph through every metric
    step and break the ``out=`` kernels of the CPU fast path (autograd rejects ``out=``).
    """
    return x.detach() if isinstance(x, torch.Tensor) else x


def _to_float(y_pred: torch.Tensor) -> torch.Tensor:
    dtype = accumulation_dtype(y_pred)
    return y_pred if y_pred.dtype == dtype else y_pred.to(dtype)


def prepare_multiclass(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    logits: bool = False,
    check_sum: bool = True,
    check_probs: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate softmax-type inputs; return ``(probs, labels)``.

    Args:
        y_pred: probabilities ``(B, K[, *spatial])`` (rows sum to 1 over dim 1), or logits when
            ``logits=True`` (softmax over dim 1 is applied here).
        y: class indices ``(B[, *spatial])`` / ``(B, 1[, *spatial])`` or one-hot of ``y_pred``'s
            shape.
        logits: whether ``y_pred`` holds logits.
        check_sum: verify that probability rows sum to 1 (within :func:`sum_tolerance`).
        check_probs: run the probability checks (range, and the row sums if ``check_sum``)
            here. ``False`` is for callers that compute the same quantities in their own fused
            pass and call :func:`raise_probability_error` when they fail (ignored with
            ``logits=True``, whose finiteness check always runs here).

    Returns:
        ``probs`` with ``y_pred``'s shape (float32 for half inputs, the input dtype otherwise)
        and ``labels`` as ``long`` of shape ``(B, *spatial)``, both detached (no autograd).

    Raises:
        TypeError: non-tensor or non-floating ``y_pred``; boolean or non-tensor ``y``.
        ValueError: fewer than 2 classes, bad ``y`` shape, labels outside ``[0, K)``, non-finite
            values, probabilities outside [0, 1] or rows that do not sum to 1.
    """
    check_class_scores(y_pred, "y_pred", min_classes=2)
    y_pred, y = detach(y_pred), detach(y)
    in_dtype = y_pred.dtype  # the sum tolerance is the input's (bf16 rows carry bf16 rounding)
    y_pred = _to_float(y_pred)
    num_classes = y_pred.shape[1]
    labels = normalize_dense_class_target(y, y_pred.shape, name="y")
    if labels.device != y_pred.device:
        labels = labels.to(y_pred.device)
    if logits:
        check_finite(y_pred, "y_pred")
        return torch.softmax(y_pred, dim=1), labels
    if check_probs:
        check_probabilities(y_pred, "y_pred")
        if check_sum and y_pred.numel() > 0:
            err, tol = _row_sum_error(y_pred), sum_tolerance(in_dtype, num_classes)
            if err > tol:
                _raise_sum_error(err, tol)
    return y_pred, labels


def _row_sum_error(y_pred: torch.Tensor) -> float:
    """``max |sum_k p_k - 1|`` over the rows (voxels) of ``y_pred`` (non-empty)."""
    if y_pred.ndim == 2:  # a matrix-vector product beats sum(dim=1) over a short inner dim
        ones = torch.ones(y_pred.shape[1], dtype=y_pred.dtype, device=y_pred.device)
        row_sums = y_pred @ ones
    else:
        row_sums = y_pred.sum(dim=1)
    lo, hi = torch.aminmax(row_sums)
    return max(1.0 - float(lo), float(hi) - 1.0)


def _raise_sum_error(err: float, tol: float) -> None:
    raise ValueError(
        "y_pred holds probabilities that do not sum to 1 over dim 1 (classes): the "
        f"largest |sum - 1| is {err:.3g}, above the tolerance {tol:.3g}. Pass "
        "logits=True for raw network outputs, normalise the probabilities, or use "
        'target="marginal" for independent (sigmoid, multi-label) probabilities.'
    )


def raise_probability_error(y_pred: torch.Tensor, sum_err: float, check_sum: bool = True) -> None:
    """Raise the error of :func:`prepare_multiclass`'s probability checks for ``y_pred``.

    For callers that ran the checks in their own fused pass (``check_probs=False``) and found a
    violation: the whole tensor is checked again in :func:`prepare_multiclass`'s order (NaN/Inf,
    then the [0, 1] range, then the row sums) so that the same error, with the same message, is
    raised. ``sum_err`` is the caller's ``max |sum - 1|``; it is reported if the recomputed row
    sums (rounded differently) happen to fall within the tolerance.

    Raises:
        ValueError: always.
    """
    tol = sum_tolerance(y_pred.dtype, y_pred.shape[1])  # the input's dtype, as above
    y_pred = _to_float(y_pred)
    check_probabilities(y_pred, "y_pred")
    err = _row_sum_error(y_pred) if check_sum and y_pred.numel() > 0 else sum_err
    _raise_sum_error(err if err > tol else sum_err, tol)


def prepare_multilabel(
    y_pred: torch.Tensor, y: torch.Tensor, logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate sigmoid-type (multi-label / binary) inputs; return ``(probs, targets)``.

    Args:
        y_pred: per-label probabilities ``(B, K[, *spatial])`` (``K >= 1``), or logits when
            ``logits=True`` (sigmoid is applied here).
        y: multi-hot targets of ``y_pred``'s shape with values in {0, 1}.

    Returns:
        ``probs`` and ``targets`` (float, same shape), detached (no autograd).
    """
    check_class_scores(y_pred, "y_pred", min_classes=1)
    y_pred, y = detach(y_pred), detach(y)
    y_pred = _to_float(y_pred)
    t = check_multilabel_target(
        y, y_pred.shape, name="y", input_name="y_pred", dtype=y_pred.dtype, device=y_pred.device
    )
    if logits:
        check_finite(y_pred, "y_pred")
        return torch.sigmoid(y_pred), t
    check_probabilities(y_pred, "y_pred")
    return y_pred, t
