# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Confidence distributions of correct and incorrect predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from monai_calib._utils.validation import check_num_bins
from monai_calib.metrics._inputs import prepare_multiclass

from ._common import figure_and_axes, to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["confidence_by_correctness", "plot_confidence_density"]

_HEADROOM = 1.35  # y range above the tallest histogram bar, as a factor
# Opaque, borderless legends: a mean line running under one does not cross its text.
_LEGEND = {"fontsize": 8, "facecolor": "white", "edgecolor": "none", "framealpha": 1.0}


def confidence_by_correctness(
    y_pred: torch.Tensor, y: torch.Tensor, *, logits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidences :math:`\\max_k p_k` of the correct and of the incorrect predictions.

    Args:
        y_pred: probabilities ``(B, K[, *spatial])`` (every voxel is a sample) or logits.
        y: class indices ``(B[, *spatial])`` / ``(B, 1[, *spatial])`` or one-hot.
        logits: ``y_pred`` holds logits (softmax over dim 1).

    Returns:
        ``(correct, incorrect)``: two float64 numpy arrays of confidences.

    Raises:
        ValueError / TypeError: bad inputs, as :func:`monai_calib.metrics.calibration_error`.
    """
    probs, labels = prepare_multiclass(y_pred, y, logits=logits)
    conf, pred = probs.max(dim=1)
    ok = (pred == labels).reshape(-1)
    conf = conf.reshape(-1)
    return to_numpy(conf[ok], "confidence"), to_numpy(conf[~ok], "confidence")


def plot_confidence_density(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    *,
    logits: bool = False,
    num_bins: int = 30,
    density: bool = True,
    ax: Axes | None = None,
    title: str | None = None,
) -> tuple[Figure, Axes]:
    r"""Histograms of the top-label confidence :math:`\max_k p_k`, correct vs incorrect.

    A well-separated pair (incorrect predictions at low confidence) means the confidence ranks
    errors well, which is what the retention curve rewards; an over-confident model puts both
    distributions near 1. Dashed lines mark each group's mean confidence (their own legend,
    upper right); both legends sit in headroom above the tallest bar.

    Args:
        y_pred: probabilities ``(B, K[, *spatial])`` or logits with ``logits=True``.
        y: class indices ``(B[, *spatial])`` / ``(B, 1[, *spatial])`` or one-hot.
        logits: ``y_pred`` holds logits. Defaults to False.
        num_bins: histogram bins on [0, 1]. Defaults to 30.
        density: normalise each histogram to unit area (default) rather than raw counts.
        ax: Axes to draw on; ``None`` creates a new pyplot-free figure.
        title: optional title.

    Inputs:
        ``y_pred``: ``(B, K)`` or ``(B, K, *spatial)``; ``y``: as above.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError / TypeError: bad inputs or ``num_bins``; ``ax`` not an Axes.
    """
    num_bins = check_num_bins(num_bins)
    correct, incorrect = confidence_by_correctness(y_pred, y, logits=logits)
    fig, ax = figure_and_axes(ax, (5.5, 4.0))
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    groups = (
        (correct, "Correct", "#2ca02c"),
        (incorrect, "Incorrect", "#d62728"),
    )
    means = []
    for values, name, color in groups:
        if values.size == 0:
            continue
        ax.hist(
            values,
            bins=edges,
            density=density,
            histtype="stepfilled",
            alpha=0.35,
            color=color,
            edgecolor=color,
            linewidth=1.2,
            label=f"{name} (n={values.size})",
        )
        mean = float(values.mean())
        means.append(
            ax.axvline(
                mean,
                color=color,
                linestyle="--",
                linewidth=1.4,
                label=f"Mean confidence, {name.lower()} ({mean:.2f})",
            )
        )
    ax.set_xlim(0.0, 1.0)
    # Headroom above the tallest bar for the legends, so they cannot cover the histograms.
    ax.set_ylim(0.0, _HEADROOM * ax.get_ylim()[1])
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Density" if density else "Count")
    if means:
        # The dashed lines get a legend of their own (upper right); the groups keep the main one.
        ax.add_artist(ax.legend(handles=means, loc="upper right", **_LEGEND))
    ax.legend(
        handles=[p for p in ax.patches if not p.get_label().startswith("_")],
        loc="upper left",
        **_LEGEND,
    )
    if title is not None:
        ax.set_title(title)
    return fig, ax
