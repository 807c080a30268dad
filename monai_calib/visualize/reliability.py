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


# Okabe-Ito colours (colour-blind safe). The gaps are opaque light tints with a hatch of their own
# colour and direction, so an under-confidence gap drawn over an accuracy bar does not mix colours.
ACCURACY_COLOR = "#0072B2"  # blue
OVER_COLOR = "#D55E00"  # vermillion: mean confidence above accuracy
UNDER_COLOR = "#009E73"  # bluish green: accuracy above mean confidence
ACCURACY_LINE_COLOR = "#CC79A7"  # reddish purple: the overall accuracy in the histogram
_COUNT_BARS = {"facecolor": ACCURACY_COLOR, "edgecolor": "black", "linewidth": 0.8}
_GAP_STYLE = {
    "over": {"facecolor": "#F7D3BB", "edgecolor": OVER_COLOR, "hatch": "///"},
    "under": {"facecolor": "#BFE6DA", "edgecolor": UNDER_COLOR, "hatch": "\\\\\\"},
}
_GAP_LABELS = {"over": "Gap: over-confident", "under": "Gap: under-confident"}
ACCURACY_LABEL = "Accuracy (shade & number: samples)"
MEAN_CONFIDENCE_LABEL = "Mean confidence"
# Lightest shade of the accuracy bar of the least populated bin (the fullest bin is opaque).
_MIN_ALPHA = 0.2
_LEGEND_FONTSIZE = 8.0
# Space between the axes top and the legend above it: room for the count of a bar reaching 1.
_LEGEND_OFFSET_PT = 12.0


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


def _format_count(n: float) -> str:
    """Short bin count for an annotation: ``7``, ``130``, ``4.2k``, ``12k``, ``3.1M``."""
    n = float(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            v = n / scale
            return f"{v:.1f}{suffix}" if v < 10 else f"{v:.0f}{suffix}"
    return f"{n:.0f}"


def _count_alphas(count: np.ndarray) -> np.ndarray:
    """Opacity of each bin's accuracy bar: linear in its count, from ``_MIN_ALPHA`` to 1."""
    top = count.max() if count.size and count.max() > 0 else 1.0
    return np.clip(_MIN_ALPHA + (1.0 - _MIN_ALPHA) * count / top, 0.0, 1.0)


def _legend_handles() -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [
        Patch(label=ACCURACY_LABEL, **_COUNT_BARS),
        Patch(label=_GAP_LABELS["over"], linewidth=0.8, **_GAP_STYLE["over"]),
        Line2D([], [], linestyle="--", color="gray", linewidth=1.0, label="Perfect calibration"),
        Patch(label=_GAP_LABELS["under"], linewidth=0.8, **_GAP_STYLE["under"]),
    ]


def legend_title_pad(nrows: int, fontsize: float = _LEGEND_FONTSIZE) -> float:
    """Title pad (points) that clears a legend of ``nrows`` rows placed above the axes.

    From matplotlib's legend metrics (in font sizes): ``borderpad`` 0.4 above and below, rows
    about 1.25 high (text with descent) separated by ``labelspacing`` 0.5; plus a margin.
    """
    height = fontsize * (2 * 0.4 + 1.25 * nrows + 0.5 * (nrows - 1))
    return _LEGEND_OFFSET_PT + height + 4.0


def legend_above(ax: Axes, rows: int = 2, fontsize: float = _LEGEND_FONTSIZE) -> Any:
    """The diagram's legend above the axes, where no bar can reach it; pads the title over it.

    ``rows=2``: two columns centred on the axes (one diagram). ``rows=1``: one row starting at
    the axes' left edge, left out of the layout so that it may run on above the next panels of
    a wide grid (:func:`~monai_calib.visualize.plot_reliability_panels` pads every title).
    """
    from matplotlib.transforms import ScaledTranslation

    if ax.get_legend() is not None:
        ax.get_legend().remove()
    fig = figure_of(ax)
    anchor = ax.transAxes + ScaledTranslation(0.0, _LEGEND_OFFSET_PT / 72.0, fig.dpi_scale_trans)
    legend = ax.legend(
        handles=_legend_handles(),
        loc="lower center" if rows == 2 else "lower left",
        bbox_to_anchor=(0.5, 1.0) if rows == 2 else (0.0, 1.0),
        bbox_transform=anchor,
        ncols=2 if rows == 2 else 4,
        fontsize=fontsize,
        frameon=False,
        borderaxespad=0.0,
        borderpad=0.4,
        labelspacing=0.5,
        handlelength=1.6,
        columnspacing=1.0,
    )
    legend.set_in_layout(rows == 2)
    ax.set_title(ax.get_title(), pad=legend_title_pad(rows, fontsize))
    return legend


def _draw_reliability(ax: Axes, bins: _Bins, ece: float, title: str | None) -> None:
    """Accuracy bars shaded by count, over/under-confidence gap bars, bin counts, the
    diagonal, the ECE box, and the legend above the axes (it cannot cover a bar)."""
    ne = bins.nonempty
    x = bins.centers[ne]
    acc, conf = bins.acc[ne], bins.conf[ne]
    alphas = _count_alphas(bins.count)[ne]
    bars = ax.bar(x, acc, width=bins.width, zorder=2, **_COUNT_BARS)
    for bar, alpha in zip(bars, alphas, strict=True):
        bar.set_facecolor((*bar.get_facecolor()[:3], alpha))
    for kind, mask in (("over", conf > acc), ("under", acc > conf)):
        ax.bar(
            x[mask],
            np.abs(conf - acc)[mask],
            bottom=np.minimum(conf, acc)[mask],
            width=bins.width,
            linewidth=0.8,
            zorder=3,
            label=f"_{kind}",
            **_GAP_STYLE[kind],
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1.0, zorder=4)
    rotation = 90 if bins.count.shape[0] > 20 else 0
    for xi, top, n in zip(x, np.maximum(acc, conf), bins.count[ne], strict=True):
        ax.text(
            xi,
            top + 0.01,
            _format_count(n),
            ha="center",
            va="bottom",
            fontsize=7,
            color="#333333",
            rotation=rotation,
            clip_on=False,
            zorder=5,
            gid="bin_count",
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
        zorder=6,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "gray", "alpha": 0.9},
    )
    if title is not None:
        ax.set_title(title)
    legend_above(ax)


# Headroom of the histogram: its legend sits above the tallest bar.
HIST_HEADROOM = 1.5


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
            label=f"{MEAN_CONFIDENCE_LABEL} ({mean_conf:.2f})",
        )
        ax.axvline(
            accuracy,
            color=ACCURACY_LINE_COLOR,
            linestyle="-",
            linewidth=1.2,
            label=f"Accuracy ({accuracy:.2f})",
        )
        ax.legend(
            loc="upper left",
            ncols=2,
            fontsize=7,
            facecolor="white",
            edgecolor="none",
            framealpha=1.0,
            borderaxespad=0.2,
            handlelength=1.6,
            columnspacing=1.0,
        )
    top = float(frac.max()) if frac.size and frac.max() > 0 else 1.0
    ax.set_ylim(0.0, HIST_HEADROOM * top)
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
