# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Reliability diagram (accuracy vs confidence per bin) with a confidence histogram."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from monai_calib.enums import CalibrationTarget
from monai_calib.metrics.calibration_error import (
    calibration_error_from_statistics,
    calibration_statistics,
)

from ._common import check_axes, figure_and_axes, figure_of, new_figure, to_numpy

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


# Bar styles: accuracy and histogram bars in blue, the calibration gap hatched in red.
_COUNT_BARS = {"color": "#1f77b4", "edgecolor": "black", "linewidth": 0.8}
_ACCURACY_BARS = {**_COUNT_BARS, "label": "Accuracy", "zorder": 2}
_GAP_BARS = {"color": "#d62728", "alpha": 0.3, "edgecolor": "#d62728", "hatch": "//"}
_GAP_BARS |= {"linewidth": 0.8, "label": "Gap", "zorder": 3}


class _Bins(NamedTuple):
    """Per-bin values of one reliability diagram (numpy arrays of length ``M``)."""

    count: np.ndarray
    sum_conf: np.ndarray
    sum_correct: np.ndarray
    acc: np.ndarray  # 0 in empty bins
    conf: np.ndarray  # 0 in empty bins
    nonempty: np.ndarray
    centers: np.ndarray
    width: float
    total: float


def _bins(stats: torch.Tensor) -> _Bins:
    """Accuracy, confidence and bar positions from ``(1, M, 3)`` statistics."""
    count, sum_conf, sum_correct = to_numpy(stats[0], "stats").T
    m = count.shape[0]
    nonempty = count > 0
    safe = np.where(nonempty, count, 1.0)
    width = 1.0 / m
    return _Bins(
        count=count,
        sum_conf=sum_conf,
        sum_correct=sum_correct,
        acc=np.where(nonempty, sum_correct / safe, 0.0),
        conf=np.where(nonempty, sum_conf / safe, 0.0),
        nonempty=nonempty,
        centers=(np.arange(m) + 0.5) * width,
        width=width,
        total=count.sum(),
    )


def _diagram_axes(
    ax: Axes | tuple[Axes, Axes] | None, show_histogram: bool
) -> tuple[Figure, Axes, Axes | None]:
    """``(figure, reliability Axes, histogram Axes or None)`` for the ``ax`` argument."""
    if ax is None and show_histogram:
        fig = new_figure((5.0, 6.0))
        gs = fig.add_gridspec(2, 1, height_ratios=(3, 1))
        ax_rel = fig.add_subplot(gs[0])
        return fig, ax_rel, fig.add_subplot(gs[1], sharex=ax_rel)
    if isinstance(ax, (tuple, list)):
        if len(ax) != 2:
            raise ValueError(f"ax must be an Axes or a pair of Axes, got {len(ax)} items.")
        check_axes(ax[0], "ax[0]")
        check_axes(ax[1], "ax[1]")
        return figure_of(ax[0]), ax[0], ax[1]
    fig, ax_rel = figure_and_axes(ax, (5.0, 4.5))
    return fig, ax_rel, None


def _draw_reliability(ax: Axes, bins: _Bins, ece: float, title: str | None) -> None:
    """Accuracy bars, gap bars, the diagonal, the ECE box and the legend."""
    x = bins.centers[bins.nonempty]
    ax.bar(x, bins.acc[bins.nonempty], width=bins.width, **_ACCURACY_BARS)
    ax.bar(
        x,
        np.abs(bins.conf - bins.acc)[bins.nonempty],
        bottom=np.minimum(bins.conf, bins.acc)[bins.nonempty],
        width=bins.width,
        **_GAP_BARS,
    )
    ax.plot(
        [0, 1],
        [0, 1],
        linestyle="--",
        color="gray",
        linewidth=1.0,
        zorder=4,
        label="Perfect calibration",
    )
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("Accuracy")
    ax.text(
        0.04,
        0.96,
        f"ECE = {100.0 * ece:.2f}%",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=11,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "gray", "alpha": 0.9},
    )
    ax.legend(loc="lower right", fontsize=9)
    if title is not None:
        ax.set_title(title)


def _draw_histogram(ax: Axes, bins: _Bins) -> None:
    """Fraction of samples per bin, with the mean confidence and the accuracy as lines."""
    frac = bins.count / bins.total if bins.total > 0 else bins.count
    ax.bar(bins.centers, frac, width=bins.width, alpha=0.8, **_COUNT_BARS)
    if bins.total > 0:
        mean_conf = float(bins.sum_conf.sum() / bins.total)
        accuracy = float(bins.sum_correct.sum() / bins.total)
        ax.axvline(
            mean_conf,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"Avg. confidence ({mean_conf:.2f})",
        )
        ax.axvline(
            accuracy,
            color="#d62728",
            linestyle="-",
            linewidth=1.2,
            label=f"Accuracy ({accuracy:.2f})",
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Fraction")


def plot_reliability_diagram(
    source: Any,
    y: torch.Tensor | None = None,
    *,
    show_histogram: bool = True,
    ax: Axes | tuple[Axes, Axes] | None = None,
    title: str | None = None,
    **statistics_kwargs: Any,
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
        show_histogram: draw the confidence histogram panel underneath. Defaults to True.
        ax: where to draw: ``None`` creates a new figure (pyplot is not used; the user's backend
            is untouched); a pair ``(ax_reliability, ax_histogram)`` draws both panels there;
            a single Axes draws the reliability panel only (``show_histogram`` is ignored).
        title: optional title of the reliability panel.
        statistics_kwargs: ``num_bins`` (15), ``target`` (``"top_label"``), ``logits``
            (False) for raw predictions, and ``class_index`` (the group to draw when there
            are several; ``None`` pools them): see :func:`reliability_statistics`.

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
    stats = reliability_statistics(source, y, **statistics_kwargs)
    ece = float(calibration_error_from_statistics(stats))
    bins = _bins(stats)
    fig, ax_rel, ax_hist = _diagram_axes(ax, show_histogram)
    _draw_reliability(ax_rel, bins, ece, title)
    if ax_hist is None:
        ax_rel.set_xlabel("Confidence")
        return fig, ax_rel
    _draw_histogram(ax_hist, bins)
    ax_rel.tick_params(labelbottom=False)
    return fig, (ax_rel, ax_hist)
