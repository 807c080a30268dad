# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Accuracy-retention curves of one or several models, with R-AUC in the legend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_calib.enums import RetentionGrid, Uncertainty
from monai_calib.metrics.retention import retention_curve

from ._common import figure_and_axes, to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_retention_curve"]

RETENTION_ORDER_NOTE = "(samples ordered by confidence, most confident retained first)"


def _curve(name: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(value, "curve") and callable(value.curve):
        value = value.curve()  # RetentionAUCMetric
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            f"curves[{name!r}] must be a pair (fractions, accuracies) or a RetentionAUCMetric, "
            f"got {type(value).__name__}."
        )
    f = to_numpy(value[0], f"curves[{name!r}][0]").reshape(-1)
    a = to_numpy(value[1], f"curves[{name!r}][1]").reshape(-1)
    if f.shape != a.shape or f.size < 2:
        raise ValueError(
            f"curves[{name!r}] must hold fractions and accuracies of the same length >= 2, got "
            f"lengths {f.size} and {a.size}."
        )
    if np.any(np.diff(f) < 0):
        raise ValueError(f"curves[{name!r}]: fractions must be non-decreasing.")
    return f, a


def plot_retention_curve(
    curves: Mapping[str, Any] | torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    label: str = "model",
    grid: RetentionGrid | str = "log",
    num_points: int = 200,
    uncertainty: Uncertainty | str = "max_prob",
    logits: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
) -> tuple[Figure, Axes]:
    r"""Accuracy vs retained fraction for several models on one axis, R-AUC in the legend.

    The samples are ordered by confidence (lowest uncertainty first): at fraction :math:`f` the
    curve is the accuracy of the :math:`f` most confident ones; the x label says so.

    Each curve is drawn with its area (trapezoid rule, a fraction in [0, 1], higher is better)

    .. math::

        \mathrm{R\text{-}AUC} = \sum_{j} \frac{(f_{j+1} - f_j)\,
        (\mathrm{acc}_j + \mathrm{acc}_{j+1})}{2}

    which equals :func:`monai_calib.metrics.retention_auc` for curves from
    :func:`~monai_calib.metrics.retention_curve`.

    Args:
        curves: a mapping ``{name: (fractions, accuracies)}`` (tensors or arrays, e.g. from
            :func:`~monai_calib.metrics.retention_curve`) or ``{name: RetentionAUCMetric}``; or
            predictions ``y_pred`` ``(B, K[, *spatial])`` when ``y`` is given (one curve named
            ``label``).
        y: labels for raw predictions.
        label: legend name of a curve computed from raw predictions. Defaults to ``"model"``.
        grid, num_points, uncertainty, logits: options of
            :func:`~monai_calib.metrics.retention_curve` for raw predictions.
        ax: Axes to draw on; ``None`` creates a new pyplot-free figure.
        title: optional title.

    Returns:
        ``(fig, ax)``.

    Raises:
        TypeError: ``curves`` is neither a mapping nor a tensor with ``y``; bad values.
        ValueError: an empty mapping; curves of unequal lengths or decreasing fractions.
    """
    if isinstance(curves, torch.Tensor):
        if y is None:
            raise TypeError("y is required when curves holds predictions y_pred.")
        fractions, accuracies = retention_curve(
            curves, y, grid=grid, num_points=num_points, uncertainty=uncertainty, logits=logits
        )
        curves = {label: (fractions, accuracies)}
    elif not isinstance(curves, Mapping):
        raise TypeError(
            "curves must be a mapping {name: (fractions, accuracies)} or predictions y_pred with "
            f"y, got {type(curves).__name__}."
        )
    if len(curves) == 0:
        raise ValueError("curves is empty; pass at least one curve.")
    fig, ax = figure_and_axes(ax, (5.5, 4.5))
    lowest = 1.0
    for name, value in curves.items():
        f, a = _curve(str(name), value)
        auc = float(np.trapezoid(a, f)) if hasattr(np, "trapezoid") else float(np.trapz(a, f))
        ax.plot(f, a, linewidth=1.6, label=f"{name} (R-AUC = {auc:.4f})")
        lowest = min(lowest, float(a.min()))
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(max(0.0, lowest - 0.05), 1.005)
    ax.set_xlabel("Retained fraction")
    # Second line of the x label: which samples are kept (the label text itself stays as is).
    ax.annotate(
        RETENTION_ORDER_NOTE,
        xy=(0.5, 0.0),
        xycoords=ax.xaxis.label,
        xytext=(0.0, -1.0),
        textcoords="offset points",
        ha="center",
        va="top",
        fontsize=ax.xaxis.label.get_fontsize() - 1,
        gid="retention_order",
    )
    ax.set_ylabel("Accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    if title is not None:
        ax.set_title(title)
    return fig, ax
