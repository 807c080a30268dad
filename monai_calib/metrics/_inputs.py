# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Input normalisation shared by the functional calibration metrics (private).

Two layouts are accepted everywhere, with the class (or label) axis at dim 1:

- classification: ``y_pred`` of shape ``(B, K)``;
- dense: ``y_pred`` of shape ``(B, K, *spatial)``, where every voxel is one sample.

Two kinds of targets:

- *multiclass* (softmax outputs, one class per sample): class indices of shape ``(B, *spatial)``
  or ``(B, 1, *spatial)`` (integer, or float holding whole numbers), or one-hot of ``y_pred``'s
  shape. They are returned as ``long`` indices of shape ``(B, *spatial)``.
- *multilabel* (sigmoid outputs, one binary label per class): multi-hot of ``y_pred``'s shape,
  returned as a float tensor. ``K = 1`` (a binary problem with one sigmoid output) is allowed.

The inputs are never permuted or copied more than needed: the metrics bin every voxel in its
native layout and only flatten at the very end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from monai_calib._utils.validation import accumulation_dtype, check_finite, normalize_class_target

__all__ = [
    "check_num_bins",
    "check_option",
    "prepare_multiclass",
    "prepare_multilabel",
    "raise_probability_error",
    "sum_tolerance",
]


def check_option(value: str, name: str, choices: Sequence[str]) -> str:
    """Validate a string option (``Literal`` / ``StrEnum`` value) against its valid choices.

    Returns:
        The option as a plain ``str`` (``StrEnum`` members are converted).

    Raises:
        ValueError: when ``value`` is not one of ``choices``; the message lists the valid choices.
    """
    v = value.value if hasattr(value, "value") else value
    if not isinstance(v, str) or v not in choices:
        raise ValueError(
            f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}."
        )
    return v


def check_num_bins(num_bins: int) -> int:
    """Validate the number of bins (a positive ``int``, bools rejected)."""
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}.")
    return num_bins


def sum_tolerance(dtype: torch.dtype, num_classes: int) -> float:
    """Absolute tolerance on ``|sum_k p_k - 1|`` for probability rows of the given dtype.

    ``max(1e-3, K * eps(dtype))``: 1e-3 for float32/float64 (softmax rounding is far below it),
    larger for half precision, where each of the ``K`` terms carries its own rounding error.
    """
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return max(1e-3, num_classes * eps)


def _check_y_pred(y_pred: torch.Tensor, min_classes: int) -> None:
    if not isinstance(y_pred, torch.Tensor):
        raise TypeError(f"y_pred must be a torch.Tensor, got {type(y_pred).__name__}.")
    if not y_pred.is_floating_point():
        raise TypeError(
            f"y_pred must be a floating point tensor of probabilities (or logits with "
            f"logits=True), got dtype {y_pred.dtype}."
        )
    if y_pred.ndim < 2:
        raise ValueError(
            "y_pred must have shape (B, K) or (B, K, *spatial) with the classes in dim 1, got "
            f"shape {tuple(y_pred.shape)}."
        )
    if y_pred.shape[1] < min_classes:
        raise ValueError(
            f"y_pred must have at least {min_classes} classes in dim 1 for this target, got shape "
            f"{tuple(y_pred.shape)}."
        )


def _check_probabilities(p: torch.Tensor) -> None:
    """One ``aminmax`` pass: values must be finite and in [0, 1] (NaN fails both comparisons)."""
    if p.numel() == 0:
        return
    lo, hi = torch.aminmax(p)
    if not (bool(lo >= 0) and bool(hi <= 1)):
        check_finite(p, "y_pred")
        raise ValueError(
            "y_pred must hold probabilities in [0, 1] (pass logits=True for raw network outputs), "
            f"got values in [{float(lo):.6g}, {float(hi):.6g}]."
        )


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
        and ``labels`` as ``long`` of shape ``(B, *spatial)``.

    Raises:
        TypeError: non-tensor or non-floating ``y_pred``; boolean or non-tensor ``y``.
        ValueError: fewer than 2 classes, bad ``y`` shape, labels outside ``[0, K)``, non-finite
            values, probabilities outside [0, 1] or rows that do not sum to 1.
    """
    _check_y_pred(y_pred, min_classes=2)
    in_dtype = y_pred.dtype  # the sum tolerance is the input's (bf16 rows carry bf16 rounding)
    y_pred = _to_float(y_pred)
    num_classes = y_pred.shape[1]
    labels = _normalize_dense_labels(y, y_pred.shape)
    if labels.device != y_pred.device:
        labels = labels.to(y_pred.device)
    if logits:
        check_finite(y_pred, "y_pred")
        return torch.softmax(y_pred, dim=1), labels
    if check_probs:
        _check_probabilities(y_pred)
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
    _check_probabilities(y_pred)
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
        ``probs`` and ``targets`` (float, same shape).
    """
    _check_y_pred(y_pred, min_classes=1)
    y_pred = _to_float(y_pred)
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}.")
    if tuple(y.shape) != tuple(y_pred.shape):
        raise ValueError(
            "y must be multi-hot (0/1) with the same shape as y_pred "
            f"{tuple(y_pred.shape)}, got shape {tuple(y.shape)}."
        )
    t = y if y.is_floating_point() else y.to(y_pred.dtype)
    if t.numel() > 0:
        lo, hi = torch.aminmax(t)
        if not (bool(lo >= 0) and bool(hi <= 1)) or not bool(((t == 0) | (t == 1)).all()):
            bad = t[~((t == 0) | (t == 1))]
            raise ValueError(
                f"y must be binary (0/1) multi-hot labels, got non-binary values such as "
                f"{bad[:3].tolist()}."
            )
    if t.device != y_pred.device:
        t = t.to(y_pred.device)
    if logits:
        check_finite(y_pred, "y_pred")
        return torch.sigmoid(y_pred), t
    _check_probabilities(y_pred)
    return y_pred, t


def _normalize_dense_labels(y: torch.Tensor, pred_shape: torch.Size) -> torch.Tensor:
    """Class indices ``(B, *spatial)`` (long) from indices or one-hot, for any number of dims."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}.")
    if y.dtype == torch.bool:
        raise TypeError("y must hold class indices or one-hot rows, got dtype torch.bool.")
    batch, num_classes, spatial = pred_shape[0], pred_shape[1], tuple(pred_shape[2:])
    if len(pred_shape) == 2:
        if y.ndim == 1 and not y.is_floating_point() and y.shape[0] == batch and batch > 0:
            # fast path for integer indices (B,): one aminmax pass instead of min + max
            lo, hi = torch.aminmax(y)
            if 0 <= int(lo) and int(hi) < num_classes:
                return y.long()
        # (B, K): the shared classification rule ((B,), (B, 1) or one-hot (B, K)).
        return normalize_class_target(y, num_classes, batch_size=batch, name="y")
    shape = tuple(y.shape)
    if shape == tuple(pred_shape):
        # one-hot <=> entries >= 0, every voxel's max is 1 and its sum is 1
        top = y.amax(dim=1)  # no indices: max(dim=1) with indices is several times slower
        ok = y.numel() == 0 or (
            bool(y.amin() >= 0) and bool((top == 1).all()) and bool((y.sum(dim=1) == 1).all())
        )
        if not ok:
            raise ValueError(
                f"y of shape {shape} is read as one-hot over dim 1 (K={num_classes}) and every "
                "voxel must hold exactly one 1 and zeros elsewhere; soft or multi-hot targets "
                'are not supported here (use target="marginal" for multi-label).'
            )
        idx = _one_hot_index(y)
    elif shape == (batch, 1, *spatial):
        idx = y[:, 0]
    elif shape == (batch, *spatial):
        idx = y
    else:
        raise ValueError(
            f"y must be class indices of shape {(batch, *spatial)} or {(batch, 1, *spatial)}, or "
            f"one-hot of shape {tuple(pred_shape)}, got shape {shape}."
        )
    if idx.is_floating_point():
        if not bool(torch.isfinite(idx).all()) or not bool((idx == idx.round()).all()):
            raise ValueError(
                "y holds float values that are not whole class indices; expected integers in "
                f"[0, {num_classes - 1}]."
            )
    idx = idx.long()
    if idx.numel() > 0:
        lo, hi = torch.aminmax(idx)
        if int(lo) < 0 or int(hi) >= num_classes:
            raise ValueError(
                f"y class indices must be in [0, {num_classes - 1}], got values in "
                f"[{int(lo)}, {int(hi)}]."
            )
    return idx


def _one_hot_index(y: torch.Tensor) -> torch.Tensor:
    """Class index of every voxel of a validated dense one-hot ``y`` ``(B, K, *spatial)``.

    Each voxel holds a single entry equal to 1 and entries >= 0 summing to exactly 1, so the
    others are zeros or values too small to change a float sum with 1. On the CPU the index is
    the product ``[0, 1, ..., K-1] @ y`` (one batched matrix product instead of the slow
    ``max(dim=1)`` with indices): it is ``k + d`` with ``0 <= d < 1`` (``d = 0`` for a true
    one-hot), rounded toward ``k`` by the integer conversion, so it equals ``argmax``.
    """
    exact_matmul = (
        y.dtype in (torch.float32, torch.float64)
        and y.device.type == "cpu"
        and torch.get_float32_matmul_precision() == "highest"
        and y.shape[1] <= 2**20
    )
    if not exact_matmul:
        return y.argmax(dim=1)
    batch, num_classes = y.shape[0], y.shape[1]
    weights = torch.arange(num_classes, dtype=y.dtype).view(1, num_classes)
    idx = torch.matmul(weights, y.reshape(batch, num_classes, -1))
    return idx.reshape(batch, *y.shape[2:]).long()
