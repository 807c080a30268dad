# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Multi-label classification metrics: Hamming loss and rank-based ROC AUC (macro / micro).

Both take per-label probabilities (the caller applies the post-transform that matches the training
loss: :math:`q = \\sigma(z)^2` for LDACE, :math:`\\sigma(z)` for BCE); :func:`hamming_loss`, whose
threshold acts on the probability, also takes logits with ``activation="sigmoid"`` /
``"squared_sigmoid"``. The AUC is rank-based: a strictly increasing post-transform leaves it
unchanged (up to ties created by rounding).
"""

from __future__ import annotations

import warnings

import torch

from monai_calib._utils.validation import check_finite, check_multilabel_target, check_threshold

__all__ = ["hamming_loss", "multilabel_auc"]

_ACTIVATIONS = (None, "sigmoid", "squared_sigmoid")
_AVERAGES = ("macro", "micro", "none")


def _prepare(
    y_pred: torch.Tensor, y: torch.Tensor, activation: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(N, K)`` scores and a same-shape multi-hot target; return float64 tensors."""
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(_ACTIVATIONS)}, got {activation!r}.")
    if not isinstance(y_pred, torch.Tensor):
        raise TypeError(f"y_pred must be a torch.Tensor, got {type(y_pred).__name__}.")
    if not y_pred.is_floating_point():
        raise TypeError(f"y_pred must be a floating point tensor, got dtype {y_pred.dtype}.")
    if y_pred.ndim != 2 or y_pred.shape[0] == 0 or y_pred.shape[1] == 0:
        raise ValueError(
            f"y_pred must have shape (N, K) with N, K >= 1, got shape {tuple(y_pred.shape)}."
        )
    check_finite(y_pred, "y_pred")
    target = check_multilabel_target(y, y_pred.shape, name="y", input_name="y_pred").to(
        device=y_pred.device, dtype=torch.float64
    )
    scores = y_pred.detach().to(torch.float64)
    if activation == "sigmoid":
        scores = torch.sigmoid(scores)
    elif activation == "squared_sigmoid":
        scores = torch.sigmoid(scores).square()
    elif bool((scores < 0).any()) or bool((scores > 1).any()):
        raise ValueError(
            "y_pred must hold probabilities in [0, 1] when activation=None, got values in "
            f"[{float(scores.min())}, {float(scores.max())}]; pass activation='sigmoid' or "
            "'squared_sigmoid' for logits."
        )
    return scores, target


def hamming_loss(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    threshold: float = 0.5,
    activation: str | None = None,
) -> torch.Tensor:
    r"""Fraction of wrong label decisions in a multi-label prediction.

    .. math::

        \mathrm{HL} = \frac{1}{N K} \sum_{n=1}^{N} \sum_{k=1}^{K}
            \mathbb 1\big[\mathbb 1[q_{nk} \ge t] \ne y_{nk}\big]

    where :math:`q` are per-label probabilities and :math:`t` the threshold. For LDACE-trained
    models use :math:`q = \sigma(z)^2` (``activation="squared_sigmoid"`` on logits), as the
    LDACE reference saves; the threshold 0.5 on :math:`q` is the reconstructed protocol.

    Inputs:
        - **y_pred**: ``(N, K)`` probabilities in ``[0, 1]`` (``activation=None``) or logits.
        - **y**: ``(N, K)`` multi-hot labels in {0, 1}.
        - **output**: 0-d float64 tensor.

    Args:
        threshold: decision threshold on the probability (``q >= threshold`` is positive), a
            finite number in ``[0, 1]`` (also with an ``activation``: it applies after it).
            Defaults to ``0.5``.
        activation: ``None`` (inputs are probabilities), ``"sigmoid"`` or ``"squared_sigmoid"``
            (inputs are logits). Defaults to ``None``.

    Raises:
        TypeError: non-tensor or non-floating-point ``y_pred``, non-tensor ``y``, non-number
            ``threshold``.
        ValueError: wrong shapes, NaN/Inf scores, probabilities outside ``[0, 1]``, non-binary
            ``y``, unknown ``activation``, ``threshold`` NaN/Inf or outside ``[0, 1]``.
    """
    threshold = check_threshold(threshold)
    scores, target = _prepare(y_pred, y, activation)
    decisions = (scores >= threshold).to(torch.float64)
    return (decisions != target).to(torch.float64).mean()


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-d tensor, tied values sharing the mean of their ranks."""
    _, inverse, counts = torch.unique(x, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, dim=0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1.0) / 2.0
    return avg[inverse]


def _binary_auc(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mann-Whitney ROC AUC of one label; NaN when only one class is present."""
    n_pos = target.sum()
    n_neg = target.numel() - n_pos
    if float(n_pos) == 0.0 or float(n_neg) == 0.0:
        return scores.new_tensor(float("nan"))
    rank_sum = (_average_ranks(scores) * target).sum()
    return (rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)


def multilabel_auc(
    y_pred: torch.Tensor, y: torch.Tensor, *, average: str = "macro"
) -> torch.Tensor:
    r"""Rank-based ROC AUC for multi-label predictions, macro- or micro-averaged.

    Per label, with :math:`R_n` the average rank (ties share the mean rank) of sample
    :math:`n`'s score among all :math:`N` scores, :math:`P` positives and :math:`Q` negatives,

    .. math::

        \mathrm{AUC}_k = \frac{\sum_{n: y_{nk} = 1} R_{nk} - P_k (P_k + 1)/2}{P_k\, Q_k},

    which equals the probability that a random positive outranks a random negative (ties
    count 1/2). ``"macro"`` averages :math:`\mathrm{AUC}_k` over the labels; ``"micro"``
    computes one AUC over all :math:`N K` flattened decisions; ``"none"`` returns the ``(K,)``
    per-label values. AUC is rank-based: :math:`\sigma(z)` and :math:`\sigma(z)^2` give the same
    AUC as each other (and as the logits :math:`z`, up to ties created by rounding).

    A label with a single class present has no AUC: it is NaN in ``"none"`` and excluded from
    ``"macro"`` with a ``UserWarning``; the result is NaN (with a warning) if no label is left,
    or, for ``"micro"``, if all flattened labels are of one class.

    Inputs:
        - **y_pred**: ``(N, K)`` probabilities in ``[0, 1]``.
        - **y**: ``(N, K)`` multi-hot labels in {0, 1}.
        - **output**: 0-d float64 tensor (``"macro"``/``"micro"``) or ``(K,)`` (``"none"``).

    Args:
        average: ``"macro"`` | ``"micro"`` | ``"none"``. Defaults to ``"macro"``.

    Raises:
        TypeError: non-tensor or non-floating-point ``y_pred``, non-tensor ``y``.
        ValueError: unknown ``average``, wrong shapes, NaN/Inf scores, probabilities outside
            ``[0, 1]``, non-binary ``y``.

    References:
        Hanley & McNeil, "The meaning and use of the area under a ROC curve", Radiology (1982).
    """
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {list(_AVERAGES)}, got {average!r}.")
    scores, target = _prepare(y_pred, y)
    if average == "micro":
        auc = _binary_auc(scores.reshape(-1), target.reshape(-1))
        if bool(torch.isnan(auc)):
            warnings.warn(
                "multilabel_auc(average='micro'): y holds a single class; AUC is NaN.",
                UserWarning,
                stacklevel=2,
            )
        return auc
    per_label = torch.stack(
        [_binary_auc(scores[:, k], target[:, k]) for k in range(scores.shape[1])]
    )
    if average == "none":
        return per_label
    undefined = torch.isnan(per_label)
    if bool(undefined.any()):
        idx = torch.nonzero(undefined).flatten().tolist()
        warnings.warn(
            f"multilabel_auc(average='macro'): {len(idx)} of {per_label.numel()} labels have a "
            f"single class in y and are excluded from the macro average (label indices "
            f"{idx[:10]}{' ...' if len(idx) > 10 else ''}).",
            UserWarning,
            stacklevel=2,
        )
        if bool(undefined.all()):
            return per_label.new_tensor(float("nan"))
    return per_label[~undefined].mean()
