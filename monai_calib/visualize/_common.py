# Copyright (c) monai_calib developers
# Licensed under the Apache License, Version 2.0 (the "License").
"""Figure helpers shared by the plots (private).

Plots draw on :class:`matplotlib.figure.Figure` objects created directly (never through
``pyplot``), so they do not select, change or depend on the user's matplotlib backend and leave no
figure registered in pyplot's global state. ``fig.savefig(path)`` works on them as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["check_axes", "figure_and_axes", "figure_of", "new_figure", "to_numpy"]


def new_figure(
    figsize: tuple[float, float], dpi: float = 100.0, layout: str | None = "constrained"
) -> Figure:
    """A pyplot-free figure (matplotlib is imported lazily)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi, layout=layout)


def figure_of(ax: Axes) -> Figure:
    """The figure an existing Axes belongs to (its root figure for sub-figures)."""
    fig: Any = ax.figure
    while hasattr(fig, "figure") and fig.figure is not fig and fig.figure is not None:
        fig = fig.figure
    return fig


def check_axes(ax: Any, name: str = "ax") -> None:
    """Raise ``TypeError`` unless ``ax`` is a matplotlib Axes."""
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"{name} must be a matplotlib Axes, got {type(ax).__name__}.")


def figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``(figure, ax)`` for a checked existing Axes, or a new pyplot-free figure with one Axes."""
    if ax is None:
        fig = new_figure(figsize)
        return fig, fig.add_subplot()
    check_axes(ax)
    return figure_of(ax), ax


def to_numpy(x: Any, name: str) -> np.ndarray:
    """float64 numpy copy of a tensor / array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{name} must be a tensor or array of numbers, got {type(x).__name__}."
        ) from e
