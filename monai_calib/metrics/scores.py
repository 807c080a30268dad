# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Proper scoring rules: Brier score and negative log-likelihood, pooled over all samples.

Both come with a ``*_statistics`` function returning ``[sum, count]`` (float64, shape ``(2,)``):
statistics of different batches, images or ranks add, and ``sum / count`` is the pooled score,
so the scores stream at fixed memory exactly like the binned calibration errors.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, TypedDict

import torch
import torch.nn.functional as F

from ._inputs import prepare_multiclass, prepare_multilabel

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = [
    "NLLOptions",
    "brier_score",
    "brier_statistics",
    "check_eps",
    "negative_log_likelihood",
    "nll_statistics",
]


class NLLOptions(TypedDict, total=False):
    """Keyword options of :func:`nll_statistics` (and :func:`negative_log_likelihood`)."""

    logits: bool
    multilabel: bool
    eps: float


def _mean_from_statistics(stats: torch.Tensor, name: str) -> torch.Tensor:
    """``sum / count``; an empty input gives NaN *with a warning*, never silently."""
    if float(stats[1]) == 0:
        warnings.warn(f"{name}: the input holds no samples; the result is NaN.", stacklevel=3)
    return stats[0] / stats[1]


def _gather_true(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``values[i, y_i, ...]`` for ``values`` ``(B, K, *spatial)`` and labels ``(B, *spatial)``."""
    return values.gather(1, labels.unsqueeze(1)).squeeze(1)


def check_eps(eps: float) -> float:
    """Validate the NLL's probability clip: a number in [0, 0.5) (bools rejected)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 0.5:
        raise ValueError(f"eps must be a float in [0, 0.5), got {eps!r}.")
    return float(eps)


def _pair(total: torch.Tensor, count: int, device: torch.device) -> torch.Tensor:
    return torch.stack(
        [total.double().reshape(()), torch.tensor(float(count), dtype=torch.float64, device=device)]
    )


def brier_statistics(
    y_pred: torch.Tensor, y: torch.Tensor, *, logits: bool = False, multilabel: bool = False
) -> torch.Tensor:
    """``[sum of per-sample Brier scores, number of samples]`` (float64, shape ``(2,)``).

    See :func:`brier_score` for the definition, inputs and errors. For ``multilabel=True`` the
    count is the number of (sample, label) pairs.
    """
    if multilabel:
        p, t = prepare_multilabel(y_pred, y, logits=logits)
        return _pair(((p.double() - t.double()) ** 2).sum(), p.numel(), p.device)
    p, labels = prepare_multiclass(y_pred, y, logits=logits)
    n = labels.numel()
    # sum_k (p_k - e_yk)^2 = sum_k p_k^2 - 2 p_y + 1, without materialising the one-hot.
    p64 = p.double()
    total = (p64 * p64).sum() - 2.0 * _gather_true(p64, labels).sum() + n
    return _pair(total, n, p.device)


def brier_score(
    y_pred: torch.Tensor, y: torch.Tensor, *, logits: bool = False, multilabel: bool = False
) -> torch.Tensor:
    """Brier score averaged over samples (every voxel of a dense input is a sample).

    Multiclass (default), the LS+ convention (summed over classes, **not** divided by ``K``):

    .. math::

        \\mathrm{BS} = \\frac{1}{N}\\sum_{i=1}^{N}\\sum_{k=1}^{K}\\big(p_{ik} - 1[y_i = k]\\big)^2
        \\in [0, 2]

    Multi-label / binary sigmoid outputs (``multilabel=True``), the mean over samples and labels
    of the binary Brier score (for ``K = 1`` this is scikit-learn's ``brier_score_loss``):

    .. math::

        \\mathrm{BS} = \\frac{1}{NK}\\sum_{i,k}\\big(p_{ik} - y_{ik}\\big)^2 \\in [0, 1]

    Note that a 2-class softmax gives twice the binary ``brier_score_loss`` of its positive class.

    Args:
        y_pred: probabilities (or logits with ``logits=True``), class axis at dim 1.
        y: labels, see Inputs.
        logits: apply softmax over dim 1 (sigmoid when ``multilabel``). Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets. Defaults to False.

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)``; ``K >= 2`` with rows summing to 1
          (multiclass) or ``K >= 1`` (multilabel).
        - ``y``: multiclass: indices ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot of
          ``y_pred``'s shape; multilabel: multi-hot of ``y_pred``'s shape.

    Returns:
        0-d float64 tensor (NaN for an empty input).

    Raises:
        ValueError / TypeError: as :func:`monai_calib.metrics.calibration_error` (bad shapes,
            labels, non-finite values, probabilities outside [0, 1] or not summing to 1).

    References:
        Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
        Review 1950. LS+ reference code (spec §6.4).
    """
    return _mean_from_statistics(
        brier_statistics(y_pred, y, logits=logits, multilabel=multilabel), "brier_score"
    )


def nll_statistics(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    logits: bool = False,
    multilabel: bool = False,
    eps: float = 1e-7,
) -> torch.Tensor:
    """``[sum of per-sample negative log-likelihoods, number of samples]`` (float64, ``(2,)``).

    See :func:`negative_log_likelihood` for the definition, inputs and errors.
    """
    eps = check_eps(eps)
    if multilabel:
        if logits:
            _, t = prepare_multilabel(y_pred, y, logits=True)
            # log-probabilities straight from the logits (stable, unclipped).
            z = y_pred.double()
            t64 = t.double()
            total = -(t64 * F.logsigmoid(z) + (1 - t64) * F.logsigmoid(-z)).sum()
            return _pair(total, t.numel(), t.device)
        p, t = prepare_multilabel(y_pred, y)
        q = p.double().clamp(eps, 1 - eps)
        t64 = t.double()
        total = -(t64 * q.log() + (1 - t64) * (1 - q).log()).sum()
        return _pair(total, p.numel(), p.device)
    if logits:
        _, labels = prepare_multiclass(y_pred, y, logits=True)
        logp = torch.log_softmax(y_pred.double(), dim=1)
        return _pair(-_gather_true(logp, labels).sum(), labels.numel(), y_pred.device)
    p, labels = prepare_multiclass(y_pred, y)
    py = _gather_true(p, labels).double().clamp(eps, 1.0)
    return _pair(-py.log().sum(), labels.numel(), p.device)


def negative_log_likelihood(
    y_pred: torch.Tensor, y: torch.Tensor, **options: Unpack[NLLOptions]
) -> torch.Tensor:
    """Mean negative log-likelihood of the true class (every voxel of a dense input is a sample).

    .. math::

        \\mathrm{NLL} = -\\frac{1}{N}\\sum_{i=1}^{N} \\log \\max(p_{i y_i}, \\epsilon)

    With ``logits=True`` the log-probabilities come from ``log_softmax`` (float64) and no clipping
    is applied. With ``multilabel=True`` it is the binary cross-entropy averaged over samples and
    labels, :math:`-\\frac{1}{NK}\\sum_{i,k} y_{ik}\\log q_{ik} + (1-y_{ik})\\log(1-q_{ik})`
    with :math:`q = \\mathrm{clip}(p, \\epsilon, 1-\\epsilon)` (``logsigmoid``, unclipped, for
    logits).

    Args:
        y_pred: probabilities (or logits with ``logits=True``), class axis at dim 1.
        y: labels (see :func:`brier_score`).
        logits: ``y_pred`` holds logits. Defaults to False.
        multilabel: independent per-label probabilities with multi-hot targets. Defaults to False.
        eps: clip for probabilities, 1e-7 as in the LS+ reference code (its "CE" column).

    Inputs:
        as :func:`brier_score`.

    Returns:
        0-d float64 tensor (NaN for an empty input).

    Raises:
        ValueError: ``eps`` outside [0, 0.5), and the input errors of :func:`brier_score`.
        TypeError: as :func:`brier_score`.
    """
    return _mean_from_statistics(nll_statistics(y_pred, y, **options), "negative_log_likelihood")
