# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Reliability diagram (accuracy vs confidence per bin) with a confidence histogram."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from monai_calib.enums import CalibrationTarget
from monai_calib.metrics.calibration_error import (
    calibration_error_from_statistics,
    calibration_statistics,
)

from ._common import check_axes, figure_of, new_figure, to_numpy

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_reliability_diagram", "reliability_statistics"]


def reliability_statistics(
    source: Any,
    y: torch.Tensor | None = None,
    *,
    num_bins: int = 15,
    target: CalibrationTarget | str = "top_label",
    logits: bool = False,
    class_index: int | None = None,
) -> torch.Tensor:
    """Equal-width ``(1, num_bins, 3)`` statistics of one reliability diagram.

    Args:
        source: per-bin statistics ``(C, M, 3)`` / ``(M, 3)`` (``y`` is None), a metric with a
            ``statistics()`` method such as
            :class:`~monai_calib.metrics.PooledCalibrationErrorMetric` (``y`` is None), or
            predictions ``y_pred`` (``y`` given; see
            :func:`~monai_calib.metrics.calibration_statistics`).
        y: labels when ``source`` holds predictions.
        num_bins: bins for raw predictions (ignored for statistics and metrics).
        target: target for raw predictions: ``"top_label"`` (default), ``"classwise"`` or
            ``"marginal"``.
        logits: raw predictions are logits.
        class_index: with ``C > 1`` groups, the group (class) to draw; ``None`` pools all groups
            (the micro reliability diagram of every (sample, class) pair).

    Returns:
        float64 ``(1, M, 3)`` statistics.

    Raises:
        TypeError: ``source`` is neither a tensor nor a metric with ``statistics()``.
        ValueError: bad statistics shape, or ``class_index`` out of range.
    """
    if y is not None:
        stats = calibration_statistics(source, y, num_bins=num_bins, target=target, logits=logits)
    elif hasattr(source, "statistics") and callable(source.statistics):
        binning = getattr(source, "binning", "equal_width")
        # Bars are drawn at equal-width positions: equal-mass metrics re-bin their buffer.
        if binning == "equal_width":
            stats = source.statistics()
        else:
            stats = source.statistics(binning="equal_width")
    elif isinstance(source, torch.Tensor):
        stats = source
    else:
        raise TypeError(
            "source must be per-bin statistics (C, num_bins, 3), a metric with statistics() "
            "(e.g. PooledCalibrationErrorMetric) or predictions y_pred together with y, got "
            f"{type(source).__name__}."
        )
    stats = stats.detach().double()
    if stats.ndim == 2:
        stats = stats.unsqueeze(0)
    if stats.ndim == 4 and stats.shape[0] == 1:
        stats = stats[0]  # (1, C, M, 3) as returned by one metric call
    if stats.ndim != 3 or stats.shape[-1] != 3 or stats.shape[1] < 1:
        raise ValueError(
            "statistics must have shape (C, num_bins, 3) holding [count, sum of confidences, "
            f"sum of correctness] per bin, got shape {tuple(stats.shape)}."
        )
    if class_index is None:
        return stats.sum(0, keepdim=True)
    if not -stats.shape[0] <= class_index < stats.shape[0]:
        raise ValueError(
            f"class_index must be in [0, {stats.shape[0] - 1}] for statistics of "
            f"{stats.shape[0]} groups, got {class_index}."
        )
    return stats[class_index : class_index + 1 if class_index != -1 else None]


def plot_reliability_diagram(
    source: Any,
    y: torch.Tensor | None = None,
    *,
    num_bins: int = 15,
    target: CalibrationTarget | str = "top_label",
    logits: bool = False,
    class_index: int | None = None,
    show_histogram: bool = True,
    ax: Axes | tuple[Axes, Axes] | None = None,
    title: str | None = None,
) -> tuple[Figure, Axes | tuple[Axes, Axes]]:
    r"""Reliability diagram with gap bars, the diagonal, the ECE and a confidence histogram.

    For every non-empty equal-width bin :math:`b` (:math:`n_b` samples) the bar height is the
    accuracy :math:`\mathrm{acc}_b`; the hatched gap bar spans from :math:`\mathrm{acc}_b` to
    the mean confidence :math:`\mathrm{conf}_b` (above the accuracy bar: over-confident); the
    dashed diagonal is perfect calibration. The text box shows

    .. math::

        \mathrm{ECE} = \sum_b \frac{n_b}{N}\,|\mathrm{acc}_b - \mathrm{conf}_b|

    of the drawn statistics (in percent, 2 decimals), identical to
    :func:`~monai_calib.metrics.calibration_error_from_statistics`. The lower panel shows the
    fraction of samples per bin, with the average confidence and the accuracy as vertical lines.

    Everything is drawn from the per-bin statistics: a metric's accumulated statistics draw the
    diagram of a whole evaluation without the raw predictions.

    Args:
        source: statistics ``(C, M, 3)``, a
            :class:`~monai_calib.metrics.PooledCalibrationErrorMetric` (or any object with
            ``statistics()``), or predictions ``y_pred`` when ``y`` is given (see
            :func:`reliability_statistics`).
        y: labels for raw predictions.
        num_bins: bins for raw predictions. Defaults to 15.
        target: ``"top_label"`` (default), ``"classwise"`` or ``"marginal"`` for raw predictions.
        logits: raw predictions are logits. Defaults to False.
        class_index: group to draw when there are several (``None``: pool them).
        show_histogram: draw the confidence histogram panel underneath. Defaults to True.
        ax: where to draw: ``None`` creates a new figure (pyplot is not used; the user's backend
            is untouched); a pair ``(ax_reliability, ax_histogram)`` draws both panels there;
            a single Axes draws the reliability panel only (``show_histogram`` is ignored).
        title: optional title of the reliability panel.

    Returns:
        ``(fig, (ax_reliability, ax_histogram))`` when the histogram is drawn, else
        ``(fig, ax_reliability)``.

    Raises:
        TypeError / ValueError: bad ``source``, statistics or ``ax`` (see
            :func:`reliability_statistics`).

    References:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (reliability diagrams);
        TorchUncertainty's calibration plot (layout).
    """
    stats = reliability_statistics(
        source, y, num_bins=num_bins, target=target, logits=logits, class_index=class_index
    )
    ece = float(calibration_error_from_statistics(stats))
    count, sum_conf, sum_correct = to_numpy(stats[0], "stats").T
    m = count.shape[0]
    total = count.sum()
    nonempty = count > 0
    safe = np.where(nonempty, count, 1.0)
    acc = np.where(nonempty, sum_correct / safe, 0.0)
    conf = np.where(nonempty, sum_conf / safe, 0.0)
    width = 1.0 / m
    centers = (np.arange(m) + 0.5) * width

    if ax is None:
        fig = new_figure((5.0, 6.0) if show_histogram else (5.0, 4.5))
        if show_histogram:
            gs = fig.add_gridspec(2, 1, height_ratios=(3, 1))
            ax_rel = fig.add_subplot(gs[0])
            ax_hist = fig.add_subplot(gs[1], sharex=ax_rel)
        else:
            ax_rel, ax_hist = fig.add_subplot(), None
    elif isinstance(ax, (tuple, list)):
        if len(ax) != 2:
            raise ValueError(f"ax must be an Axes or a pair of Axes, got {len(ax)} items.")
        ax_rel, ax_hist = ax
        check_axes(ax_rel, "ax[0]")
        check_axes(ax_hist, "ax[1]")
        fig = figure_of(ax_rel)
    else:
        check_axes(ax)
        ax_rel, ax_hist = ax, None
        fig = figure_of(ax_rel)

    x = centers[nonempty]
    ax_rel.bar(
        x,
        acc[nonempty],
        width=width,
        color="#1f77b4",
        edgecolor="black",
        linewidth=0.8,
        label="Accuracy",
        zorder=2,
    )
    ax_rel.bar(
        x,
        np.abs(conf - acc)[nonempty],
        bottom=np.minimum(conf, acc)[nonempty],
        width=width,
        color="#d62728",
        alpha=0.3,
        edgecolor="#d62728",
        hatch="//",
        linewidth=0.8,
        label="Gap",
        zorder=3,
    )
    ax_rel.plot(
        [0, 1],
        [0, 1],
        linestyle="--",
        color="gray",
        linewidth=1.0,
        zorder=4,
        label="Perfect calibration",
    )
    ax_rel.set_xlim(0.0, 1.0)
    ax_rel.set_ylim(0.0, 1.0)
    ax_rel.set_ylabel("Accuracy")
    ax_rel.text(
        0.04,
        0.96,
        f"ECE = {100.0 * ece:.2f}%",
        transform=ax_rel.transAxes,
        va="top",
        ha="left",
        fontsize=11,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "gray", "alpha": 0.9},
    )
    ax_rel.legend(loc="lower right", fontsize=9)
    if title is not None:
        ax_rel.set_title(title)

    if ax_hist is None:
        ax_rel.set_xlabel("Confidence")
        return fig, ax_rel
    frac = count / total if total > 0 else count
    ax_hist.bar(
        centers, frac, width=width, color="#1f77b4", edgecolor="black", linewidth=0.8, alpha=0.8
    )
    if total > 0:
        mean_conf = float(sum_conf.sum() / total)
        accuracy = float(sum_correct.sum() / total)
        ax_hist.axvline(
            mean_conf,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"Avg. confidence ({mean_conf:.2f})",
        )
        ax_hist.axvline(
            accuracy,
            color="#d62728",
            linestyle="-",
            linewidth=1.2,
            label=f"Accuracy ({accuracy:.2f})",
        )
        ax_hist.legend(loc="upper left", fontsize=8)
    ax_hist.set_xlim(0.0, 1.0)
    ax_hist.set_xlabel("Confidence")
    ax_hist.set_ylabel("Fraction")
    ax_rel.tick_params(labelbottom=False)
    return fig, (ax_rel, ax_hist)
