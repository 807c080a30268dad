# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Accuracy-retention curve and its area (R-AUC), as in the LS+ reference code (spec §6.4).

The samples are ranked by uncertainty (most certain first); at retained fraction :math:`f` the
:math:`\\lfloor fN \\rfloor` most certain predictions are kept and the others are replaced by the
ground truth (referred to an expert), and the accuracy of that mix is recorded. A model whose
uncertainty ranks its errors last has a high curve; R-AUC is the trapezoid area (higher is
better).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypedDict

import torch

from monai_calib._utils.validation import look_up_argument
from monai_calib.enums import RetentionGrid, Uncertainty

from ._inputs import prepare_multiclass

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["RetentionOptions", "retention_auc", "retention_curve"]


class RetentionOptions(TypedDict, total=False):
    """Keyword options of :func:`retention_curve` (and :func:`retention_auc`)."""

    grid: RetentionGrid | str
    num_points: int
    uncertainty: Uncertainty | str
    logits: bool


def _grid(grid: str, num_points: int, device: torch.device) -> torch.Tensor:
    if grid == "linear":
        return torch.linspace(0.0, 1.0, num_points, dtype=torch.float64, device=device)
    j = torch.arange(1, num_points + 1, dtype=torch.float64, device=device)
    f = torch.log(j) / math.log(num_points)
    f[-1] = 1.0  # exact end point whatever the rounding of log(n) / log(n)
    return f


def retention_curve(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    grid: RetentionGrid | str = "log",
    num_points: int = 200,
    uncertainty: Uncertainty | str = "max_prob",
    logits: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy-retention curve: accuracy when only the most certain predictions are kept.

    Samples are sorted by the uncertainty :math:`u_i` in ascending order (stable sort, so ties
    keep their input order); with :math:`c_{(1)}, \\dots, c_{(N)}` the correctness of the argmax
    prediction in that order and :math:`n_f = \\lfloor fN \\rfloor`:

    .. math::

        \\mathrm{acc}(f) = \\frac{1}{N}\\Big(\\sum_{r=1}^{n_f} c_{(r)} + (N - n_f)\\Big)

    i.e. the :math:`N - n_f` least certain predictions are replaced by the ground truth.

    Uncertainty scores:

    - ``"max_prob"`` (default): :math:`u_i = 1 - \\max_k p_{ik}`;
    - ``"entropy"``: :math:`u_i = -\\sum_k p_{ik}\\log p_{ik}` (with :math:`0 \\log 0 = 0`);
    - ``"predicted_class"``: :math:`u_i = \\arg\\max_k p_{ik}`. **Reference-reproduction only**:
      the LS+ code sorts by the predicted class index instead of an uncertainty (a bug, spec
      §6.4); use it only to reproduce the paper's R-AUC numbers.

    Grid of retained fractions: ``"log"`` (reference): :math:`f_j = \\log j / \\log n` for
    :math:`j = 1..n` (from 0 to 1, dense near 1); ``"linear"``: ``linspace(0, 1, n)``, with
    ``n = num_points``.

    Args:
        y_pred: probabilities (or logits with ``logits=True``), class axis at dim 1.
        y: class indices ``(B, *spatial)`` / ``(B, 1, *spatial)`` or one-hot of ``y_pred``'s
            shape.
        grid: ``"log"`` (default) or ``"linear"``.
        num_points: number of grid points, at least 2. Defaults to 200 (reference).
        uncertainty: ``"max_prob"`` (default), ``"entropy"`` or ``"predicted_class"``.
        logits: ``y_pred`` holds logits (softmax over dim 1). Defaults to False.

    Inputs:
        - ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)`` (every voxel is a sample), ``K >= 2``.
        - ``y``: as above.

    Returns:
        ``(fractions, accuracies)``, two float64 tensors of shape ``(num_points,)``; fractions
        increase from 0 to 1, ``accuracies[0] = 1`` and ``accuracies[-1]`` is the plain accuracy.

    Raises:
        ValueError: invalid option, ``num_points < 2``, empty input, and the input errors of
            :func:`monai_calib.metrics.calibration_error`.
        TypeError: as :func:`monai_calib.metrics.calibration_error`.

    References:
        Filos et al., "A Systematic Comparison of Bayesian Deep Learning Robustness in Diabetic
        Retinopathy Tasks", 2019. LS+ reference code (spec §6.4).
    """
    grid = look_up_argument(grid, RetentionGrid, "grid")
    uncertainty = look_up_argument(uncertainty, Uncertainty, "uncertainty")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}.")
    probs, labels = prepare_multiclass(y_pred, y, logits=logits)
    n = labels.numel()
    if n == 0:
        raise ValueError(
            f"retention_curve needs at least one sample, got y_pred of shape {tuple(y_pred.shape)}."
        )
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).reshape(-1)
    if uncertainty == "max_prob":
        score = (1.0 - conf).reshape(-1)
    elif uncertainty == "entropy":
        p64 = probs.double()
        score = -torch.special.xlogy(p64, p64).sum(dim=1).reshape(-1)
    else:
        score = pred.reshape(-1)
    order = torch.sort(score, stable=True).indices
    cum_correct = torch.zeros(n + 1, dtype=torch.float64, device=probs.device)
    cum_correct[1:] = torch.cumsum(correct[order].double(), dim=0)
    fractions = _grid(grid, num_points, probs.device)
    kept = torch.floor(fractions * n).long().clamp_(0, n)
    accuracies = (cum_correct[kept] + (n - kept).double()) / n
    return fractions, accuracies


def retention_auc(
    y_pred: torch.Tensor, y: torch.Tensor, **options: Unpack[RetentionOptions]
) -> torch.Tensor:
    """Area under the accuracy-retention curve (R-AUC), trapezoid rule; higher is better.

    .. math::

        \\mathrm{R\\text{-}AUC} = \\sum_{j=1}^{n-1} \\frac{(f_{j+1} - f_j)\\,
        (\\mathrm{acc}(f_j) + \\mathrm{acc}(f_{j+1}))}{2}

    Reported as a fraction in [0, 1] (the LS+ paper multiplies by 100). Arguments (the keyword
    options ``grid``, ``num_points``, ``uncertainty``, ``logits`` with their defaults), inputs and
    errors as :func:`retention_curve`.

    Returns:
        0-d float64 tensor.
    """
    fractions, accuracies = retention_curve(y_pred, y, **options)
    return torch.trapezoid(accuracies, fractions)
