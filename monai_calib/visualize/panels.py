# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Several reliability diagrams side by side (methods of a comparison, labels of a report)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._common import new_figure
from .reliability import (
    HIST_HEADROOM,
    legend_above,
    legend_title_pad,
    plot_reliability_diagram,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_reliability_panels"]

_ONE_ROW_LEGEND_WIDTH = 7.0  # inches of panels a one-row legend needs


def plot_reliability_panels(
    panels: Mapping[str, Any] | Sequence[tuple[str, Any]],
    *,
    ncols: int | None = None,
    show_histogram: bool = True,
    panel_size: tuple[float, float] | None = None,
    title: str | None = None,
) -> tuple[Figure, list[Axes | tuple[Axes, Axes]]]:
    """A grid of reliability diagrams, one titled panel per source, filled row by row.

    Each panel is :func:`~monai_calib.visualize.plot_reliability_diagram` of its source (the
    ECE in its box is that panel's own); titles and the legend, drawn above the first panel
    only (it is the same for all), sit above the axes, where no bar can reach them. With
    ``show_histogram`` every panel keeps its confidence histogram underneath and its axis labels
    (a comparison of methods); the histograms share one y scale, so the bin populations of the
    methods compare at a glance. Without, the panels are compact (many labels of one report):
    the y label is kept on the first column only and the figure uses a tight layout.

    Args:
        panels: ``{title: source}`` or a sequence of ``(title, source)`` pairs; a source is
            anything :func:`~monai_calib.visualize.reliability_statistics` accepts without
            labels (statistics ``(C, M, 3)``, pooled when ``C > 1``, or a metric).
        ncols: panels per row; defaults to all panels in one row (at most the number of panels).
        show_histogram: draw each panel's confidence histogram. Defaults to True.
        panel_size: ``(width, height)`` of one panel in inches; defaults to ``(4, 5.5)`` with
            histograms and ``(3.2, 3.2)`` without.
        title: figure title above all panels.

    Returns:
        ``(fig, axes)``: a pyplot-free figure and, per panel, what
        :func:`~monai_calib.visualize.plot_reliability_diagram` returned as axes.

    Raises:
        ValueError: no panels, or ``ncols < 1``.
        TypeError / ValueError: a bad source (see :func:`plot_reliability_diagram`).
    """
    items = list(panels.items()) if isinstance(panels, Mapping) else list(panels)
    if not items:
        raise ValueError("panels is empty; pass at least one (title, source) pair.")
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"ncols must be an int >= 1, got {ncols!r}.")
    ncols = min(ncols or len(items), len(items))
    nrows = math.ceil(len(items) / ncols)
    width, height = panel_size or ((4.0, 5.5) if show_histogram else (3.2, 3.2))
    axes: list[Axes | tuple[Axes, Axes]] = []
    if show_histogram:
        # Constrained layout makes room for each panel's title and the legend above the first.
        fig = new_figure((width * ncols, height * nrows))
        outer = fig.add_gridspec(nrows, 1)
        rows = [outer[r].subgridspec(2, ncols, height_ratios=(3, 1)) for r in range(nrows)]
        first_hist: Axes | None = None
        for i, (name, source) in enumerate(items):
            r, c = divmod(i, ncols)
            ax_top = fig.add_subplot(rows[r][0, c])
            # One y scale for every histogram, so bin populations compare across methods.
            ax_bottom = fig.add_subplot(rows[r][1, c], sharex=ax_top, sharey=first_hist)
            first_hist = first_hist or ax_bottom
            plot_reliability_diagram(source, ax=(ax_top, ax_bottom), title=str(name))
            axes.append((ax_top, ax_bottom))
        # The shared limit must fit the tallest bar of all, with the histogram's headroom.
        top = max(bar.get_height() for pair in axes for bar in pair[1].containers[0])
        axes[0][1].set_ylim(0.0, HIST_HEADROOM * top if top > 0 else 1.0)
    else:
        fig = new_figure((width * ncols, height * nrows), layout=None)
        for i, (name, source) in enumerate(items):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            plot_reliability_diagram(source, ax=ax, title=str(name))
            if i % ncols:
                ax.set_ylabel("")
            axes.append(ax)
    # The legend is the same for every panel: the first one's only, in one row above the first
    # panels when the grid is wide enough for it, and every title padded alike (aligned).
    rows = 1 if width * ncols >= _ONE_ROW_LEGEND_WIDTH else 2
    for i, pair in enumerate(axes):
        ax_rel = pair[0] if isinstance(pair, tuple) else pair
        if i == 0:
            legend_above(ax_rel, rows=rows)
        else:
            ax_rel.get_legend().remove()
            ax_rel.set_title(ax_rel.get_title(), pad=legend_title_pad(rows))
    if title:
        fig.suptitle(title)
    if not show_histogram:
        fig.tight_layout()
    return fig, axes
